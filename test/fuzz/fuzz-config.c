/* Feeds bytes to ab-config.c as a config file (ab_config_load) and as PAM "key=value" arguments (ab_config_set), then ab_config_validate. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ab-config.h"
#include "fuzz-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char conf_path[64];


/* The "file" is a memfd, opened by ab_config_load through /proc: no disk
   in the loop and nothing left behind. */
static void write_conf(const uint8_t *data, size_t size)
{
	static int fd = -1;

	if (fd < 0) {
		fd = memfd_create("fuzz-config", 0);
		CHECK(fd >= 0);
		snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", fd);
	}
	CHECK(ftruncate(fd, 0) == 0);
	CHECK(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size);
}

/* Every value in effect prints as the config file would write it, and
   that text is accepted back for the same key. */
static void check_values(const struct ab_config *cfg)
{
	struct ab_config copy;
	const char *error;
	/* room for the longest list a 4 KB line can hold, printed */
	static char buf[1 << 17], again[1 << 17];
	char name[64];
	size_t i;

	ab_config_defaults(&copy);
	for (i = 0; i < ab_config_key_count(cfg); i++) {
		const char *key = ab_config_key_name(cfg, i, name, sizeof(name));
		const char *value = ab_config_value_str(cfg, i, buf, sizeof(buf));

		CHECK(key != NULL && value != NULL);
		if (ab_config_set(&copy, key, value, "round trip", &error) != 0) {
			fprintf(stderr, "%s = '%s' does not parse back: %s\n",
				key, value, error);
			abort();
		}
		CHECK(strcmp(ab_config_value_str(&copy, i, again, sizeof(again)),
			     value) == 0);
	}
	ab_config_free(&copy);
}

/* A bare number accepted for a key is the value in effect, in the key's
   unit: a count, seconds, or (familiar_days) days. */
static void check_bare_number(const struct ab_config *cfg, const char *key,
			      const char *value)
{
	unsigned long long n, ms;
	const char *printed, *error;
	char buf[64], name[64];
	size_t i, len = strlen(value);

	if (len == 0 || len > 18 || strspn(value, "0123456789") != len)
		return;
	n = strtoull(value, NULL, 10);
	for (i = 0; i < ab_config_key_count(cfg); i++) {
		if (strcmp(ab_config_key_name(cfg, i, name, sizeof(name)), key) == 0)
			break;
	}
	CHECK(i < ab_config_key_count(cfg));
	printed = ab_config_value_str(cfg, i, buf, sizeof(buf));
	if (strtoull(printed, NULL, 10) == n &&
	    strspn(printed, "0123456789") == strlen(printed))
		return;
	CHECK(ab_duration_parse_ms(printed, &ms, &error) == 0);
	if (ms == n * 1000ULL || (n <= 1000000 && ms == n * 86400000ULL))
		return;
	fprintf(stderr, "%s = %s is in effect as %s\n", key, value, printed);
	abort();
}

/* As pam_authbrake.c's args_parse(): "key=value", the key before the
   first '=', shorter than 64 bytes. */
static void set_args(struct ab_config *cfg, const char *args, size_t len)
{
	const char *p = args, *end = args + len, *error;

	while (p < end) {
		size_t arg_len = strnlen(p, (size_t)(end - p));
		const char *nl = memchr(p, '\n', arg_len);
		const char *eq;
		char arg[1024], key[64];

		if (nl != NULL)
			arg_len = (size_t)(nl - p);
		if (arg_len < sizeof(arg)) {
			memcpy(arg, p, arg_len);
			arg[arg_len] = '\0';
			eq = strchr(arg, '=');
			if (eq != NULL && eq != arg &&
			    (size_t)(eq - arg) < sizeof(key)) {
				memcpy(key, arg, (size_t)(eq - arg));
				key[eq - arg] = '\0';
				if (ab_config_set(cfg, key, eq + 1,
						  "module argument",
						  &error) == 0)
					check_bare_number(cfg, key, eq + 1);
			}
		}
		p += arg_len + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ab_config cfg;
	const char *error;

	ab_config_defaults(&cfg);
	write_conf(data, size);
	if (ab_config_load(&cfg, conf_path, &error) == 0 &&
	    ab_config_validate(&cfg, &error) == 0)
		check_values(&cfg);
	else
		CHECK(error != NULL && error[0] != '\0');
	ab_config_free(&cfg);

	ab_config_defaults(&cfg);
	set_args(&cfg, (const char *)data, size);
	if (ab_config_validate(&cfg, &error) == 0)
		check_values(&cfg);
	ab_config_free(&cfg);
	return 0;
}
