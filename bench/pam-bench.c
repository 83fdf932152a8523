/* pam-bench: pam_start + pam_authenticate + pam_end in a loop, timing each
   call, to compare PAM stacks on one machine in one run.

   pam-bench -s SERVICE -u USER -p PASSWORD -n COUNT [-r RHOST]
   prints one CSV line:
   n,ok,auth_err,other,total_s,calls_per_s,p50_ms,p90_ms,p99_ms,max_ms */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <security/pam_appl.h>

static const char *password;

/* Answers every hidden prompt with the password, shows nothing. */
static int conv_fn(int num_msg, const struct pam_message **msg,
		   struct pam_response **resp, void *appdata)
{
	struct pam_response *r;
	int i;

	(void)appdata;
	if (num_msg <= 0 || num_msg > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	r = calloc((size_t)num_msg, sizeof(*r));
	if (r == NULL)
		return PAM_BUF_ERR;
	for (i = 0; i < num_msg; i++) {
		if (msg[i]->msg_style == PAM_PROMPT_ECHO_OFF ||
		    msg[i]->msg_style == PAM_PROMPT_ECHO_ON) {
			r[i].resp = strdup(password);
			if (r[i].resp == NULL) {
				while (i-- > 0)
					free(r[i].resp);
				free(r);
				return PAM_BUF_ERR;
			}
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* nearest rank, p in 0..100 */
static double pct(const double *sorted, long n, double p)
{
	long k = (long)(p / 100.0 * (double)n + 0.999999) - 1;

	if (k < 0)
		k = 0;
	if (k >= n)
		k = n - 1;
	return sorted[k];
}

static void usage(void)
{
	fprintf(stderr, "usage: pam-bench -s SERVICE -u USER -p PASSWORD -n COUNT [-r RHOST]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *service = NULL, *user = NULL, *rhost = NULL;
	long n = 0, i, ok = 0, auth_err = 0, other = 0;
	struct pam_conv conv = { conv_fn, NULL };
	double *lat, t_start, total;
	char *end;
	int c;

	while ((c = getopt(argc, argv, "s:u:p:n:r:")) != -1) {
		switch (c) {
		case 's': service = optarg; break;
		case 'u': user = optarg; break;
		case 'p': password = optarg; break;
		case 'r': rhost = optarg; break;
		case 'n':
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || n <= 0 || n > 10000000) {
				fprintf(stderr, "pam-bench: -n wants a count from 1 to 10000000, not '%s'\n",
					optarg);
				return 2;
			}
			break;
		default:
			usage();
		}
	}
	if (service == NULL || user == NULL || password == NULL || n == 0 || optind != argc)
		usage();
	lat = calloc((size_t)n, sizeof(*lat));
	if (lat == NULL) {
		fprintf(stderr, "pam-bench: out of memory\n");
		return 1;
	}
	t_start = now_s();
	for (i = 0; i < n; i++) {
		pam_handle_t *pamh = NULL;
		double t0 = now_s();
		int rc = pam_start(service, user, &conv, &pamh);

		if (rc != PAM_SUCCESS) {
			fprintf(stderr, "pam-bench: pam_start(%s): %s\n", service,
				pam_strerror(pamh, rc));
			return 1;
		}
		if (rhost != NULL)
			(void)pam_set_item(pamh, PAM_RHOST, rhost);
		rc = pam_authenticate(pamh, PAM_SILENT);
		if (rc == PAM_SUCCESS)
			ok++;
		else if (rc == PAM_AUTH_ERR || rc == PAM_MAXTRIES)
			auth_err++;
		else
			other++;
		pam_end(pamh, rc);
		lat[i] = now_s() - t0;
	}
	total = now_s() - t_start;
	qsort(lat, (size_t)n, sizeof(*lat), cmp_double);
	printf("%ld,%ld,%ld,%ld,%.3f,%.1f,%.3f,%.3f,%.3f,%.3f\n", n, ok, auth_err,
	       other, total, (double)n / total, pct(lat, n, 50) * 1e3,
	       pct(lat, n, 90) * 1e3, pct(lat, n, 99) * 1e3, lat[n - 1] * 1e3);
	free(lat);
	return 0;
}
