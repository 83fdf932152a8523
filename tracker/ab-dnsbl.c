/* DNS blocklist lookups over UDP: see ab-dnsbl.h. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "ab-config.h"
#include "ab-dnsbl.h"
#include "ab-error.h"

#define DNS_HEADER_LEN 12
#define DNS_NAME_MAX 255
#define DNS_TYPE_A 1
#define DNS_TYPE_SOA 6
#define DNS_CLASS_IN 1
#define DNS_FLAG_QR 0x8000
#define DNS_FLAG_TC 0x0200
#define DNS_FLAG_RD 0x0100
#define DNS_RCODE_NXDOMAIN 3
/* a query: the header, the name (at most 255), type and class */
#define DNS_QUERY_MAX (DNS_HEADER_LEN + DNS_NAME_MAX + 4)
/* the largest answer read: more than a blocklist ever sends over UDP */
#define DNS_ANSWER_MAX 1500

struct ab_dnsbl {
	char zones[AB_DNSBL_ZONES_MAX][AB_DNSBL_ZONE_MAX + 1];
	unsigned int zone_count;
	struct sockaddr_storage resolver;
	socklen_t resolver_len;
	char resolver_str[AB_HOST_MAX + 16];
	unsigned int timeout_ms;
	char signature[AB_DNSBL_ZONES_MAX * (AB_DNSBL_ZONE_MAX + 1) + 100];
};

struct zone_query {
	uint16_t id;
	bool answered;
	char name[DNS_NAME_MAX + 1];
	struct ab_dnsbl_result result;
};

struct ab_dnsbl_lookup {
	struct ab_dnsbl *dnsbl;
	int fd;
	unsigned int pending;
	struct zone_query query[AB_DNSBL_ZONES_MAX];
};

/* --- the wire format ------------------------------------------------- */

static bool zone_name_ok(const char *zone)
{
	size_t len = strlen(zone), label = 0, i;

	if (len == 0 || len > AB_DNSBL_ZONE_MAX || zone[0] == '.' ||
	    zone[len - 1] == '.')
		return false;
	for (i = 0; i < len; i++) {
		char c = zone[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '-' || c == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

int ab_dnsbl_query_name(const char *zone, const struct ab_addr *addr,
			char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = 0;
	int i, ret;

	if (addr->family == AF_INET) {
		ret = snprintf(buf, size, "%u.%u.%u.%u.%s", addr->bytes[3],
			       addr->bytes[2], addr->bytes[1], addr->bytes[0],
			       zone);
		return ret < 0 || (size_t)ret >= size ? -1 : 0;
	}
	if (size < 64 + strlen(zone) + 1)
		return -1;
	for (i = 15; i >= 0; i--) {
		buf[len++] = hex[addr->bytes[i] & 0x0f];
		buf[len++] = '.';
		buf[len++] = hex[addr->bytes[i] >> 4];
		buf[len++] = '.';
	}
	memcpy(buf + len, zone, strlen(zone) + 1);
	return 0;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
		((uint32_t)p[2] << 8) | p[3];
}

int ab_dnsbl_query_build(const char *name, uint16_t id, uint8_t *buf,
			 size_t size)
{
	size_t pos = DNS_HEADER_LEN, name_len = strlen(name);
	const char *label = name;

	if (name_len == 0 || name_len > DNS_NAME_MAX - 2 ||
	    size < DNS_HEADER_LEN + name_len + 2 + 4)
		return -1;
	memset(buf, 0, DNS_HEADER_LEN);
	put16(buf, id);
	put16(buf + 2, DNS_FLAG_RD);
	put16(buf + 4, 1);		/* one question */
	while (*label != '\0') {
		const char *dot = strchr(label, '.');
		size_t len = dot != NULL ? (size_t)(dot - label) : strlen(label);

		if (len == 0 || len > 63)
			return -1;
		buf[pos++] = (uint8_t)len;
		memcpy(buf + pos, label, len);
		pos += len;
		label += len + (dot != NULL ? 1 : 0);
	}
	buf[pos++] = 0;
	put16(buf + pos, DNS_TYPE_A);
	put16(buf + pos + 2, DNS_CLASS_IN);
	return (int)(pos + 4);
}

/* Skip a (possibly compressed) name at *pos; false when it runs past the
   datagram. */
static bool skip_name(const uint8_t *buf, size_t len, size_t *pos)
{
	size_t p = *pos;

	while (p < len) {
		uint8_t n = buf[p];

		if (n == 0) {
			*pos = p + 1;
			return true;
		}
		if ((n & 0xc0) == 0xc0) {
			if (p + 2 > len)
				return false;
			*pos = p + 2;
			return true;
		}
		if ((n & 0xc0) != 0)
			return false;	/* reserved label types */
		p += 1 + n;
	}
	return false;
}

/* Does the question at *pos ask exactly name's A record (case aside)?
   Moves *pos past it. An answer is taken only for our own question. */
static bool question_matches(const uint8_t *buf, size_t len, size_t *pos,
			     const char *name)
{
	size_t p = *pos;
	const char *label = name;

	for (;;) {
		size_t n, i;

		if (p >= len)
			return false;
		n = buf[p++];
		if (n == 0)
			break;
		if (n > 63 || p + n > len)
			return false;
		for (i = 0; i < n; i++) {
			char a = (char)buf[p + i], b = label[i];

			if (b == '\0' || b == '.')
				return false;
			if (a >= 'A' && a <= 'Z')
				a = (char)(a - 'A' + 'a');
			if (b >= 'A' && b <= 'Z')
				b = (char)(b - 'A' + 'a');
			if (a != b)
				return false;
		}
		p += n;
		label += n;
		if (*label == '.')
			label++;
		else if (*label != '\0')
			return false;
	}
	if (*label != '\0' || p + 4 > len ||
	    get16(buf + p) != DNS_TYPE_A || get16(buf + p + 2) != DNS_CLASS_IN)
		return false;
	*pos = p + 4;
	return true;
}

static const char *rcode_name(unsigned int rcode)
{
	static const char *const names[] = {
		"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP",
		"REFUSED",
	};

	return rcode < sizeof(names) / sizeof(names[0]) ? names[rcode] : NULL;
}

static void result_error(struct ab_dnsbl_result *result, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void result_error(struct ab_dnsbl_result *result, const char *fmt, ...)
{
	va_list args;

	memset(result, 0, sizeof(*result));
	result->status = AB_DNSBL_ERROR;
	result->ttl_s = AB_DNSBL_ERROR_TTL;
	va_start(args, fmt);
	vsnprintf(result->error, sizeof(result->error), fmt, args);
	va_end(args);
}

static unsigned int ttl_clamp(uint32_t ttl)
{
	/* memcached keeps a TTL of 0 for ever */
	if (ttl == 0)
		return 1;
	return ttl > AB_DNSBL_MAX_TTL ? AB_DNSBL_MAX_TTL : ttl;
}

bool ab_dnsbl_answer_parse(const uint8_t *buf, size_t len, uint16_t id,
			   const char *name, struct ab_dnsbl_result *result_r)
{
	unsigned int flags, rcode, qdcount, ancount, nscount, i;
	uint32_t ttl = UINT32_MAX, neg_ttl = UINT32_MAX;
	bool listed = false, refused_code = false;
	uint8_t code[4] = { 0 };
	size_t pos = DNS_HEADER_LEN;
	char codebuf[20];

	if (len < DNS_HEADER_LEN || get16(buf) != id)
		return false;
	flags = get16(buf + 2);
	qdcount = get16(buf + 4);
	ancount = get16(buf + 6);
	nscount = get16(buf + 8);
	if ((flags & DNS_FLAG_QR) == 0 || ((flags >> 11) & 0xf) != 0 ||
	    qdcount != 1 || !question_matches(buf, len, &pos, name))
		return false;

	rcode = flags & 0xf;
	if ((flags & DNS_FLAG_TC) != 0) {
		result_error(result_r, "%s", "truncated answer");
		return true;
	}
	if (rcode != 0 && rcode != DNS_RCODE_NXDOMAIN) {
		char num[16];
		const char *rname = rcode_name(rcode);

		if (rname == NULL) {
			snprintf(num, sizeof(num), "rcode %u", rcode);
			rname = num;
		}
		result_error(result_r, "%s", rname);
		return true;
	}

	for (i = 0; i < ancount + nscount; i++) {
		unsigned int type, class, rdlen;
		uint32_t rttl;

		if (!skip_name(buf, len, &pos) || pos + 10 > len)
			goto malformed;
		type = get16(buf + pos);
		class = get16(buf + pos + 2);
		rttl = get32(buf + pos + 4);
		rdlen = get16(buf + pos + 8);
		pos += 10;
		if (pos + rdlen > len)
			goto malformed;
		if (i < ancount && rcode == 0 && type == DNS_TYPE_A &&
		    class == DNS_CLASS_IN) {
			if (rdlen != 4)
				goto malformed;
			/* RFC 5782: a listing is an address in 127/8; some
			   lists answer 127.255.255.x for a query they refuse
			   (e.g. one through a public resolver) */
			if (buf[pos] == 127 && buf[pos + 1] == 255 &&
			    buf[pos + 2] == 255) {
				refused_code = true;
				memcpy(code, buf + pos, 4);
			} else if (buf[pos] == 127) {
				if (!listed || rttl < ttl)
					memcpy(code, buf + pos, 4);
				listed = true;
				if (rttl < ttl)
					ttl = rttl;
			}
		} else if (i >= ancount && type == DNS_TYPE_SOA) {
			/* RFC 2308: a negative answer lives for the smaller
			   of the SOA's TTL and its MINIMUM */
			size_t p = pos;

			if (skip_name(buf, pos + rdlen, &p) &&
			    skip_name(buf, pos + rdlen, &p) &&
			    p + 20 == pos + rdlen) {
				uint32_t minimum = get32(buf + p + 16);

				neg_ttl = rttl < minimum ? rttl : minimum;
			}
		}
		pos += rdlen;
	}

	memset(result_r, 0, sizeof(*result_r));
	if (listed) {
		result_r->status = AB_DNSBL_LISTED;
		memcpy(result_r->answer, code, 4);
		result_r->ttl_s = ttl_clamp(ttl);
	} else if (refused_code) {
		snprintf(codebuf, sizeof(codebuf), "%u.%u.%u.%u",
			 code[0], code[1], code[2], code[3]);
		result_error(result_r, "the list refused the query (answer %s)",
			     codebuf);
	} else {
		result_r->status = AB_DNSBL_NOT_LISTED;
		result_r->ttl_s = neg_ttl != UINT32_MAX ? ttl_clamp(neg_ttl) :
			AB_DNSBL_DEFAULT_TTL;
	}
	return true;
malformed:
	result_error(result_r, "%s", "malformed answer");
	return true;
}

/* --- the resolver and the zones ----------------------------------------- */

/* "192.0.2.1", "192.0.2.1:5353", "2001:db8::1", "[2001:db8::1]:5353" */
static int resolver_parse(const char *str, struct ab_dnsbl *dnsbl,
			  const char **error_r)
{
	char host[AB_HOST_MAX], port[8];
	unsigned int port_num;
	struct addrinfo hints, *ai;
	const char *error;
	int ret;

	if (ab_host_port_parse(str, 53, host, &port_num, &error) < 0)
		return ab_error(error_r, "dnsbl_resolver: %s", error);
	snprintf(port, sizeof(port), "%u", port_num);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if ((ret = getaddrinfo(host, port, &hints, &ai)) != 0)
		return ab_error(error_r, "dnsbl_resolver: '%s' is not an address: %s",
				host, gai_strerror(ret));
	memcpy(&dnsbl->resolver, ai->ai_addr, ai->ai_addrlen);
	dnsbl->resolver_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	snprintf(dnsbl->resolver_str, sizeof(dnsbl->resolver_str), "%s%s%s%s%s",
		 strchr(host, ':') != NULL ? "[" : "", host,
		 strchr(host, ':') != NULL ? "]" : "", ":", port);
	return 0;
}

/* The first nameserver of /etc/resolv.conf: what the host resolves with. */
static int resolver_from_resolv_conf(struct ab_dnsbl *dnsbl,
				     const char **error_r)
{
	static const char path[] = "/etc/resolv.conf";
	FILE *f = fopen(path, "r");
	char line[512], addr[64];

	if (f == NULL)
		return ab_error(error_r, "dnsbl is set but dnsbl_resolver is not, and %s cannot be read: %s",
				path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, " nameserver %63s", addr) == 1) {
			fclose(f);
			return resolver_parse(addr, dnsbl, error_r);
		}
	}
	fclose(f);
	return ab_error(error_r, "dnsbl is set but dnsbl_resolver is not, and %s names no nameserver",
			path);
}

int ab_dnsbl_zones_check(const char *zones, const char **error_r)
{
	char copy[AB_DNSBL_ZONES_MAX * (AB_DNSBL_ZONE_MAX + 2) + 1];
	char *zone, *save = NULL;
	unsigned int count = 0;

	if (strlen(zones) >= sizeof(copy))
		return ab_error(error_r, "dnsbl: the list is too long (at most %d zones)",
				AB_DNSBL_ZONES_MAX);
	strcpy(copy, zones);
	for (zone = strtok_r(copy, ", \t", &save); zone != NULL;
	     zone = strtok_r(NULL, ", \t", &save)) {
		if (!zone_name_ok(zone))
			return ab_error(error_r, "dnsbl: '%.80s' is not a DNS zone name (labels of letters, digits and -, at most %d characters)",
					zone, AB_DNSBL_ZONE_MAX);
		if (++count > AB_DNSBL_ZONES_MAX)
			return ab_error(error_r, "dnsbl: more than %d zones",
					AB_DNSBL_ZONES_MAX);
	}
	return 0;
}

int ab_dnsbl_init(const struct ab_config *cfg, struct ab_dnsbl **dnsbl_r,
		  const char **error_r)
{
	struct ab_dnsbl *dnsbl;
	char copy[sizeof(dnsbl->zones)], *zone, *save = NULL;
	size_t len;
	unsigned int i;
	int ret;

	*dnsbl_r = NULL;
	if (cfg->dnsbl == NULL || strspn(cfg->dnsbl, ", \t") == strlen(cfg->dnsbl))
		return 0;
	if (ab_dnsbl_zones_check(cfg->dnsbl, error_r) < 0)
		return -1;
	if ((dnsbl = calloc(1, sizeof(*dnsbl))) == NULL)
		return ab_error(error_r, "out of memory");
	snprintf(copy, sizeof(copy), "%s", cfg->dnsbl);
	for (zone = strtok_r(copy, ", \t", &save); zone != NULL;
	     zone = strtok_r(NULL, ", \t", &save))
		snprintf(dnsbl->zones[dnsbl->zone_count++], AB_DNSBL_ZONE_MAX + 1,
			 "%s", zone);
	ret = cfg->dnsbl_resolver != NULL && cfg->dnsbl_resolver[0] != '\0' ?
		resolver_parse(cfg->dnsbl_resolver, dnsbl, error_r) :
		resolver_from_resolv_conf(dnsbl, error_r);
	if (ret < 0) {
		free(dnsbl);
		return -1;
	}
	dnsbl->timeout_ms = cfg->dnsbl_timeout_ms;
	len = (size_t)snprintf(dnsbl->signature, sizeof(dnsbl->signature), "%s",
			       dnsbl->resolver_str);
	for (i = 0; i < dnsbl->zone_count && len < sizeof(dnsbl->signature); i++)
		len += (size_t)snprintf(dnsbl->signature + len,
					sizeof(dnsbl->signature) - len, " %s",
					dnsbl->zones[i]);
	*dnsbl_r = dnsbl;
	return 0;
}

void ab_dnsbl_deinit(struct ab_dnsbl **dnsbl)
{
	free(*dnsbl);
	*dnsbl = NULL;
}

const char *ab_dnsbl_zone(const struct ab_dnsbl *dnsbl, unsigned int i)
{
	return i < dnsbl->zone_count ? dnsbl->zones[i] : "?";
}

const char *ab_dnsbl_signature(const struct ab_dnsbl *dnsbl)
{
	return dnsbl->signature;
}

/* --- a lookup ----------------------------------------------------------- */

int ab_dnsbl_lookup_start(struct ab_dnsbl *dnsbl, const struct ab_addr *addr,
			  struct ab_dnsbl_lookup **lookup_r,
			  const char **error_r)
{
	struct ab_dnsbl_lookup *lookup;
	uint8_t packet[DNS_QUERY_MAX];
	unsigned int i;
	int len;

	if ((lookup = calloc(1, sizeof(*lookup))) == NULL)
		return ab_error(error_r, "out of memory");
	lookup->dnsbl = dnsbl;
	/* a socket of its own: the kernel picks a random port, and
	   connect() drops datagrams from anyone but the resolver */
	lookup->fd = socket(dnsbl->resolver.ss_family,
			    SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lookup->fd < 0 ||
	    connect(lookup->fd, (const struct sockaddr *)&dnsbl->resolver,
		    dnsbl->resolver_len) < 0) {
		int err = errno;

		if (lookup->fd >= 0)
			close(lookup->fd);
		free(lookup);
		return ab_error(error_r, "dnsbl: cannot reach the resolver %s: %s",
				dnsbl->resolver_str, strerror(err));
	}
	for (i = 0; i < dnsbl->zone_count; i++) {
		struct zone_query *q = &lookup->query[i];

		q->id = (uint16_t)randombytes_uniform(65536);
		if (ab_dnsbl_query_name(dnsbl->zones[i], addr, q->name,
					sizeof(q->name)) < 0 ||
		    (len = ab_dnsbl_query_build(q->name, q->id, packet,
						sizeof(packet))) < 0) {
			/* cannot happen: zone names are checked at init */
			result_error(&q->result, "%s", "name too long");
			q->answered = true;
			continue;
		}
		if (send(lookup->fd, packet, (size_t)len, 0) < 0) {
			result_error(&q->result, "cannot send the query: %s",
				     strerror(errno));
			q->answered = true;
			continue;
		}
		lookup->pending++;
	}
	*lookup_r = lookup;
	return 0;
}

int ab_dnsbl_lookup_fd(const struct ab_dnsbl_lookup *lookup)
{
	return lookup->fd;
}

static bool lookup_done(const struct ab_dnsbl_lookup *lookup)
{
	unsigned int i;

	if (lookup->pending == 0)
		return true;
	for (i = 0; i < lookup->dnsbl->zone_count; i++) {
		if (lookup->query[i].answered &&
		    lookup->query[i].result.status == AB_DNSBL_LISTED)
			return true;
	}
	return false;
}

bool ab_dnsbl_lookup_input(struct ab_dnsbl_lookup *lookup)
{
	uint8_t buf[DNS_ANSWER_MAX];
	ssize_t ret = 0;
	unsigned int i;

	while (lookup->pending > 0 &&
	       (ret = recv(lookup->fd, buf, sizeof(buf), 0)) >= 0) {
		for (i = 0; i < lookup->dnsbl->zone_count; i++) {
			struct zone_query *q = &lookup->query[i];

			if (!q->answered &&
			    ab_dnsbl_answer_parse(buf, (size_t)ret, q->id,
						  q->name, &q->result)) {
				q->answered = true;
				lookup->pending--;
				break;
			}
		}
	}
	/* ECONNREFUSED: nothing listens at the resolver's port (an ICMP
	   error came back); the zones still pending fail now */
	if (lookup->pending > 0 && ret < 0 && errno == ECONNREFUSED) {
		for (i = 0; i < lookup->dnsbl->zone_count; i++) {
			struct zone_query *q = &lookup->query[i];

			if (!q->answered) {
				result_error(&q->result, "%s",
					     "the resolver refused the connection");
				q->answered = true;
			}
		}
		lookup->pending = 0;
	}
	return lookup_done(lookup);
}

void ab_dnsbl_lookup_finish(struct ab_dnsbl_lookup **_lookup,
			    struct ab_dnsbl_result *result_r)
{
	struct ab_dnsbl_lookup *lookup = *_lookup;
	unsigned int i, ttl = AB_DNSBL_MAX_TTL;
	size_t len = 0;
	bool failed = false;

	*_lookup = NULL;
	memset(result_r, 0, sizeof(*result_r));
	for (i = 0; i < lookup->dnsbl->zone_count; i++) {
		struct zone_query *q = &lookup->query[i];

		if (q->answered && q->result.status == AB_DNSBL_LISTED) {
			*result_r = q->result;
			result_r->zone = i;
			goto out;
		}
	}
	for (i = 0; i < lookup->dnsbl->zone_count; i++) {
		struct zone_query *q = &lookup->query[i];
		char timeout[AB_HOST_MAX + 64];
		const char *error = q->result.error;

		if (q->answered && q->result.status == AB_DNSBL_NOT_LISTED) {
			if (q->result.ttl_s < ttl)
				ttl = q->result.ttl_s;
			continue;
		}
		if (!q->answered) {
			snprintf(timeout, sizeof(timeout),
				 "no answer from %s in %u ms",
				 lookup->dnsbl->resolver_str,
				 lookup->dnsbl->timeout_ms);
			error = timeout;
		}
		failed = true;
		if (len < sizeof(result_r->error))
			len += (size_t)snprintf(result_r->error + len,
						sizeof(result_r->error) - len,
						"%s%s: %s", len > 0 ? "; " : "",
						lookup->dnsbl->zones[i], error);
	}
	result_r->status = failed ? AB_DNSBL_ERROR : AB_DNSBL_NOT_LISTED;
	result_r->ttl_s = failed ? AB_DNSBL_ERROR_TTL : ttl;
out:
	close(lookup->fd);
	free(lookup);
}

void ab_dnsbl_result_failed(struct ab_dnsbl_result *result_r,
			    const char *error)
{
	result_error(result_r, "%s", error);
}

static long long monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ab_dnsbl_lookup_wait(struct ab_dnsbl *dnsbl, const struct ab_addr *addr,
			  struct ab_dnsbl_result *result_r)
{
	struct ab_dnsbl_lookup *lookup;
	long long deadline = monotonic_ms() + dnsbl->timeout_ms, left;
	const char *error;

	if (ab_dnsbl_lookup_start(dnsbl, addr, &lookup, &error) < 0) {
		ab_dnsbl_result_failed(result_r, error);
		return;
	}
	while (!ab_dnsbl_lookup_input(lookup) &&
	       (left = deadline - monotonic_ms()) > 0) {
		struct pollfd pfd = { .fd = lookup->fd, .events = POLLIN };

		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			break;
	}
	ab_dnsbl_lookup_finish(&lookup, result_r);
}
