/* The memcached store. A batch of requests is pipelined in memcached's
   binary protocol: each server gets its requests in one write, ended by a
   NOOP, and answers them in order; gets are quiet (a miss sends nothing),
   so the NOOP's answer closes the batch. Every batch is bounded by
   poll_timeout from the moment it is sent, all servers at once.

   Keys go to servers by rendezvous hashing over the servers in the pool,
   so each key has one home on every node whatever order the servers are
   listed in, and a server taken out moves only its own keys. A server
   that refuses connections server_failure_limit times in a row is taken
   out for dead_timeout. A hung server (SIGSTOP, a full kernel queue) is
   not taken out, since its keys would move and come back: a breaker of
   our own skips it after breaker_failures failed round trips in a row for
   breaker_cooldown, then tries it again. No client library: the PAM
   module, loaded anew by every login's process, pulls in nothing beyond
   libsodium and the C library. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ab-config.h"
#include "ab-error.h"
#include "ab-observer.h"
#include "ab-store.h"

#define AB_STORE_MAX_SERVERS 64
#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define KEY_MAX 250
/* header, INCR's extras, key, a decimal value */
#define REQUEST_MAX (24 + 20 + KEY_MAX + 24)
#define OUT_MAX ((AB_STORE_BATCH_MAX + 1) * REQUEST_MAX)
#define IN_MAX (256 * 1024)
/* Buffers start small and grow to what a batch needs: the PAM module
   sets a store up for every login, and large buffers come from mmap(),
   whose munmap() costs every CPU a TLB flush. */
#define IN_MIN 4096

/* binary protocol */
enum {
	OP_GET = 0x00, OP_SET = 0x01, OP_ADD = 0x02, OP_DELETE = 0x04,
	OP_INCR = 0x05, OP_DECR = 0x06, OP_GETQ = 0x09, OP_NOOP = 0x0a,
	OP_STAT = 0x10, OP_SETQ = 0x11, OP_ADDQ = 0x12, OP_DELETEQ = 0x14,
	OP_INCRQ = 0x15, OP_DECRQ = 0x16,
};
enum {
	ST_OK = 0x0000, ST_NOT_FOUND = 0x0001, ST_EXISTS = 0x0002,
	ST_NOT_STORED = 0x0005,
};
/* The opaque of a request: the batch in the high half, the request in
   the low half. Quiet requests posted without a batch carry batch 0; what
   they answer (only errors) is skipped. */
#define OPAQUE(batch, i) (((uint32_t)(batch) << 16) | (uint32_t)(i))
#define NOOP_INDEX 0xffffU
/* the opaque of a STAT request: no batch is numbered 0xffff... */
#define STAT_OPAQUE 0xfffffff0U
#define DEFAULT_PORT 11211

struct breaker {
	unsigned int failures;		/* round trips in a row */
	time_t open_until;
	bool open;
};

struct server {
	char name[128];			/* host:port, as configured */
	char host[100];
	char port[8];
	uint64_t seed;			/* its place in rendezvous hashing */
	int fd;				/* -1: not connected */
	unsigned int refused;		/* connections failed in a row */
	time_t ejected_until;		/* 0: in the pool; else when to try it */
	bool ejection_logged;		/* until it is back */
	struct breaker breaker;

	/* the batch under way */
	unsigned char *out;
	size_t out_len, out_cap;
	unsigned char *in;
	size_t in_len, in_cap;
	bool sending, waiting;
	size_t out_sent;
	const char *error;		/* why this server failed the batch */
	char error_buf[96];
	bool refusing;			/* the failure was a refusal, not a timeout */
	bool settled;			/* its failure is counted, or it was skipped */
	bool observed;			/* a round trip was begun */
};

struct ab_store {
	const struct ab_config *cfg;
	ab_log_fn *log;
	void *log_ctx;
	time_t (*now)(void);
	unsigned int server_count;
	struct server server[AB_STORE_MAX_SERVERS];
	uint16_t batch;
	bool retrying;			/* in retry_increments() */
	struct ab_store_stats stats;
	char error[256];
	/* metrics (ab-observer.h); NULL when nobody watches */
	const struct ab_observer *observer;
	void *observer_ctx;
};

static time_t default_now(void)
{
	return time(NULL);
}

static void store_log(struct ab_store *store, enum ab_log_level level,
		      const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void store_log(struct ab_store *store, enum ab_log_level level,
		      const char *fmt, ...)
{
	char msg[512];
	va_list args;

	if (store->log == NULL)
		return;
	va_start(args, fmt);
	vsnprintf(msg, sizeof(msg), fmt, args);
	va_end(args);
	store->log(level, msg, store->log_ctx);
}

static uint64_t mix64(uint64_t x)
{
	/* splitmix64's finaliser */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;	/* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
	return mix64(h);
}

static int add_server(struct ab_store *store, const char *host,
		      unsigned int port, const char **error_r)
{
	struct server *s = &store->server[store->server_count];

	if (strlen(host) >= sizeof(s->host))
		return ab_error(error_r, "memcached_servers: host name '%s' is too long", host);
	snprintf(s->host, sizeof(s->host), "%s", host);
	snprintf(s->port, sizeof(s->port), "%u", port);
	snprintf(s->name, sizeof(s->name), "%s:%u", host, port);
	s->seed = hash_str(s->name);
	s->fd = -1;
	store->server_count++;	/* from here on ab_store_deinit() frees it */
	return 0;
}

/* Room for need bytes in a buffer of *cap, at most max. */
static bool buffer_reserve(unsigned char **buf, size_t *cap, size_t need,
			   size_t max)
{
	size_t size = *cap > 0 ? *cap : IN_MIN;
	unsigned char *p;

	if (need <= *cap)
		return true;
	if (need > max)
		return false;
	while (size < need)
		size *= 2;
	if (size > max)
		size = max;
	if ((p = realloc(*buf, size)) == NULL)
		return false;
	*buf = p;
	*cap = size;
	return true;
}

/* Room in every server's output for n requests. */
static int reserve_out(struct ab_store *store, size_t n, const char **error_r)
{
	unsigned int i;

	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (!buffer_reserve(&s->out, &s->out_cap, n * REQUEST_MAX, OUT_MAX))
			return ab_error(error_r, "out of memory");
	}
	return 0;
}

/* Room for more input (a full buffer grows, up to IN_MAX). */
static bool in_room(struct server *s)
{
	if (s->in_len < s->in_cap)
		return true;
	return buffer_reserve(&s->in, &s->in_cap, s->in_len + 1, IN_MAX);
}

int ab_store_init(const struct ab_config *cfg, ab_log_fn *log, void *log_ctx,
		  struct ab_store **store_r, const char **error_r)
{
	struct ab_store *store;
	const char *p = cfg->memcached_servers, *error;

	store = calloc(1, sizeof(*store));
	if (store == NULL)
		return ab_error(error_r, "out of memory");
	store->cfg = cfg;
	store->log = log;
	store->log_ctx = log_ctx;
	store->now = default_now;

	/* comma- or space-separated */
	while (*p != '\0') {
		char item[128], host[AB_HOST_MAX];
		unsigned int port, i;
		size_t len;

		p += strspn(p, ", \t");
		if ((len = strcspn(p, ", \t")) == 0)
			break;
		if (len >= sizeof(item)) {
			ab_error(error_r, "memcached_servers: '%.40s...' is too long", p);
			goto fail;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p += len;
		/* the host without brackets: a server's name (and so its
		   keys' place) is what it was when libmemcached parsed the
		   list */
		if (ab_host_port_parse(item, DEFAULT_PORT, host, &port, &error) < 0) {
			ab_error(error_r, "memcached_servers: %s", error);
			goto fail;
		}
		for (i = 0; i < store->server_count; i++) {
			if (strcmp(store->server[i].host, host) == 0 &&
			    (unsigned int)atoi(store->server[i].port) == port) {
				ab_error(error_r, "memcached_servers: %s is listed twice", item);
				goto fail;
			}
		}
		if (store->server_count == AB_STORE_MAX_SERVERS) {
			ab_error(error_r, "memcached_servers: more than %d servers",
				 AB_STORE_MAX_SERVERS);
			goto fail;
		}
		if (add_server(store, host, port, error_r) < 0)
			goto fail;
	}
	if (store->server_count == 0) {
		ab_error(error_r, "memcached_servers is empty");
		goto fail;
	}
	*store_r = store;
	return 0;
fail:
	ab_store_deinit(&store);
	return -1;
}

static void server_close(struct server *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->in_len = 0;
}

void ab_store_deinit(struct ab_store **_store)
{
	struct ab_store *store = *_store;
	unsigned int i;

	if (store == NULL)
		return;
	*_store = NULL;
	/* only the servers set up: the others' fd is 0, not -1 */
	for (i = 0; i < store->server_count; i++) {
		server_close(&store->server[i]);
		free(store->server[i].out);
		free(store->server[i].in);
	}
	free(store);
}

void ab_store_get_stats(const struct ab_store *store,
			struct ab_store_stats *stats_r)
{
	*stats_r = store->stats;
}

void ab_store_set_clock(struct ab_store *store, time_t (*now)(void))
{
	store->now = now != NULL ? now : default_now;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The server a key lives on: of the servers in the pool, the one that
   scores highest for it (all of them when none is). */
static struct server *server_of(struct ab_store *store, const char *key)
{
	struct server *best = &store->server[0];
	uint64_t h, score, best_score = 0;
	unsigned int i;
	bool any = false;

	if (store->server_count == 1)
		return best;
	h = hash_str(key);
	for (i = 0; i < store->server_count; i++) {
		if (store->server[i].ejected_until != 0)
			continue;	/* out of the pool */
		score = mix64(h ^ store->server[i].seed);
		if (!any || score > best_score) {
			best = &store->server[i];
			best_score = score;
			any = true;
		}
	}
	if (any)
		return best;
	for (i = 0; i < store->server_count; i++) {
		score = mix64(h ^ store->server[i].seed);
		if (i == 0 || score > best_score) {
			best = &store->server[i];
			best_score = score;
		}
	}
	return best;
}

/* --- observer (ab-observer.h): metrics for a face that asks ------- */

void ab_store_set_observer(struct ab_store *store,
			   const struct ab_observer *observer, void *ctx)
{
	store->observer = observer;
	store->observer_ctx = ctx;
}

static void observe_begin(struct ab_store *store, const struct server *s)
{
	if (store->observer != NULL && store->observer->store_request_begin != NULL)
		store->observer->store_request_begin(store->observer_ctx,
						     (unsigned int)(s - store->server));
}

static void observe_end(struct ab_store *store, const struct server *s)
{
	const char *result = s->error == NULL ? "ok" :
		strstr(s->error, "timed out") != NULL ? "timeout" : "error";

	if (store->observer != NULL && store->observer->store_request_end != NULL)
		store->observer->store_request_end(store->observer_ctx,
			(unsigned int)(s - store->server), s->name, "batch", result);
}

/* --- breaker and ejection ----------------------------------------- */

/* May a round trip go to the server now? */
static bool breaker_admit(struct ab_store *store, struct server *s)
{
	if (!s->breaker.open || store->now() >= s->breaker.open_until)
		return true;	/* closed, or half-open: one round trip decides */
	store->stats.skipped++;
	return false;
}

static void server_ok(struct ab_store *store, struct server *s)
{
	if (s->breaker.open)
		store_log(store, AB_LOG_INFO,
			  "memcached %s answers again: circuit breaker closed", s->name);
	s->breaker.failures = 0;
	s->breaker.open = false;
	s->refused = 0;
}

static void server_failed(struct ab_store *store, struct server *s)
{
	const struct ab_config *cfg = store->cfg;
	time_t now = store->now();

	server_close(s);
	s->settled = true;
	store->stats.failures++;
	if (s->refusing && ++s->refused >= cfg->server_failure_limit &&
	    store->server_count > 1 && s->ejected_until == 0) {
		s->ejected_until = now + (time_t)cfg->dead_timeout_s;
		store->stats.ejected++;
		if (!s->ejection_logged)
			store_log(store, AB_LOG_WARNING,
				  "memcached %s failed %u connections in a row (last: %s): "
				  "out of the pool, its keys go to the other servers; "
				  "tried again every %us", s->name, s->refused, s->error,
				  cfg->dead_timeout_s);
		s->ejection_logged = true;
		s->refused = 0;
	}
	if (++s->breaker.failures >= cfg->breaker_failures) {
		if (!s->breaker.open) {
			store->stats.breaker_opened++;
			store_log(store, AB_LOG_WARNING,
				  "memcached %s failed %u requests in a row (last: %s): "
				  "circuit breaker open, skipping it for %us",
				  s->name, s->breaker.failures, s->error,
				  cfg->breaker_cooldown_s);
		}
		if (!s->breaker.open && store->observer != NULL &&
		    store->observer->breaker_open != NULL)
			store->observer->breaker_open(store->observer_ctx, s->name);
		s->breaker.open = true;
		s->breaker.open_until = now + (time_t)cfg->breaker_cooldown_s;
	}
}

/* --- connections ---------------------------------------------------- */

static bool set_failure(struct server *s, bool refusing, const char *error)
{
	s->error = error;
	s->refusing = refusing;
	return false;
}

/* A failure of a system call, with its errno. */
static bool set_failure_errno(struct server *s, const char *what)
{
	snprintf(s->error_buf, sizeof(s->error_buf), "%s: %s", what, strerror(errno));
	return set_failure(s, true, s->error_buf);
}

static bool server_connect(struct ab_store *store, struct server *s)
{
	struct addrinfo hints, *ai, *p;
	struct pollfd pfd;
	struct timeval tv;
	int fd = -1, err = 0, one = 1;
	socklen_t len = sizeof(err);

	if (s->fd >= 0)
		return true;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(s->host, s->port, &hints, &ai) != 0)
		return set_failure(s, true, "host name does not resolve");
	for (p = ai; p != NULL; p = p->ai_next) {
		fd = socket(p->ai_family, p->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    p->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, p->ai_addr, p->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			if (poll(&pfd, 1, (int)store->cfg->connect_timeout_ms) == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
			    err == 0)
				break;
			if (err == 0)
				err = ETIMEDOUT;
		} else {
			err = errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return set_failure(s, true, err == ETIMEDOUT ? "connection timed out" :
				   err == ECONNREFUSED ? "connection refused" :
				   "cannot connect");
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* blocking from now on, each wait bounded by poll_timeout: a batch
	   for one server is a send and a recv, no poll (waits for several
	   servers poll, and send and recv with MSG_DONTWAIT) */
	tv.tv_sec = store->cfg->poll_timeout_ms / 1000;
	tv.tv_usec = (suseconds_t)(store->cfg->poll_timeout_ms % 1000) * 1000;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
		close(fd);
		return set_failure(s, false, "cannot set the socket's timeouts");
	}
	s->fd = fd;
	s->in_len = 0;
	return true;
}

/* A server out of the pool comes back only once it takes a connection
   again: tried every dead_timeout, so that the keys of a server still
   down do not move back to it and away again (a count taken on one side
   and given back on the other would be lost). */
static void pool_refresh(struct ab_store *store, time_t now)
{
	unsigned int i;

	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (s->ejected_until == 0 || s->ejected_until > now)
			continue;
		if (server_connect(store, s)) {
			s->ejected_until = 0;
			store_log(store, AB_LOG_INFO,
				  "memcached %s takes connections again: back in the pool",
				  s->name);
			s->ejection_logged = false;
		} else {
			s->ejected_until = now + (time_t)store->cfg->dead_timeout_s;
		}
		s->error = NULL;
	}
}

/* --- the protocol --------------------------------------------------- */

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const unsigned char *p)
{
	return ((uint32_t)get16(p) << 16) | get16(p + 2);
}

static uint64_t get64(const unsigned char *p)
{
	return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

/* The opcode of a request, quiet or not. */
static uint8_t opcode(enum ab_store_cmd cmd, bool quiet)
{
	switch (cmd) {
	case AB_STORE_GET: return OP_GETQ;	/* quiet even in a batch: misses say nothing */
	case AB_STORE_INCR: return quiet ? OP_INCRQ : OP_INCR;
	case AB_STORE_DECR: return quiet ? OP_DECRQ : OP_DECR;
	case AB_STORE_SET: return quiet ? OP_SETQ : OP_SET;
	case AB_STORE_ADD: return quiet ? OP_ADDQ : OP_ADD;
	case AB_STORE_DELETE: return quiet ? OP_DELETEQ : OP_DELETE;
	}
	return OP_NOOP;
}

/* Append one request to the server's output. */
static void put_request(struct server *s, uint8_t op, const char *key,
			uint64_t value, unsigned int ttl_s, uint32_t opaque)
{
	unsigned char *p = s->out + s->out_len;
	size_t key_len = key != NULL ? strlen(key) : 0, extras = 0, body = 0;
	char num[24];
	int num_len = 0;

	memset(p, 0, 24);
	p[0] = 0x80;
	p[1] = op;
	switch (op) {
	case OP_INCR: case OP_INCRQ:
		/* delta, initial value, expiry */
		put64(p + 24, value);
		put64(p + 32, value);
		put32(p + 40, ttl_s);
		extras = 20;
		break;
	case OP_DECR: case OP_DECRQ:
		/* an expiry of all ones: a missing key is not created */
		put64(p + 24, value);
		put64(p + 32, 0);
		put32(p + 40, 0xffffffffU);
		extras = 20;
		break;
	case OP_SET: case OP_SETQ: case OP_ADD: case OP_ADDQ:
		/* flags, expiry; the value in decimal, as increments keep it */
		put32(p + 24, 0);
		put32(p + 28, ttl_s);
		extras = 8;
		num_len = snprintf(num, sizeof(num), "%llu", (unsigned long long)value);
		break;
	default:
		break;
	}
	if (key_len > 0)	/* a NOOP has no key: memcpy() from NULL is undefined */
		memcpy(p + 24 + extras, key, key_len);
	memcpy(p + 24 + extras + key_len, num, (size_t)num_len);
	body = extras + key_len + (size_t)num_len;
	put16(p + 2, (uint16_t)key_len);
	p[4] = (uint8_t)extras;
	put32(p + 8, (uint32_t)body);
	put32(p + 12, opaque);
	s->out_len += 24 + body;
}

static uint64_t parse_decimal(const unsigned char *data, size_t len)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < len && data[i] >= '0' && data[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(data[i] - '0');
	return v;
}

/* One answer to a request of this batch. */
static void take_response(struct ab_store_op *op, const unsigned char *hdr,
			  const unsigned char *body)
{
	uint16_t status = get16(hdr + 6);
	size_t key_len = get16(hdr + 2), extras = hdr[4];
	size_t value_len = get32(hdr + 8) - key_len - extras;
	const unsigned char *value = body + extras + key_len;

	if (status == ST_OK) {
		op->result = AB_STORE_DONE;
		if (op->cmd == AB_STORE_GET)
			op->out = parse_decimal(value, value_len);
		else if ((op->cmd == AB_STORE_INCR || op->cmd == AB_STORE_DECR) &&
			 value_len == 8)
			op->out = get64(value);
	} else if (status == ST_NOT_FOUND || status == ST_EXISTS ||
		   status == ST_NOT_STORED) {
		op->result = AB_STORE_MISS;
	}
	/* anything else (a value that cannot be incremented, out of
	   memory): the request failed, its result stays AB_STORE_FAILED */
}

/* Parse what the server sent; true when the batch's NOOP came back. */
static bool take_input(struct ab_store *store, struct server *s,
		       struct ab_store_op *ops, size_t n)
{
	size_t pos = 0;
	bool done = false;

	while (!done && s->in_len - pos >= 24) {
		const unsigned char *hdr = s->in + pos;
		size_t body = get32(hdr + 8);
		uint32_t opaque = get32(hdr + 12);

		if (hdr[0] != 0x81 || body > IN_MAX - 24) {
			set_failure(s, false, "garbled answer");
			s->waiting = false;
			return false;
		}
		if (s->in_len - pos < 24 + body)
			break;
		if (opaque >> 16 == store->batch) {
			uint32_t i = opaque & 0xffffU;

			if (hdr[1] == OP_NOOP && i == NOOP_INDEX)
				done = true;
			else if (i < n)
				take_response(&ops[i], hdr, hdr + 24);
		}
		pos += 24 + body;
	}
	if (pos > 0)
		memmove(s->in, s->in + pos, s->in_len - pos);
	s->in_len -= pos;
	return done;
}

/* flags: MSG_DONTWAIT, or 0 to wait up to poll_timeout */
static bool server_write(struct server *s, int flags)
{
	while (s->out_sent < s->out_len) {
		ssize_t r = send(s->fd, s->out + s->out_sent, s->out_len - s->out_sent,
				 MSG_NOSIGNAL | flags);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN && flags != 0)
			return true;	/* the rest when it can take it */
		if (r < 0 && errno == EAGAIN)
			return set_failure(s, false, "timed out sending (poll_timeout)");
		if (r <= 0)
			return set_failure_errno(s, "connection lost while sending");
		s->out_sent += (size_t)r;
	}
	s->sending = false;
	return true;
}

/* flags: MSG_DONTWAIT, or 0 to wait until the deadline */
static bool server_read(struct ab_store *store, struct server *s,
			struct ab_store_op *ops, size_t n, int flags,
			int64_t deadline)
{
	ssize_t r;

	for (;;) {
		if (!in_room(s))
			return set_failure(s, false, s->in_len == IN_MAX ?
					   "answer too large" : "out of memory");
		if (flags == 0 && now_ms() >= deadline)
			return set_failure(s, false, "timed out (poll_timeout)");
		r = recv(s->fd, s->in + s->in_len, s->in_cap - s->in_len, flags);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN && flags != 0)
			return true;
		if (r < 0 && errno == EAGAIN)
			return set_failure(s, false, "timed out (poll_timeout)");
		if (r == 0)
			return set_failure(s, true, "connection closed by server");
		if (r < 0)
			return set_failure_errno(s, "connection lost while reading");
		s->in_len += (size_t)r;
		if (take_input(store, s, ops, n)) {
			s->waiting = false;
			return true;
		}
		if (s->error != NULL)
			return false;
	}
}

/* Wait until every server sent its batch and answered it, or until the
   deadline; those that did not are failed. */
static void wait_batch(struct ab_store *store, struct ab_store_op *ops,
		       size_t n, int64_t deadline)
{
	struct pollfd pfd[AB_STORE_MAX_SERVERS];
	struct server *who[AB_STORE_MAX_SERVERS];
	unsigned int i, count;
	int64_t left;

	for (;;) {
		count = 0;
		for (i = 0; i < store->server_count; i++) {
			struct server *s = &store->server[i];

			if (!s->waiting)
				continue;
			pfd[count].fd = s->fd;
			pfd[count].events = (short)(POLLIN | (s->sending ? POLLOUT : 0));
			pfd[count].revents = 0;
			who[count++] = s;
		}
		if (count == 0)
			return;
		left = deadline - now_ms();
		if (left <= 0 || poll(pfd, count, (int)left) <= 0) {
			if (left > 0 && errno == EINTR)
				continue;
			for (i = 0; i < count; i++) {
				set_failure(who[i], false, "timed out (poll_timeout)");
				who[i]->waiting = false;
			}
			return;
		}
		for (i = 0; i < count; i++) {
			struct server *s = who[i];
			bool ok = true;

			if ((pfd[i].revents & POLLOUT) != 0)
				ok = server_write(s, MSG_DONTWAIT);
			if (ok && (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0)
				ok = server_read(store, s, ops, n, MSG_DONTWAIT, deadline);
			if (!ok)
				s->waiting = false;
		}
	}
}

/* Two increments of a missing key at once: both find it missing, both
   add it with the initial value, and memcached answers the one whose add
   lost NOT_STORED. The key is there now: such an increment is sent once
   more, alone, so that no count is lost (a place not taken would let one
   attempt too many through). */
static int retry_increments(struct ab_store *store, struct ab_store_op *ops,
			    size_t n, const char **error_r)
{
	struct ab_store_op again[32];
	size_t map[N_ELEMENTS(again)], count = 0, j;
	int ret = 0;

	if (store->retrying)
		return 0;	/* once: what loses again has failed */
	for (j = 0; j <= n; j++) {
		if (j < n && ops[j].cmd == AB_STORE_INCR &&
		    ops[j].result == AB_STORE_MISS) {
			ops[j].result = AB_STORE_FAILED;
			again[count] = ops[j];
			map[count++] = j;
		}
		if (count == 0 || (count < N_ELEMENTS(again) && j < n))
			continue;
		store->retrying = true;
		if (ab_store_run(store, again, count, error_r) != 0)
			ret = 1;
		store->retrying = false;
		while (count > 0) {
			count--;
			if (again[count].result == AB_STORE_DONE) {
				ops[map[count]].result = AB_STORE_DONE;
				ops[map[count]].out = again[count].out;
			}
		}
	}
	return ret;
}

int ab_store_run(struct ab_store *store, struct ab_store_op *ops, size_t n,
		 const char **error_r)
{
	struct server *where[AB_STORE_BATCH_MAX];
	time_t now = store->now();
	int64_t deadline = now_ms() + store->cfg->poll_timeout_ms;
	unsigned int i, used = 0, failed = 0;
	const char *first = NULL;
	size_t j;

	if (n > AB_STORE_BATCH_MAX)
		return ab_error(error_r, "a batch of %zu requests: at most %d",
				n, AB_STORE_BATCH_MAX);
	if (reserve_out(store, n + 1, error_r) < 0)
		return -1;
	if (++store->batch == 0)
		store->batch = 1;	/* 0 is for posted requests */
	pool_refresh(store, now);
	for (i = 0; i < store->server_count; i++) {
		store->server[i].out_len = 0;
		store->server[i].error = NULL;
		store->server[i].settled = false;
		store->server[i].observed = false;
	}
	for (j = 0; j < n; j++) {
		ops[j].result = AB_STORE_FAILED;
		ops[j].out = 0;
		if (strlen(ops[j].key) > KEY_MAX)
			return ab_error(error_r, "memcached key of %zu bytes", strlen(ops[j].key));
		where[j] = server_of(store, ops[j].key);
		put_request(where[j], opcode(ops[j].cmd, false), ops[j].key,
			    ops[j].value, ops[j].ttl_s, OPAQUE(store->batch, j));
	}
	store->stats.ops += n;
	for (i = 0; i < store->server_count; i++) {
		if (store->server[i].out_len > 0)
			used++;
	}
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		s->waiting = false;
		if (s->out_len == 0)
			continue;
		if (!breaker_admit(store, s)) {
			set_failure(s, false, "circuit breaker open");
			s->settled = true;
			continue;
		}
		put_request(s, OP_NOOP, NULL, 0, 0, OPAQUE(store->batch, NOOP_INDEX));
		store->stats.requests++;
		s->observed = true;
		observe_begin(store, s);
		if (!server_connect(store, s)) {
			server_failed(store, s);
			continue;
		}
		s->out_sent = 0;
		s->sending = true;
		if (used == 1) {
			/* one server: send, then recv until its NOOP */
			if (!(server_write(s, 0) &&
			      server_read(store, s, ops, n, 0, deadline)) &&
			    s->error == NULL)
				set_failure(s, false, "timed out (poll_timeout)");
			s->waiting = false;
			continue;
		}
		s->waiting = server_write(s, MSG_DONTWAIT);
		if (!s->waiting)
			server_failed(store, s);
	}
	wait_batch(store, ops, n, deadline);
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (s->out_len == 0)
			continue;
		if (s->observed)
			observe_end(store, s);
		if (s->error == NULL) {
			server_ok(store, s);
			continue;
		}
		if (!s->settled)
			server_failed(store, s);	/* timed out, or lost while waiting */
		s->sending = false;
		failed++;
		if (first == NULL) {
			snprintf(store->error, sizeof(store->error), "memcached %s: %s",
				 s->name, s->error);
			first = store->error;
		}
	}
	for (j = 0; j < n; j++) {
		/* a quiet get that found nothing said nothing */
		if (ops[j].cmd == AB_STORE_GET && ops[j].result == AB_STORE_FAILED &&
		    where[j]->error == NULL)
			ops[j].result = AB_STORE_MISS;
	}
	if (failed == 0)
		return retry_increments(store, ops, n, error_r);
	ab_error(error_r, "%s", first);
	return failed == used ? -1 : 1;
}

void ab_store_post(struct ab_store *store, const struct ab_store_op *ops,
		   size_t n)
{
	time_t now = store->now();
	unsigned int i;
	size_t j;

	if (n == 0 || reserve_out(store, n, NULL) < 0)
		return;
	pool_refresh(store, now);
	for (i = 0; i < store->server_count; i++) {
		store->server[i].out_len = 0;
		store->server[i].error = NULL;
		store->server[i].settled = false;
	}
	for (j = 0; j < n && j < AB_STORE_BATCH_MAX; j++) {
		if (ops[j].cmd == AB_STORE_GET || strlen(ops[j].key) > KEY_MAX)
			continue;	/* a get has nothing to say here */
		put_request(server_of(store, ops[j].key),
			    opcode(ops[j].cmd, true), ops[j].key, ops[j].value,
			    ops[j].ttl_s, OPAQUE(0, j));
	}
	store->stats.ops += n;
	store->stats.posted++;
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (s->out_len == 0 || s->fd < 0 || !breaker_admit(store, s))
			continue;	/* not connected: the batch before failed */
		s->out_sent = 0;
		s->sending = true;
		/* memcached reads as fast as it is written to unless hung: a
		   write that cannot finish within poll_timeout fails */
		(void)server_write(s, 0);
		s->sending = false;
		if (s->error != NULL)
			server_failed(store, s);
	}
}

/* --- one request at a time ------------------------------------------ */

int ab_store_mget(struct ab_store *store, const char *const *keys, size_t n,
		  uint64_t *values_r, bool *found_r, const char **error_r)
{
	struct ab_store_op ops[AB_STORE_BATCH_MAX];
	size_t i;
	int ret;

	if (n > AB_STORE_BATCH_MAX)
		return ab_error(error_r, "mget of %zu keys: at most %d", n,
				AB_STORE_BATCH_MAX);
	memset(ops, 0, sizeof(ops[0]) * n);
	for (i = 0; i < n; i++) {
		ops[i].cmd = AB_STORE_GET;
		ops[i].key = keys[i];
	}
	ret = ab_store_run(store, ops, n, error_r);
	for (i = 0; i < n; i++) {
		found_r[i] = ops[i].result == AB_STORE_DONE;
		values_r[i] = found_r[i] ? ops[i].out : 0;
	}
	return ret;
}

static int one(struct ab_store *store, enum ab_store_cmd cmd, const char *key,
	       uint64_t value, unsigned int ttl_s, struct ab_store_op *op_r,
	       const char **error_r)
{
	memset(op_r, 0, sizeof(*op_r));
	op_r->cmd = cmd;
	op_r->key = key;
	op_r->value = value;
	op_r->ttl_s = ttl_s;
	store->error[0] = '\0';
	if (ab_store_run(store, op_r, 1, error_r) < 0)
		return -1;
	if (op_r->result == AB_STORE_FAILED)
		return ab_error(error_r, "memcached: %s of a key failed",
				cmd == AB_STORE_INCR ? "increment" :
				cmd == AB_STORE_DECR ? "decrement" :
				cmd == AB_STORE_SET ? "set" :
				cmd == AB_STORE_ADD ? "add" :
				cmd == AB_STORE_DELETE ? "delete" : "get");
	return 0;
}

int ab_store_incr(struct ab_store *store, const char *key, uint64_t delta,
		  unsigned int ttl_s, uint64_t *value_r, const char **error_r)
{
	struct ab_store_op op;

	if (one(store, AB_STORE_INCR, key, delta, ttl_s, &op, error_r) < 0)
		return -1;
	if (value_r != NULL)
		*value_r = op.out;
	return 0;
}

int ab_store_decr(struct ab_store *store, const char *key, uint64_t delta,
		  const char **error_r)
{
	struct ab_store_op op;

	return one(store, AB_STORE_DECR, key, delta, 0, &op, error_r);
}

int ab_store_set(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, const char **error_r)
{
	struct ab_store_op op;

	return one(store, AB_STORE_SET, key, value, ttl_s, &op, error_r);
}

int ab_store_add(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, bool *added_r, const char **error_r)
{
	struct ab_store_op op;

	if (one(store, AB_STORE_ADD, key, value, ttl_s, &op, error_r) < 0)
		return -1;
	*added_r = op.result == AB_STORE_DONE;
	return 0;
}

int ab_store_delete(struct ab_store *store, const char *key, bool *found_r,
		    const char **error_r)
{
	struct ab_store_op op;

	if (found_r != NULL)
		*found_r = false;
	if (one(store, AB_STORE_DELETE, key, 0, 0, &op, error_r) < 0)
		return -1;
	if (found_r != NULL)
		*found_r = op.result == AB_STORE_DONE;
	return 0;
}

/* A server's "evictions" statistic: a STAT request on its connection,
   answered by one packet per statistic and an empty one at the end
   (what posted writes answered before it, only errors, is skipped). */
static bool server_evictions(struct ab_store *store, struct server *s,
			     uint64_t *evictions_r)
{
	unsigned char req[24];
	int64_t deadline = now_ms() + store->cfg->poll_timeout_ms;
	bool found = false;

	s->error = NULL;
	if (s->ejected_until != 0 || !server_connect(store, s))
		return false;
	memset(req, 0, sizeof(req));
	req[0] = 0x80;
	req[1] = OP_STAT;
	put32(req + 12, STAT_OPAQUE);
	if (send(s->fd, req, sizeof(req), MSG_NOSIGNAL) != (ssize_t)sizeof(req))
		goto fail;
	for (;;) {
		size_t pos = 0;
		ssize_t r;

		while (s->in_len - pos >= 24) {
			const unsigned char *hdr = s->in + pos;
			size_t body = get32(hdr + 8), key_len = get16(hdr + 2);

			if (hdr[0] != 0x81 || body > IN_MAX - 24 ||
			    key_len + hdr[4] > body)
				goto fail;
			if (s->in_len - pos < 24 + body)
				break;
			pos += 24 + body;
			if (hdr[1] != OP_STAT || get32(hdr + 12) != STAT_OPAQUE)
				continue;
			if (key_len == 0) {
				s->in_len = 0;
				return found;
			}
			if (key_len == 9 && memcmp(hdr + 24 + hdr[4], "evictions", 9) == 0) {
				*evictions_r = parse_decimal(hdr + 24 + hdr[4] + key_len,
							     body - hdr[4] - key_len);
				found = true;
			}
		}
		if (pos > 0)
			memmove(s->in, s->in + pos, s->in_len - pos);
		s->in_len -= pos;
		if (!in_room(s) || now_ms() >= deadline)
			goto fail;
		r = recv(s->fd, s->in + s->in_len, s->in_cap - s->in_len, 0);
		if (r <= 0)
			goto fail;
		s->in_len += (size_t)r;
	}
fail:
	/* what is left of the answer would confuse the next batch */
	server_close(s);
	return false;
}

int ab_store_evictions(struct ab_store *store, uint64_t *evictions_r,
		       const char **error_r)
{
	uint64_t sum = 0, n = 0;
	unsigned int i;
	bool any = false;

	*evictions_r = 0;
	for (i = 0; i < store->server_count; i++) {
		if (server_evictions(store, &store->server[i], &n)) {
			sum += n;
			any = true;
		}
	}
	if (!any)
		return ab_error(error_r, "memcached stats: no server answered");
	*evictions_r = sum;
	return 0;
}
