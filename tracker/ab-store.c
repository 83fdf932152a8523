/* The memcached store. A batch of requests is pipelined in memcached's
   meta protocol (ab-meta.c): each server gets its requests in one write,
   each tagged with an opaque token and ended by a no-op, and answers them
   in order. Every answer must carry the token of the next request it owes
   and a code that fits that request; anything else (a lying length, an
   answer out of order, garbage, an error line) fails the server's part of
   the batch and closes its connection, so nothing of a confused exchange
   is read into the next one. Every batch is bounded by poll_timeout from
   the moment it is sent, all servers at once.

   Keys go to servers by rendezvous hashing over the servers in the pool,
   so each key has one home on every node whatever order the servers are
   listed in, and a server taken out moves only its own keys. State that
   refuses for long is kept on the two servers that rank highest in the
   pool (struct ab_store_op's dual): a server that leaves takes one copy
   with it, and the other is still ranked second or better once it is
   back. A server that refuses connections server_failure_limit times in a
   row is taken out for dead_timeout. A hung server (SIGSTOP, a full
   kernel queue) is not taken out, since its keys would move and come
   back: a breaker of our own skips it after breaker_failures failed round
   trips in a row for breaker_cooldown, then tries it again. No client
   library (libmemcached cannot send a mixed batch in one round trip, nor
   the meta protocol): the PAM module, loaded anew by every login's
   process, pulls in nothing beyond libsodium and the C library. */
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
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "ab-config.h"
#include "ab-error.h"
#include "ab-observer.h"
#include "ab-store.h"

#define AB_STORE_MAX_SERVERS 64
#define IN_MAX (256 * 1024)
/* Buffers start small and grow to what a batch needs: the PAM module
   sets a store up for every login, and large buffers come from mmap(),
   whose munmap() costs every CPU a TLB flush. */
#define IN_MIN 4096
/* The opaque of a request: the batch in the high half, its place in the
   server's part of the batch in the low half. Quiet requests posted
   without a batch carry batch 0: memcached answers only their failures. */
#define OPAQUE(batch, i) (((uint32_t)(batch) << 16) | (uint32_t)(i))
#define DEFAULT_PORT 11211
/* posted writes lost are logged at most this often, per store */
#define POST_LOG_INTERVAL_S 60

struct breaker {
	unsigned int failures;		/* round trips in a row */
	time_t open_until;
	bool open;
};

/* A request a server owes an answer to: which op, and which copy of a
   dual op (1: the second server's). */
struct expect {
	uint16_t op;
	uint8_t copy;
	uint8_t cmd;			/* enum ab_meta_cmd */
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
	struct expect *expect;
	size_t expect_count, expect_cap;
	size_t answered;		/* of expect[]; then the no-op's MN */
	bool sending, waiting, done;
	size_t out_sent;
	const char *error;		/* why this server failed the batch */
	char error_buf[128];
	bool refusing;			/* the failure was a refusal, not a timeout */
	bool closed_early;		/* found closed before it answered anything */
	bool skipped;			/* breaker open: not asked */
	bool observed;			/* a round trip was begun */
};

/* The second copy's answer of a dual op. */
struct second {
	enum ab_store_result result;
	uint64_t out;
};

struct ab_store {
	const struct ab_config *cfg;
	ab_log_fn *log;
	void *log_ctx;
	unsigned int server_count;
	struct server server[AB_STORE_MAX_SERVERS];
	uint16_t batch;
	struct second *second;
	size_t second_cap;
	struct ab_store_stats stats;
	time_t post_logged;
	/* dead and hung servers, shared with the next processes (NULL: not) */
	char *state_path;
	char error[256];
	/* metrics (ab-observer.h); NULL when nobody watches */
	const struct ab_observer *observer;
	void *observer_ctx;
};

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

/* Room for need bytes (elements of size) in *buf of *cap, at most max. */
static bool buffer_reserve(void *buf, size_t *cap, size_t need, size_t max,
			   size_t size)
{
	void **p = buf, *np;
	size_t n = *cap > 0 ? *cap : IN_MIN / size;

	if (need <= *cap)
		return true;
	if (need > max)
		return false;
	while (n < need)
		n *= 2;
	if (n > max)
		n = max;
	if ((np = realloc(*p, n * size)) == NULL)
		return false;
	*p = np;
	*cap = n;
	return true;
}

/* Room for more input (a full buffer grows, up to IN_MAX). */
static bool in_room(struct server *s)
{
	if (s->in_len < s->in_cap)
		return true;
	return buffer_reserve(&s->in, &s->in_cap, s->in_len + 1, IN_MAX, 1);
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
		free(store->server[i].expect);
	}
	free(store->second);
	free(store->state_path);
	free(store);
}

void ab_store_get_stats(const struct ab_store *store,
			struct ab_store_stats *stats_r)
{
	*stats_r = store->stats;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The servers a key lives on, best first: of the servers in the pool,
   the one or two that score highest for it (of all of them when none is
   in the pool). Returns how many (2 only for dual, and only when there
   are two). */
static unsigned int servers_of(struct ab_store *store, const char *key,
			       bool dual, struct server *where_r[2])
{
	uint64_t h, score, best[2] = { 0, 0 };
	unsigned int i, found = 0, pass;

	where_r[0] = where_r[1] = &store->server[0];
	if (store->server_count == 1)
		return 1;
	h = hash_str(key);
	for (pass = 0; pass < 2 && found == 0; pass++) {
		for (i = 0; i < store->server_count; i++) {
			struct server *s = &store->server[i];

			if (pass == 0 && s->ejected_until != 0)
				continue;	/* out of the pool */
			score = mix64(h ^ s->seed);
			if (found == 0 || score > best[0]) {
				best[1] = best[0];
				where_r[1] = where_r[0];
				best[0] = score;
				where_r[0] = s;
			} else if (found == 1 || score > best[1]) {
				best[1] = score;
				where_r[1] = s;
			}
			found++;
		}
	}
	return dual && found >= 2 ? 2 : 1;
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
	if (!s->breaker.open || time(NULL) >= s->breaker.open_until)
		return true;	/* closed, or half-open: one round trip decides */
	store->stats.skipped++;
	return false;
}

static void state_save(struct ab_store *store);

static void server_ok(struct ab_store *store, struct server *s)
{
	bool was_open = s->breaker.open;

	if (was_open)
		store_log(store, AB_LOG_INFO,
			  "memcached %s answers again: circuit breaker closed", s->name);
	s->breaker.failures = 0;
	s->breaker.open = false;
	s->refused = 0;
	if (was_open)
		state_save(store);
}

static void server_failed(struct ab_store *store, struct server *s)
{
	const struct ab_config *cfg = store->cfg;
	time_t now = time(NULL);

	server_close(s);
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
		state_save(store);
	} else if (s->ejected_until != 0) {
		state_save(store);
	}
}

/* --- connections ---------------------------------------------------- */

static bool set_failure(struct server *s, bool refusing, const char *error)
{
	if (s->error == NULL) {
		s->error = error;
		s->refusing = refusing;
	}
	s->waiting = false;
	return false;
}

/* A failure of a system call, with its errno. */
static bool set_failure_errno(struct server *s, const char *what)
{
	if (s->error == NULL)
		snprintf(s->error_buf, sizeof(s->error_buf), "%s: %s", what,
			 strerror(errno));
	return set_failure(s, true, s->error_buf);
}

/* An answer no server of ours sends: the connection is spoiled. */
static bool set_garbled(struct server *s, const char *what)
{
	if (s->error == NULL)
		snprintf(s->error_buf, sizeof(s->error_buf), "garbled answer: %s", what);
	return set_failure(s, false, s->error_buf);
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
			state_save(store);
		} else {
			s->ejected_until = now + (time_t)store->cfg->dead_timeout_s;
		}
		s->error = NULL;
	}
}

/* --- what a process knows of dead and hung servers, for the next ---

   pam_authbrake lives for one login: without this, every login would
   wait poll_timeout to learn again that a server hangs. A line per server
   taken out or skipped: "host:port breaker_until ejected_until" (unix
   times, 0 none), written whole to a new file and renamed over the old. A
   file that says more than a server could have earned (a time past the
   cooldown or dead_timeout) is believed only up to that. */

#define STATE_MAX 8192

static void state_save(struct ab_store *store)
{
	char buf[STATE_MAX], tmp[PATH_MAX];
	size_t len = 0;
	unsigned int i;
	int fd;

	if (store->state_path == NULL)
		return;
	for (i = 0; i < store->server_count; i++) {
		const struct server *s = &store->server[i];
		int n;

		if (!s->breaker.open && s->ejected_until == 0)
			continue;
		n = snprintf(buf + len, sizeof(buf) - len, "%s %lld %lld\n", s->name,
			     s->breaker.open ? (long long)s->breaker.open_until : 0LL,
			     (long long)s->ejected_until);
		if (n < 0 || (size_t)n >= sizeof(buf) - len)
			break;
		len += (size_t)n;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.%ld", store->state_path,
		     (long)getpid()) >= (int)sizeof(tmp))
		return;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0)
		return;		/* no /run/authbrake: each login finds out alone */
	if (write(fd, buf, len) != (ssize_t)len || close(fd) < 0 ||
	    rename(tmp, store->state_path) < 0)
		(void)unlink(tmp);
}

static void state_load(struct ab_store *store)
{
	char buf[STATE_MAX], name[160], *line, *next;
	time_t now = time(NULL);
	long long breaker_until, ejected_until;
	ssize_t r;
	unsigned int i;
	int fd;

	fd = open(store->state_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return;
	buf[r] = '\0';
	for (line = buf; line != NULL && *line != '\0'; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (sscanf(line, "%159s %lld %lld", name, &breaker_until,
			   &ejected_until) != 3)
			continue;
		for (i = 0; i < store->server_count; i++) {
			struct server *s = &store->server[i];
			time_t cooldown = now + (time_t)store->cfg->breaker_cooldown_s;
			time_t dead = now + (time_t)store->cfg->dead_timeout_s;

			if (strcmp(s->name, name) != 0)
				continue;
			if (breaker_until > now) {
				s->breaker.open = true;
				s->breaker.failures = store->cfg->breaker_failures;
				s->breaker.open_until = breaker_until < cooldown ?
					(time_t)breaker_until : cooldown;
			}
			if (ejected_until > now && store->server_count > 1) {
				s->ejected_until = ejected_until < dead ?
					(time_t)ejected_until : dead;
				s->ejection_logged = true;
			}
		}
	}
}

int ab_store_share_state(struct ab_store *store, const char *path,
			 const char **error_r)
{
	char dir[PATH_MAX], *slash;

	if (path == NULL || path[0] == '\0')
		return 0;
	if (path[0] != '/' || strlen(path) >= sizeof(dir) - 16)
		return ab_error(error_r, "server_state_file: '%s' is not an absolute path", path);
	free(store->state_path);
	if ((store->state_path = strdup(path)) == NULL)
		return ab_error(error_r, "out of memory");
	/* its folder (/run/authbrake) is made when missing: /run is a tmpfs */
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		(void)mkdir(dir, 0750);
	}
	state_load(store);
	return 0;
}

/* --- building a batch ------------------------------------------------- */

static enum ab_meta_cmd meta_cmd(enum ab_store_cmd cmd)
{
	switch (cmd) {
	case AB_STORE_GET: return AB_META_GET;
	case AB_STORE_INCR: return AB_META_INCR;
	case AB_STORE_DECR: return AB_META_DECR;
	case AB_STORE_SET: return AB_META_SET;
	case AB_STORE_ADD: return AB_META_ADD;
	case AB_STORE_DELETE: return AB_META_DELETE;
	case AB_STORE_GETS: return AB_META_GETS;
	case AB_STORE_CAS: return AB_META_CAS;
	}
	return AB_META_NOOP;
}

/* Append a request to the server's output; quiet ones (posted) owe no
   answer, the others are expected in order. */
static bool put_request(struct server *s, const struct ab_store_op *op,
			enum ab_meta_cmd cmd, uint16_t batch, uint16_t index,
			uint8_t copy, bool quiet)
{
	size_t len;
	uint32_t opaque = OPAQUE(batch, quiet ? index : s->expect_count);

	if (!buffer_reserve(&s->out, &s->out_cap, s->out_len + AB_META_REQUEST_MAX,
			    SIZE_MAX / 2, 1))
		return false;
	if (cmd == AB_META_CAS && copy == 1)
		cmd = AB_META_SET;	/* the second copy: as it is */
	len = ab_meta_put(s->out + s->out_len, cmd, op != NULL ? op->key : NULL,
			  op != NULL ? op->bytes : NULL, op != NULL ? op->bytes_len : 0,
			  op == NULL ? 0 : cmd == AB_META_CAS ? op->cas : op->value,
			  op != NULL ? op->ttl_s : 0, opaque, quiet);
	if (len == 0)
		return false;
	s->out_len += len;
	if (quiet)
		return true;
	if (!buffer_reserve(&s->expect, &s->expect_cap, s->expect_count + 1,
			    SIZE_MAX / sizeof(*s->expect), sizeof(*s->expect)))
		return false;
	s->expect[s->expect_count].op = index;
	s->expect[s->expect_count].copy = copy;
	s->expect[s->expect_count].cmd = (uint8_t)cmd;
	s->expect_count++;
	return true;
}

/* --- answers -------------------------------------------------------- */

/* A record read (GETS): its bytes and token, or the second copy's
   bytes. A record larger than the room given is none of ours. */
static void take_record(struct ab_store_op *op, const struct expect *e,
			const struct ab_meta_reply *reply)
{
	enum ab_store_result result = AB_STORE_MISS;
	unsigned char *to = e->copy == 0 ? op->out_bytes : op->out_bytes2;
	size_t cap = e->copy == 0 ? op->out_bytes_cap : op->out_bytes2_cap;

	if (reply->status == AB_META_VA) {
		if (reply->value_len > cap || to == NULL ||
		    (e->copy == 0 && !reply->has_cas)) {
			result = AB_STORE_FAILED;
		} else {
			memcpy(to, reply->value, reply->value_len);
			result = AB_STORE_DONE;
		}
	}
	if (e->copy == 0) {
		op->result = result;
		op->cas = result == AB_STORE_DONE ? reply->cas : 0;
		op->out_bytes_len = result == AB_STORE_DONE ? reply->value_len : 0;
	} else {
		op->result2 = result;
		op->out_bytes2_len = result == AB_STORE_DONE ? reply->value_len : 0;
	}
}

static void take_answer(struct ab_store_op *op, struct second *second,
			const struct expect *e, const struct ab_meta_reply *reply)
{
	enum ab_store_result result = AB_STORE_FAILED;
	uint64_t out = 0;

	if (e->cmd == AB_META_GETS) {
		take_record(op, e, reply);
		return;
	}
	if (e->cmd == AB_META_CAS) {
		op->result = reply->status != AB_META_HD ? AB_STORE_MISS :
			reply->has_cas ? AB_STORE_DONE : AB_STORE_FAILED;
		op->cas = reply->cas;
		return;
	}
	switch (reply->status) {
	case AB_META_VA:
		if (ab_meta_number(reply->value, reply->value_len, &out)) {
			result = AB_STORE_DONE;
		} else if (e->cmd == AB_META_GET && op->out_bytes != NULL &&
			   reply->value_len <= op->out_bytes_cap && e->copy == 0) {
			memcpy(op->out_bytes, reply->value, reply->value_len);
			op->out_bytes_len = reply->value_len;
			result = AB_STORE_DONE;
		}
		/* else a value that is none of ours: failed */
		break;
	case AB_META_HD:
		result = AB_STORE_DONE;
		break;
	case AB_META_EN:
	case AB_META_NF:
		result = AB_STORE_MISS;
		break;
	case AB_META_NS:
		/* an add whose key exists; an increment that could not create
		   its key has failed */
		result = e->cmd == AB_META_ADD ? AB_STORE_MISS : AB_STORE_FAILED;
		break;
	case AB_META_EX:
	case AB_META_MN:
	case AB_META_ERROR:
		break;
	}
	if (e->copy == 0) {
		op->result = result;
		op->out = out;
	} else {
		second->result = result;
		second->out = out;
		op->result2 = result;	/* a record's second copy (CAS) */
	}
}

/* One answer: a posted request's failure, the answer the server owes
   next, or the no-op's MN that closes its part of the batch. */
static bool take_reply(struct ab_store *store, struct server *s,
		       struct ab_store_op *ops, const struct ab_meta_reply *reply)
{
	const struct expect *e;

	if (reply->has_opaque && reply->opaque >> 16 == 0) {
		/* quiet: an add that found its key, a decrement or delete that
		   did not, are no loss; anything else is */
		if (reply->status != AB_META_NS && reply->status != AB_META_NF)
			store->stats.posts_lost++;
		return true;
	}
	if (reply->status == AB_META_ERROR) {
		/* no opaque says whose: a request of ours memcached could not
		   carry out (out of memory), or one posted before */
		return set_garbled(s, "an error line from memcached");
	}
	if (s->answered == s->expect_count) {
		if (reply->status != AB_META_MN || reply->has_opaque)
			return set_garbled(s, "an answer to no request");
		s->done = true;
		s->waiting = false;
		return true;
	}
	e = &s->expect[s->answered];
	if (!reply->has_opaque ||
	    reply->opaque != OPAQUE(store->batch, s->answered))
		return set_garbled(s, "an answer out of order");
	if (!ab_meta_fits((enum ab_meta_cmd)e->cmd, reply->status))
		return set_garbled(s, "an answer that does not fit its request");
	take_answer(&ops[e->op], &store->second[e->op], e, reply);
	s->answered++;
	return true;
}

/* Parse what the server sent, up to the batch's MN. */
static bool take_input(struct ab_store *store, struct server *s,
		       struct ab_store_op *ops)
{
	size_t pos = 0;

	while (!s->done) {
		struct ab_meta_reply reply;
		const char *error;
		long len = ab_meta_parse(s->in + pos, s->in_len - pos, &reply, &error);

		if (len == 0)
			break;
		if (len < 0)
			return set_garbled(s, error);
		pos += (size_t)len;
		if (!take_reply(store, s, ops, &reply))
			return false;
	}
	if (s->done && pos < s->in_len)
		return set_garbled(s, "more than the batch asked for");
	if (pos > 0)
		memmove(s->in, s->in + pos, s->in_len - pos);
	s->in_len -= pos;
	return true;
}

/* --- sending and receiving ------------------------------------------ */

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
		if (r <= 0) {
			s->closed_early = s->answered == 0;
			return set_failure_errno(s, "connection lost while sending");
		}
		s->out_sent += (size_t)r;
	}
	s->sending = false;
	return true;
}

/* flags: MSG_DONTWAIT, or 0 to wait until the deadline */
static bool server_read(struct ab_store *store, struct server *s,
			struct ab_store_op *ops, int flags, int64_t deadline)
{
	ssize_t r;

	while (!s->done) {
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
		if (r <= 0) {
			/* a restarted memcached closed the connection we
			   kept: nothing of this batch was answered */
			s->closed_early = s->answered == 0 && s->in_len == 0;
			if (r == 0)
				return set_failure(s, true, "connection closed by server");
			return set_failure_errno(s, "connection lost while reading");
		}
		s->in_len += (size_t)r;
		if (!take_input(store, s, ops))
			return false;
	}
	s->waiting = false;
	return true;
}

/* Wait until every server sent its batch and answered it, or until the
   deadline; those that did not are failed. */
static void wait_batch(struct ab_store *store, struct ab_store_op *ops,
		       int64_t deadline)
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
			for (i = 0; i < count; i++)
				set_failure(who[i], false, "timed out (poll_timeout)");
			return;
		}
		for (i = 0; i < count; i++) {
			struct server *s = who[i];
			bool ok = true;

			if ((pfd[i].revents & POLLOUT) != 0)
				ok = server_write(s, MSG_DONTWAIT);
			if (ok && (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0)
				(void)server_read(store, s, ops, MSG_DONTWAIT, deadline);
		}
	}
}

/* Send each server in `which` its part of the batch and take the answers
   until deadline. */
static void exchange(struct ab_store *store, struct ab_store_op *ops,
		     const bool *which, int64_t deadline)
{
	unsigned int i, used = 0;

	for (i = 0; i < store->server_count; i++)
		used += which[i];
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (!which[i])
			continue;
		s->waiting = s->done = s->closed_early = false;
		s->answered = 0;
		s->error = NULL;
		if (!server_connect(store, s))
			continue;
		s->out_sent = 0;
		s->sending = true;
		s->waiting = true;
		if (used == 1) {
			/* one server: send, then recv until its MN */
			if (server_write(s, 0))
				(void)server_read(store, s, ops, 0, deadline);
			continue;
		}
		(void)server_write(s, MSG_DONTWAIT);
	}
	if (used > 1)
		wait_batch(store, ops, deadline);
}

/* A dual op's two answers as one (see struct ab_store_op's dual). */
static void merge_second(struct ab_store_op *op, const struct second *b)
{
	enum ab_store_result a = op->result;

	if (op->cmd == AB_STORE_GETS || op->cmd == AB_STORE_CAS)
		return;		/* the caller merges records; the check is the first copy's */
	if (b->result == AB_STORE_FAILED)
		return;
	if (a == AB_STORE_FAILED) {
		op->result = b->result;
		op->out = b->out;
		return;
	}
	switch (op->cmd) {
	case AB_STORE_GETS:
	case AB_STORE_CAS:
		break;
	case AB_STORE_ADD:
		/* there already on either: not added by this call */
		if (b->result == AB_STORE_MISS)
			op->result = AB_STORE_MISS;
		break;
	case AB_STORE_GET:
	case AB_STORE_INCR:
	case AB_STORE_DECR:
	case AB_STORE_SET:
	case AB_STORE_DELETE:
		if (b->result == AB_STORE_DONE &&
		    (a != AB_STORE_DONE || b->out > op->out)) {
			op->result = AB_STORE_DONE;
			op->out = b->out;
		}
		break;
	}
}

int ab_store_run(struct ab_store *store, struct ab_store_op *ops, size_t n,
		 const char **error_r)
{
	struct server *where[2];
	bool which[AB_STORE_MAX_SERVERS], again[AB_STORE_MAX_SERVERS];
	int64_t deadline = now_ms() + store->cfg->poll_timeout_ms;
	unsigned int i, used = 0, failed = 0, copies, c;
	const char *first = NULL;
	bool retry = false;
	size_t j;

	if (n > AB_STORE_BATCH_MAX)
		return ab_error(error_r, "a batch of %zu requests: at most %d",
				n, AB_STORE_BATCH_MAX);
	if (!buffer_reserve(&store->second, &store->second_cap, n + 1,
			    AB_STORE_BATCH_MAX + 1, sizeof(*store->second)))
		return ab_error(error_r, "out of memory");
	if (++store->batch == 0)
		store->batch = 1;	/* 0 is for posted requests */
	pool_refresh(store, time(NULL));
	memset(which, 0, sizeof(which));
	memset(again, 0, sizeof(again));
	for (i = 0; i < store->server_count; i++) {
		store->server[i].out_len = 0;
		store->server[i].expect_count = 0;
		store->server[i].error = NULL;
		store->server[i].skipped = false;
		store->server[i].observed = false;
	}
	for (j = 0; j < n; j++) {
		ops[j].result = AB_STORE_FAILED;
		ops[j].out = 0;
		ops[j].out_bytes_len = 0;
		ops[j].out_bytes2_len = 0;
		ops[j].result2 = AB_STORE_FAILED;
		store->second[j].result = AB_STORE_FAILED;
		copies = servers_of(store, ops[j].key != NULL ? ops[j].key : "",
				    ops[j].dual, where);
		for (c = 0; c < copies; c++) {
			if (!put_request(where[c], &ops[j], meta_cmd(ops[j].cmd),
					 store->batch, (uint16_t)j, (uint8_t)c, false))
				return ab_error(error_r, "memcached: cannot send key '%.60s' "
						"(empty, too long, a space or control byte) or its value",
						ops[j].key != NULL ? ops[j].key : "");
		}
	}
	store->stats.ops += n;
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (s->out_len == 0)
			continue;
		used++;
		if (!breaker_admit(store, s)) {
			set_failure(s, false, "circuit breaker open");
			s->skipped = true;
			continue;
		}
		if (!put_request(s, NULL, AB_META_NOOP, store->batch, 0, 0, true))
			return ab_error(error_r, "out of memory");
		store->stats.requests++;
		s->observed = true;
		observe_begin(store, s);
		which[i] = true;
	}
	exchange(store, ops, which, deadline);
	/* a connection found closed before it answered anything (memcached
	   restarted since this process last used it): once more, on a new
	   one, within what is left of poll_timeout */
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (which[i] && s->error != NULL && s->closed_early) {
			server_close(s);
			again[i] = retry = true;
			store->stats.retried++;
		}
	}
	if (retry)
		exchange(store, ops, again, deadline);
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (s->out_len == 0)
			continue;
		if (s->observed)
			observe_end(store, s);
		if (s->error == NULL && s->done) {
			server_ok(store, s);
			continue;
		}
		if (s->error == NULL)
			set_failure(s, false, "timed out (poll_timeout)");
		if (!s->skipped)
			server_failed(store, s);	/* also closes: what is left is spoiled */
		s->sending = false;
		failed++;
		if (first == NULL) {
			snprintf(store->error, sizeof(store->error), "memcached %s: %s",
				 s->name, s->error);
			first = store->error;
		}
	}
	/* what a failed server answered of its part is not taken: the rest
	   of the batch may hang on it */
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (s->out_len == 0 || s->error == NULL)
			continue;
		for (j = 0; j < s->expect_count; j++) {
			if (s->expect[j].copy == 0) {
				ops[s->expect[j].op].result = AB_STORE_FAILED;
			} else {
				store->second[s->expect[j].op].result = AB_STORE_FAILED;
				ops[s->expect[j].op].result2 = AB_STORE_FAILED;
			}
		}
	}
	for (j = 0; j < n; j++) {
		if (ops[j].dual)
			merge_second(&ops[j], &store->second[j]);
	}
	if (failed == 0)
		return 0;
	ab_error(error_r, "%s", first);
	return failed == used ? -1 : 1;
}

void ab_store_post(struct ab_store *store, const struct ab_store_op *ops,
		   size_t n)
{
	struct server *where[2];
	unsigned int i, copies, c, count[AB_STORE_MAX_SERVERS];
	unsigned long long lost = 0;
	const char *why = NULL, *who = NULL;
	time_t now = time(NULL);
	size_t j;

	if (n == 0)
		return;
	pool_refresh(store, now);
	for (i = 0; i < store->server_count; i++) {
		store->server[i].out_len = 0;
		store->server[i].expect_count = 0;
		store->server[i].error = NULL;
		count[i] = 0;
	}
	for (j = 0; j < n && j < AB_STORE_BATCH_MAX; j++) {
		if (ops[j].cmd == AB_STORE_GET)
			continue;	/* a get has nothing to say here */
		copies = servers_of(store, ops[j].key != NULL ? ops[j].key : "",
				    ops[j].dual, where);
		for (c = 0; c < copies; c++) {
			if (put_request(where[c], &ops[j], meta_cmd(ops[j].cmd), 0,
					(uint16_t)j, (uint8_t)c, true)) {
				count[where[c] - store->server]++;
			} else {
				lost++;
				why = "a key or value that cannot be sent";
			}
		}
	}
	store->stats.ops += n;
	store->stats.posted++;
	for (i = 0; i < store->server_count; i++) {
		struct server *s = &store->server[i];

		if (count[i] == 0)
			continue;
		if (!breaker_admit(store, s)) {
			set_failure(s, false, "circuit breaker open");
		} else if (server_connect(store, s)) {
			s->out_sent = 0;
			s->sending = true;
			/* memcached reads as fast as it is written to unless
			   hung: a write that cannot finish within poll_timeout
			   fails */
			(void)server_write(s, 0);
			s->sending = false;
			if (s->error != NULL)
				server_failed(store, s);
		}
		if (s->error != NULL) {
			lost += count[i];
			why = s->error;
			who = s->name;
		}
	}
	if (lost == 0)
		return;
	store->stats.posts_lost += lost;
	if (now - store->post_logged >= POST_LOG_INTERVAL_S) {
		store_log(store, AB_LOG_WARNING,
			  "memcached %s: %llu writes sent without waiting were lost (%s); "
			  "%llu lost so far", who != NULL ? who : "-", lost, why,
			  store->stats.posts_lost);
		store->post_logged = now;
	}
}

/* --- one request at a time ------------------------------------------ */

int ab_store_mget(struct ab_store *store, const char *const *keys, size_t n,
		  uint64_t *values_r, bool *found_r, const char **error_r)
{
	struct ab_store_op *ops;
	size_t i;
	int ret;

	if (n > AB_STORE_BATCH_MAX)
		return ab_error(error_r, "mget of %zu keys: at most %d", n,
				AB_STORE_BATCH_MAX);
	if ((ops = calloc(n + 1, sizeof(*ops))) == NULL)
		return ab_error(error_r, "out of memory");
	for (i = 0; i < n; i++) {
		ops[i].cmd = AB_STORE_GET;
		ops[i].key = keys[i];
	}
	ret = ab_store_run(store, ops, n, error_r);
	for (i = 0; i < n; i++) {
		found_r[i] = ops[i].result == AB_STORE_DONE;
		values_r[i] = found_r[i] ? ops[i].out : 0;
	}
	free(ops);
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

/* A server's "evictions" statistic: memcached's text `stats`, answered
   by "STAT name value" lines and END. Answers of writes posted before it
   (only their failures) come first and are skipped. */
static bool server_evictions(struct ab_store *store, struct server *s,
			     uint64_t *evictions_r)
{
	int64_t deadline = now_ms() + store->cfg->poll_timeout_ms;
	bool found = false;

	s->error = NULL;
	if (s->ejected_until != 0 || !server_connect(store, s))
		return false;
	if (send(s->fd, "stats\r\n", 7, MSG_NOSIGNAL) != 7)
		goto fail;
	for (;;) {
		unsigned char *nl;
		ssize_t r;

		while (s->in_len > 0 && (nl = memchr(s->in, '\n', s->in_len)) != NULL) {
			size_t line = (size_t)(nl - s->in) + 1;

			if (line == 5 && memcmp(s->in, "END\r\n", 5) == 0) {
				s->in_len = 0;
				return found;
			}
			if (line > 17 && memcmp(s->in, "STAT evictions ", 15) == 0 &&
			    ab_meta_number(s->in + 15, line - 17, evictions_r))
				found = true;
			memmove(s->in, s->in + line, s->in_len - line);
			s->in_len -= line;
		}
		if (!in_room(s) || s->in_len == IN_MAX || now_ms() >= deadline)
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
