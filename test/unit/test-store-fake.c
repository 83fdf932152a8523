/* The store (ab-store.h) against a fake memcached run in a thread of
   this test on a loopback port. The fake speaks the part of the meta
   protocol the store sends, answers from a little map of its own, and
   can be told to misbehave for a number of batches (lie about a size,
   answer out of order, send garbage or an error line, close, drip), so
   that every way a server can go wrong is tried, without a real
   memcached and without waiting on one. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ab-config.h"
#include "ab-meta.h"
#include "ab-store.h"

#define POLL_TIMEOUT_MS 200
/* a slow drip: a byte per this, so that no batch is answered within
   poll_timeout */
#define SLOW_DRIP_MS (POLL_TIMEOUT_MS / 2)
#define FAKE_ITEMS 64
#define FAKE_LINE_MAX 512

enum fake_mode {
	FAKE_WELL,		/* memcached as it is */
	FAKE_DRIP,		/* the right replies a byte at a time, 1 ms apart */
	FAKE_DRIP_SLOW,		/* the same, SLOW_DRIP_MS apart */
	FAKE_VA_OVER_MAX,	/* the first VA says AB_META_VALUE_MAX + 1 */
	FAKE_VA_SHORT,		/* the first VA says a byte less than it sends */
	FAKE_VA_LONG,		/* the first VA says a byte more */
	FAKE_SWAPPED,		/* the first two replies swapped */
	FAKE_DROPPED,		/* no reply to the first request */
	FAKE_DOUBLED,		/* the first reply twice */
	FAKE_WRONG_KIND,	/* HD to the first mg */
	FAKE_GARBAGE,		/* bytes of another protocol for the first reply */
	FAKE_SERVER_ERROR,	/* SERVER_ERROR out of memory for the first reply */
	FAKE_ERROR_AHEAD,	/* SERVER_ERROR out of memory before the replies */
	FAKE_MN_FIRST,		/* MN before the replies */
	/* the connection closed as the batch arrives, nothing of it done
	   (memcached going down) */
	FAKE_CLOSE_BEFORE,
	FAKE_CLOSE_AFTER_FIRST,	/* the first reply sent, then closed */
};

struct fake_item {
	char key[AB_META_KEY_MAX + 1];
	unsigned char value[AB_META_VALUE_MAX];
	size_t value_len;
};

/* A reply as memcached would send it, before a misbehaviour bends it. */
struct fake_reply {
	char cmd;			/* of its request: g s a d n, or 0 */
	char code[48];			/* "HD", "VA", "CLIENT_ERROR ..." */
	char flags[32];			/* " O123" */
	bool has_value;
	unsigned char value[AB_META_VALUE_MAX];
	size_t value_len;
};

struct fake {
	int listen_fd, port;
	int ctl[2];		/* the test's orders: 'd' drop the connection, 'q' quit */
	int ack[2];		/* the fake's "done" to 'd' */
	pthread_t thread;

	pthread_mutex_t lock;	/* over what follows, shared with the test */
	enum fake_mode mode;
	unsigned int mode_batches;	/* batches left to misbehave on */
	unsigned int accepts;
	unsigned int bad_requests;	/* requests memcached would refuse */
	char bad_request[200];		/* the first of them, and why */
	size_t last_batch_requests;	/* requests up to the last mn */
	bool last_batch_opaques_distinct;
	struct fake_item items[FAKE_ITEMS];
	size_t item_count;

	/* the fake thread's own */
	int conn;
	unsigned char *in;
	size_t in_len, in_cap;
	struct fake_reply *replies;
	size_t reply_count, reply_cap;
	uint64_t *opaques;		/* of the batch under way */
	size_t opaque_count, opaque_cap, request_count;
	unsigned char *out;
	size_t out_len, out_cap;
};

static struct fake fake_a, fake_b;

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
	size_t n = *cap > 0 ? *cap : 16;

	if (need <= *cap)
		return p;
	while (n < need)
		n *= 2;
	p = realloc(p, n * size);
	if (p == NULL)
		abort();	/* in the fake's thread, where cmocka cannot fail a test */
	*cap = n;
	return p;
}

/* --- the fake's map (under its lock) --------------------------------- */

static struct fake_item *fake_find(struct fake *f, const char *key)
{
	size_t i;

	for (i = 0; i < f->item_count; i++) {
		if (strcmp(f->items[i].key, key) == 0)
			return &f->items[i];
	}
	return NULL;
}

static void fake_store(struct fake *f, const char *key,
		       const unsigned char *value, size_t len)
{
	struct fake_item *item = fake_find(f, key);

	if (item == NULL) {
		if (f->item_count == FAKE_ITEMS)
			abort();	/* a test asks too much of the fake */
		item = &f->items[f->item_count++];
		snprintf(item->key, sizeof(item->key), "%s", key);
	}
	memcpy(item->value, value, len);
	item->value_len = len;
}

static void fake_remove(struct fake *f, struct fake_item *item)
{
	*item = f->items[--f->item_count];
}

/* --- requests ----------------------------------------------------------- */

/* What the store wrote in one request. */
struct request {
	char cmd;			/* g s a d n */
	const char *key;
	size_t len;			/* ms: the value's */
	bool v, q, mode_add, mode_decr;
	bool has_o, has_t, has_n, has_j, has_d;
	uint64_t o, t, n, j, d;
	const char *o_token;
};

static void fake_bad(struct fake *f, const char *line, const char *why)
{
	if (f->bad_requests++ == 0)
		snprintf(f->bad_request, sizeof(f->bad_request), "'%.100s': %s",
			 line, why);
}

static bool digits(const char *s, uint64_t *n_r)
{
	return ab_meta_number((const unsigned char *)s, strlen(s), n_r);
}

/* Parse a request line (tokens split at single spaces). NULL, or why
   memcached would refuse it, or why it is not what the store sends. */
static const char *parse_request(char **tok, size_t count, struct request *r)
{
	size_t i, first_flag;

	memset(r, 0, sizeof(*r));
	if (strcmp(tok[0], "mn") == 0) {
		r->cmd = 'n';
		return count == 1 ? NULL : "mn takes nothing";
	}
	if (strcmp(tok[0], "mg") == 0)
		r->cmd = 'g';
	else if (strcmp(tok[0], "ms") == 0)
		r->cmd = 's';
	else if (strcmp(tok[0], "ma") == 0)
		r->cmd = 'a';
	else if (strcmp(tok[0], "md") == 0)
		r->cmd = 'd';
	else
		return "not a meta command of ours";
	if (count < 2 || strlen(tok[1]) > AB_META_KEY_MAX)
		return "no key, or a key too long";
	r->key = tok[1];
	first_flag = 2;
	if (r->cmd == 's') {
		uint64_t len;

		if (count < 3 || !digits(tok[2], &len) || len > AB_META_VALUE_MAX)
			return "ms without a size we take";
		r->len = (size_t)len;
		first_flag = 3;
	}
	for (i = first_flag; i < count; i++) {
		const char *arg = tok[i] + 1;
		bool *has = NULL;
		uint64_t *n = NULL;

		switch (tok[i][0]) {
		case 'v':
			if (r->v || *arg != '\0' || (r->cmd != 'g' && r->cmd != 'a'))
				return "a v flag out of place";
			r->v = true;
			continue;
		case 'q':
			if (r->q || *arg != '\0')
				return "a q flag out of place";
			r->q = true;
			continue;
		case 'M':
			if (r->mode_add || r->mode_decr)
				return "duplicate flag";
			if (r->cmd == 's' && strcmp(arg, "E") == 0)
				r->mode_add = true;
			else if (r->cmd == 'a' && strcmp(arg, "D") == 0)
				r->mode_decr = true;
			else
				return "a mode we do not send";
			continue;
		case 'O': has = &r->has_o; n = &r->o; r->o_token = arg; break;
		case 'T': if (r->cmd == 's') { has = &r->has_t; n = &r->t; } break;
		case 'N': if (r->cmd == 'a') { has = &r->has_n; n = &r->n; } break;
		case 'J': if (r->cmd == 'a') { has = &r->has_j; n = &r->j; } break;
		case 'D': if (r->cmd == 'a') { has = &r->has_d; n = &r->d; } break;
		default: break;
		}
		if (has == NULL)
			return "a flag the store does not send here";
		if (*has)
			return "duplicate flag";
		if (!digits(arg, n))
			return "a flag without its number";
		*has = true;
	}
	/* what the store always sends */
	if (!r->has_o)
		return "no opaque";
	if (r->cmd == 'g' && !r->v)
		return "mg without v";
	if (r->cmd == 's' && !r->has_t)
		return "ms without T";
	if (r->cmd == 'a' && (!r->has_d || r->has_j != r->has_n ||
			      (r->mode_decr && r->has_n)))
		return "ma without D, J without N or N with MD";
	if (!r->q && r->cmd == 'a' && !r->v)
		return "ma waited for without v";
	return NULL;
}

static struct fake_reply *fake_reply(struct fake *f, char cmd,
				     const char *code, const struct request *r)
{
	struct fake_reply *reply;

	f->replies = grow(f->replies, &f->reply_cap, f->reply_count + 1,
			  sizeof(*f->replies));
	reply = &f->replies[f->reply_count++];
	memset(reply, 0, sizeof(*reply));
	reply->cmd = cmd;
	snprintf(reply->code, sizeof(reply->code), "%s", code);
	if (r != NULL && r->o_token != NULL)
		snprintf(reply->flags, sizeof(reply->flags), " O%s", r->o_token);
	return reply;
}

static void fake_value_reply(struct fake *f, const struct request *r,
			     const unsigned char *value, size_t len)
{
	struct fake_reply *reply = fake_reply(f, r->cmd, "VA", r);

	reply->has_value = true;
	memcpy(reply->value, value, len);
	reply->value_len = len;
}

/* Carry out one request as memcached 1.6 does; its reply, unless quiet
   keeps it back (q holds back HD, and a get's EN; nothing else). */
static void fake_execute(struct fake *f, const struct request *r,
			 const unsigned char *data)
{
	struct fake_item *item = r->cmd != 'n' ? fake_find(f, r->key) : NULL;
	unsigned char num[24];
	uint64_t n;
	size_t len;

	switch (r->cmd) {
	case 'g':
		if (item != NULL)
			fake_value_reply(f, r, item->value, item->value_len);
		else if (!r->q)
			fake_reply(f, 'g', "EN", r);
		return;
	case 's':
		if (r->mode_add && item != NULL) {
			fake_reply(f, 's', "NS", r);
			return;
		}
		fake_store(f, r->key, data, r->len);
		if (!r->q)
			fake_reply(f, 's', "HD", r);
		return;
	case 'a':
		if (item == NULL && !r->has_n) {
			fake_reply(f, 'a', "NF", r);	/* q or not (1.6.18) */
			return;
		}
		if (item == NULL) {
			n = r->j;
		} else if (!ab_meta_number(item->value, item->value_len, &n)) {
			fake_reply(f, 'a', "CLIENT_ERROR cannot increment or "
				   "decrement non-numeric value", NULL);
			return;
		} else if (r->mode_decr) {
			n = n < r->d ? 0 : n - r->d;
		} else {
			n += r->d;	/* wraps, as memcached's does */
		}
		len = (size_t)snprintf((char *)num, sizeof(num), "%llu",
				       (unsigned long long)n);
		fake_store(f, r->key, num, len);
		if (r->q)
			return;
		if (r->v)
			fake_value_reply(f, r, num, len);
		else
			fake_reply(f, 'a', "HD", r);
		return;
	case 'd':
		if (item != NULL)
			fake_remove(f, item);
		if (item == NULL)
			fake_reply(f, 'd', "NF", r);	/* q or not (1.6.18) */
		else if (!r->q)
			fake_reply(f, 'd', "HD", r);
		return;
	case 'n':
		fake_reply(f, 'n', "MN", NULL);
		return;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The batch's requests seen (at its mn): how many, and whether every
   opaque waited for is its own. */
static void fake_batch_seen(struct fake *f)
{
	size_t i;

	qsort(f->opaques, f->opaque_count, sizeof(*f->opaques), cmp_u64);
	f->last_batch_opaques_distinct = true;
	for (i = 1; i < f->opaque_count; i++) {
		if (f->opaques[i] == f->opaques[i - 1])
			f->last_batch_opaques_distinct = false;
	}
	f->last_batch_requests = f->request_count;
	f->opaque_count = f->request_count = 0;
}

/* --- replies ------------------------------------------------------------ */

static void out_put(struct fake *f, const void *p, size_t len)
{
	f->out = grow(f->out, &f->out_cap, f->out_len + len, 1);
	memcpy(f->out + f->out_len, p, len);
	f->out_len += len;
}

/* A reply on the wire; a VA's size told as size (not its length when a
   misbehaviour lies). */
static void out_reply(struct fake *f, const struct fake_reply *r, size_t size)
{
	char line[128];
	int len;

	if (r->has_value)
		len = snprintf(line, sizeof(line), "VA %zu%s\r\n", size, r->flags);
	else
		len = snprintf(line, sizeof(line), "%s%s\r\n", r->code, r->flags);
	out_put(f, line, (size_t)len);
	if (r->has_value) {
		out_put(f, r->value, r->value_len);
		out_put(f, "\r\n", 2);
	}
}

/* Does the mode bend one reply (the first, or the first of a kind)? */
static bool fake_bends_a_reply(enum fake_mode mode, const struct fake_reply *r)
{
	switch (mode) {
	case FAKE_VA_OVER_MAX:
	case FAKE_VA_SHORT:
	case FAKE_VA_LONG:
		return r->has_value;
	case FAKE_WRONG_KIND:
		return r->cmd == 'g';
	case FAKE_DROPPED:
	case FAKE_DOUBLED:
	case FAKE_GARBAGE:
	case FAKE_SERVER_ERROR:
		return true;
	default:
		return false;
	}
}

/* The batch's replies as the mode makes them; *first_end_r: where the
   first one ends. */
static void fake_build(struct fake *f, enum fake_mode mode, size_t *first_end_r)
{
	static const char garbage[] = "\x16\x03\x01\x00\xa5\x01\x00garbage\r\n";
	static const char error[] = "SERVER_ERROR out of memory storing object\r\n";
	const struct fake_reply *r;
	size_t count = f->reply_count, bend, i;

	for (bend = 0; bend < count; bend++) {
		if (fake_bends_a_reply(mode, &f->replies[bend]))
			break;
	}
	f->out_len = 0;
	*first_end_r = 0;
	if (mode == FAKE_MN_FIRST && count > 0)
		out_reply(f, &f->replies[--count], 0);
	if (mode == FAKE_ERROR_AHEAD)
		out_put(f, error, sizeof(error) - 1);
	for (i = 0; i < count; i++) {
		r = &f->replies[i];
		if (mode == FAKE_SWAPPED && count >= 3 && i < 2)
			r = &f->replies[1 - i];
		if (i != bend) {
			out_reply(f, r, r->value_len);
		} else if (mode == FAKE_VA_OVER_MAX) {
			out_reply(f, r, AB_META_VALUE_MAX + 1);
		} else if (mode == FAKE_VA_SHORT) {
			out_reply(f, r, r->value_len - 1);
		} else if (mode == FAKE_VA_LONG) {
			out_reply(f, r, r->value_len + 1);
		} else if (mode == FAKE_DOUBLED) {
			out_reply(f, r, r->value_len);
			out_reply(f, r, r->value_len);
		} else if (mode == FAKE_WRONG_KIND) {
			out_put(f, "HD", 2);
			out_put(f, r->flags, strlen(r->flags));
			out_put(f, "\r\n", 2);
		} else if (mode == FAKE_GARBAGE) {
			out_put(f, garbage, sizeof(garbage) - 1);
		} else if (mode == FAKE_SERVER_ERROR) {
			out_put(f, error, sizeof(error) - 1);
		}
		/* FAKE_DROPPED: nothing */
		if (i == 0)
			*first_end_r = f->out_len;
	}
	f->reply_count = 0;
}

/* Wait ms, or less when the client closed the connection: false then. */
static bool fake_pause(struct fake *f, int ms)
{
	struct pollfd pfd = { .fd = f->conn, .events = POLLIN };
	unsigned char c;
	ssize_t r;

	if (poll(&pfd, 1, ms) <= 0)
		return true;
	r = recv(f->conn, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
		return false;
	usleep((useconds_t)ms * 1000);	/* bytes of a next batch: not yet */
	return true;
}

/* Send len bytes, all at once or a byte every gap_ms. */
static bool fake_send(struct fake *f, const unsigned char *p, size_t len,
		      int gap_ms)
{
	while (len > 0) {
		ssize_t r = send(f->conn, p, gap_ms > 0 ? 1 : len, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		p += r;
		len -= (size_t)r;
		if (gap_ms > 0 && len > 0 && !fake_pause(f, gap_ms))
			return false;
	}
	return true;
}

/* The batch's mn came: its replies go out. False: the connection is
   closed. */
static bool fake_answer(struct fake *f, enum fake_mode mode)
{
	size_t first_end;

	fake_build(f, mode, &first_end);
	switch (mode) {
	case FAKE_CLOSE_AFTER_FIRST:
		(void)fake_send(f, f->out, first_end, 0);
		return false;
	case FAKE_DRIP:
		return fake_send(f, f->out, f->out_len, 1);
	case FAKE_DRIP_SLOW:
		(void)fake_send(f, f->out, f->out_len, SLOW_DRIP_MS);
		return false;	/* whatever came of it, the client gave up */
	default:
		return fake_send(f, f->out, f->out_len, 0);
	}
}

/* The mode for the batch under way (taken at its mn, or as it arrives
   for FAKE_CLOSE_BEFORE). */
static enum fake_mode fake_mode_now(struct fake *f)
{
	return f->mode_batches > 0 ? f->mode : FAKE_WELL;
}

/* Take the whole requests received; false: the connection is closed. */
static bool fake_take(struct fake *f)
{
	char line[FAKE_LINE_MAX + 1], *tok[40];
	size_t pos = 0;
	bool open = true;

	while (open) {
		unsigned char *nl = memchr(f->in + pos, '\n', f->in_len - pos);
		size_t line_len, count = 0, need, i;
		struct request r;
		const char *why;
		char *p;

		if (nl == NULL)
			break;
		line_len = (size_t)(nl - (f->in + pos)) + 1;
		pthread_mutex_lock(&f->lock);
		if (fake_mode_now(f) == FAKE_CLOSE_BEFORE) {
			/* gone before it read the batch: nothing done */
			f->mode_batches--;
			pthread_mutex_unlock(&f->lock);
			return false;
		}
		if (line_len < 2 || nl[-1] != '\r' || line_len - 2 > FAKE_LINE_MAX) {
			fake_bad(f, "", "a line not ended by CRLF, or too long");
			pthread_mutex_unlock(&f->lock);
			return false;
		}
		memcpy(line, f->in + pos, line_len - 2);
		line[line_len - 2] = '\0';
		for (p = line; count < 40; ) {
			tok[count++] = p;
			if ((p = strchr(p, ' ')) == NULL)
				break;
			*p++ = '\0';
		}
		why = NULL;
		for (i = 0; i < count && why == NULL; i++) {
			if (tok[i][0] == '\0')
				why = "an empty token";
		}
		if (why == NULL)
			why = parse_request(tok, count, &r);
		if (why != NULL) {
			fake_bad(f, line, why);
			fake_reply(f, 0, "CLIENT_ERROR bad command line format", NULL);
			pos += line_len;
			pthread_mutex_unlock(&f->lock);
			continue;
		}
		need = line_len + (r.cmd == 's' ? r.len + 2 : 0);
		if (f->in_len - pos < need) {
			pthread_mutex_unlock(&f->lock);
			break;	/* the value is still coming */
		}
		if (r.cmd == 's' && memcmp(f->in + pos + line_len + r.len, "\r\n", 2) != 0) {
			fake_bad(f, line, "a value not ended by CRLF");
			pthread_mutex_unlock(&f->lock);
			return false;
		}
		if (r.cmd != 'n') {
			f->request_count++;
			if (!r.q) {
				f->opaques = grow(f->opaques, &f->opaque_cap,
						  f->opaque_count + 1, sizeof(*f->opaques));
				f->opaques[f->opaque_count++] = r.o;
			}
		}
		fake_execute(f, &r, f->in + pos + line_len);
		pos += need;
		if (r.cmd == 'n') {
			enum fake_mode mode = fake_mode_now(f);

			if (f->mode_batches > 0)
				f->mode_batches--;
			fake_batch_seen(f);
			pthread_mutex_unlock(&f->lock);
			open = fake_answer(f, mode);
			continue;
		}
		pthread_mutex_unlock(&f->lock);
	}
	memmove(f->in, f->in + pos, f->in_len - pos);
	f->in_len -= pos;
	return open;
}

static void fake_close_conn(struct fake *f)
{
	if (f->conn >= 0)
		close(f->conn);
	f->conn = -1;
	f->in_len = 0;
	f->reply_count = 0;
	f->opaque_count = f->request_count = 0;
}

/* Serve one connection until either side closes it. False: told to quit. */
static bool fake_serve(struct fake *f)
{
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = f->conn, .events = POLLIN },
			{ .fd = f->ctl[0], .events = POLLIN },
		};
		ssize_t r;
		char c;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return true;
		}
		if (pfd[1].revents != 0) {
			if (read(f->ctl[0], &c, 1) != 1 || c == 'q')
				return false;
			/* a restart: the connection and the data go */
			fake_close_conn(f);
			pthread_mutex_lock(&f->lock);
			f->item_count = 0;
			pthread_mutex_unlock(&f->lock);
			if (write(f->ack[1], "d", 1) != 1)
				abort();
			return true;
		}
		f->in = grow(f->in, &f->in_cap, f->in_len + 65536, 1);
		r = recv(f->conn, f->in + f->in_len, f->in_cap - f->in_len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return true;
		f->in_len += (size_t)r;
		if (!fake_take(f))
			return true;
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = f->listen_fd, .events = POLLIN },
			{ .fd = f->ctl[0], .events = POLLIN },
		};
		bool go;
		char c;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			abort();
		}
		if (pfd[1].revents != 0) {
			if (read(f->ctl[0], &c, 1) != 1 || c == 'q')
				break;
			/* a restart with no connection: only the data go */
			pthread_mutex_lock(&f->lock);
			f->item_count = 0;
			pthread_mutex_unlock(&f->lock);
			if (write(f->ack[1], "d", 1) != 1)
				abort();
			continue;
		}
		f->conn = accept(f->listen_fd, NULL, NULL);
		if (f->conn < 0)
			continue;
		pthread_mutex_lock(&f->lock);
		f->accepts++;
		pthread_mutex_unlock(&f->lock);
		go = fake_serve(f);
		fake_close_conn(f);
		if (!go)
			break;
	}
	return NULL;
}

/* --- the fake, seen from the test --------------------------------------- */

static void fake_start(struct fake *f)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(f, 0, sizeof(*f));
	f->conn = -1;
	pthread_mutex_init(&f->lock, NULL);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->listen_fd >= 0);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(f->listen_fd, 16), 0);
	assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&sin, &len), 0);
	f->port = ntohs(sin.sin_port);
	assert_int_equal(pipe(f->ctl), 0);
	assert_int_equal(pipe(f->ack), 0);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	if (write(f->ctl[1], "q", 1) != 1)
		abort();
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
	close(f->ctl[0]);
	close(f->ctl[1]);
	close(f->ack[0]);
	close(f->ack[1]);
	free(f->in);
	free(f->replies);
	free(f->opaques);
	free(f->out);
	pthread_mutex_destroy(&f->lock);
}

/* Well-behaved and empty again (its connection, if any, stays). */
static void fake_reset(struct fake *f)
{
	pthread_mutex_lock(&f->lock);
	f->mode = FAKE_WELL;
	f->mode_batches = 0;
	f->item_count = 0;
	f->bad_requests = 0;
	f->bad_request[0] = '\0';
	pthread_mutex_unlock(&f->lock);
}

static void fake_misbehave(struct fake *f, enum fake_mode mode,
			   unsigned int batches)
{
	pthread_mutex_lock(&f->lock);
	f->mode = mode;
	f->mode_batches = batches;
	pthread_mutex_unlock(&f->lock);
}

/* memcached restarted between two batches: the connection closed by the
   server, its data gone. Returns once it is closed. */
static void fake_restart(struct fake *f)
{
	char c;

	assert_int_equal(write(f->ctl[1], "d", 1), 1);
	assert_int_equal(read(f->ack[0], &c, 1), 1);
}

static unsigned int fake_accepts(struct fake *f)
{
	unsigned int n;

	pthread_mutex_lock(&f->lock);
	n = f->accepts;
	pthread_mutex_unlock(&f->lock);
	return n;
}

/* What the fake holds under key, as a string ("" when missing). */
static const char *fake_value(struct fake *f, const char *key)
{
	static char buf[AB_META_VALUE_MAX + 1];
	struct fake_item *item;

	pthread_mutex_lock(&f->lock);
	buf[0] = '\0';
	if ((item = fake_find(f, key)) != NULL) {
		memcpy(buf, item->value, item->value_len);
		buf[item->value_len] = '\0';
	}
	pthread_mutex_unlock(&f->lock);
	return buf;
}

/* The last batch as the fake saw it: its requests, and whether their
   opaques were all different. */
static size_t fake_last_batch(struct fake *f, bool *distinct_r)
{
	size_t n;

	pthread_mutex_lock(&f->lock);
	n = f->last_batch_requests;
	*distinct_r = f->last_batch_opaques_distinct;
	pthread_mutex_unlock(&f->lock);
	return n;
}

/* Every request the store wrote was one memcached takes, and of the form
   the store sends. */
static void assert_fake_clean(struct fake *f)
{
	pthread_mutex_lock(&f->lock);
	if (f->bad_requests > 0) {
		char why[sizeof(f->bad_request)];

		memcpy(why, f->bad_request, sizeof(why));
		pthread_mutex_unlock(&f->lock);
		fail_msg("the fake memcached refused a request: %s", why);
	}
	pthread_mutex_unlock(&f->lock);
}

/* --- the store ------------------------------------------------------------ */

static void make_config(struct ab_config *cfg, const char *servers)
{
	const char *error;
	char ms[16];

	ab_config_defaults(cfg);
	snprintf(ms, sizeof(ms), "%dms", POLL_TIMEOUT_MS);
	assert_int_equal(ab_config_set(cfg, "memcached_servers", servers, "test", &error), 0);
	assert_int_equal(ab_config_set(cfg, "poll_timeout", ms, "test", &error), 0);
	/* one store meets every misbehaviour in a row: no breaker */
	assert_int_equal(ab_config_set(cfg, "breaker_failures", "1000", "test", &error), 0);
}

/* The store under test, and its config (which it points to); a test
   that fails leaves them to teardown, so that the fake is not held by
   a connection nobody will close. */
static struct ab_config test_cfg;
static struct ab_store *test_store;

static struct ab_store *store_on_servers(const char *servers)
{
	const char *error;

	make_config(&test_cfg, servers);
	if (ab_store_init(&test_cfg, NULL, NULL, &test_store, &error) < 0)
		fail_msg("%s", error);
	return test_store;
}

static struct ab_store *store_on(const struct fake *f)
{
	char servers[32];

	snprintf(servers, sizeof(servers), "127.0.0.1:%d", f->port);
	return store_on_servers(servers);
}

static void store_close(void)
{
	if (test_store == NULL)
		return;
	ab_store_deinit(&test_store);
	ab_config_free(&test_cfg);
}

static int group_setup(void **state)
{
	(void)state;
	fake_start(&fake_a);
	fake_start(&fake_b);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	fake_stop(&fake_a);
	fake_stop(&fake_b);
	return 0;
}

static int setup(void **state)
{
	(void)state;
	fake_reset(&fake_a);
	fake_reset(&fake_b);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	store_close();
	assert_fake_clean(&fake_a);
	assert_fake_clean(&fake_b);
	return 0;
}

static void op_init(struct ab_store_op *op, enum ab_store_cmd cmd,
		    const char *key, uint64_t value, unsigned int ttl_s)
{
	memset(op, 0, sizeof(*op));
	op->cmd = cmd;
	op->key = key;
	op->value = value;
	op->ttl_s = ttl_s;
	op->result = AB_STORE_DONE;	/* the store must say otherwise */
	op->out = 12345;
}

static int run(struct ab_store *store, struct ab_store_op *ops, size_t n,
	       const char **error_r)
{
	*error_r = NULL;
	return ab_store_run(store, ops, n, error_r);
}

static void assert_op(const struct ab_store_op *op, enum ab_store_result result,
		      uint64_t out)
{
	if (op->result != result)
		fail_msg("%s: result %d, not %d", op->key, op->result, result);
	if (result == AB_STORE_DONE && op->cmd != AB_STORE_SET &&
	    op->cmd != AB_STORE_ADD && op->cmd != AB_STORE_DELETE &&
	    op->out != out)
		fail_msg("%s: %llu, not %llu", op->key,
			 (unsigned long long)op->out, (unsigned long long)out);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "k1" = 42 on a connection of the store's (its first batch). */
static void prime(struct ab_store *store)
{
	struct ab_store_op op;
	const char *error;

	op_init(&op, AB_STORE_SET, "k1", 42, 60);
	if (run(store, &op, 1, &error) != 0)
		fail_msg("%s", error);
	assert_op(&op, AB_STORE_DONE, 0);
}

/* What must follow a batch the server spoiled: the next one, against a
   server behaving again, on a new connection. */
static void assert_next_batch_fine(struct ab_store *store, struct fake *f,
				   unsigned int accepts_before)
{
	struct ab_store_op ops[2];
	const char *error;

	op_init(&ops[0], AB_STORE_GET, "k1", 0, 0);
	op_init(&ops[1], AB_STORE_GET, "k3", 0, 0);
	if (run(store, ops, 2, &error) != 0)
		fail_msg("the batch after: %s", error);
	assert_op(&ops[0], AB_STORE_DONE, 42);
	assert_op(&ops[1], AB_STORE_MISS, 0);
	assert_int_equal(fake_accepts(f), accepts_before + 1);
}

/* Every kind of request in one batch, executed in order, each answered
   by its own reply. */
static void test_batch_answered_in_order(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	struct ab_store_op ops[12];
	const char *error;
	unsigned int accepts;
	bool distinct;

	(void)state;
	op_init(&ops[0], AB_STORE_SET, "a", 42, 60);
	op_init(&ops[1], AB_STORE_GET, "a", 0, 0);
	op_init(&ops[2], AB_STORE_GET, "missing", 0, 0);
	op_init(&ops[3], AB_STORE_ADD, "a", 9, 60);		/* there: MISS */
	op_init(&ops[4], AB_STORE_ADD, "b", 7, 60);
	op_init(&ops[5], AB_STORE_INCR, "c", 3, 60);		/* created: 3 */
	op_init(&ops[6], AB_STORE_INCR, "c", 2, 60);
	op_init(&ops[7], AB_STORE_DECR, "c", 10, 0);		/* never below 0 */
	op_init(&ops[8], AB_STORE_DECR, "missing", 1, 0);	/* not created */
	op_init(&ops[9], AB_STORE_DELETE, "b", 0, 0);
	op_init(&ops[10], AB_STORE_DELETE, "b", 0, 0);
	op_init(&ops[11], AB_STORE_GET, "b", 0, 0);
	if (run(store, ops, 12, &error) != 0)
		fail_msg("%s", error);
	assert_op(&ops[0], AB_STORE_DONE, 0);
	assert_op(&ops[1], AB_STORE_DONE, 42);
	assert_op(&ops[2], AB_STORE_MISS, 0);
	assert_op(&ops[3], AB_STORE_MISS, 0);
	assert_op(&ops[4], AB_STORE_DONE, 0);
	assert_op(&ops[5], AB_STORE_DONE, 3);
	assert_op(&ops[6], AB_STORE_DONE, 5);
	assert_op(&ops[7], AB_STORE_DONE, 0);
	assert_op(&ops[8], AB_STORE_MISS, 0);
	assert_op(&ops[9], AB_STORE_DONE, 0);
	assert_op(&ops[10], AB_STORE_MISS, 0);
	assert_op(&ops[11], AB_STORE_MISS, 0);
	assert_string_equal(fake_value(&fake_a, "a"), "42");
	assert_string_equal(fake_value(&fake_a, "c"), "0");
	assert_string_equal(fake_value(&fake_a, "missing"), "");
	assert_int_equal(fake_last_batch(&fake_a, &distinct), 12);
	assert_true(distinct);

	/* the connection is kept for the next batch */
	accepts = fake_accepts(&fake_a);
	op_init(&ops[0], AB_STORE_GET, "a", 0, 0);
	op_init(&ops[1], AB_STORE_GET, "c", 0, 0);
	assert_int_equal(run(store, ops, 2, &error), 0);
	assert_op(&ops[0], AB_STORE_DONE, 42);
	assert_op(&ops[1], AB_STORE_DONE, 0);
	assert_int_equal(fake_accepts(&fake_a), accepts);
	store_close();
}

/* An increment that creates its key answers the delta, as memcached's
   J (initial value) is not then incremented by D. */
static void test_incr_creates_with_delta(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	const char *error;
	uint64_t v = 0;

	(void)state;
	assert_int_equal(ab_store_incr(store, "n", 5, 60, &v, &error), 0);
	assert_int_equal(v, 5);
	assert_string_equal(fake_value(&fake_a, "n"), "5");
	assert_int_equal(ab_store_incr(store, "n", 5, 60, &v, &error), 0);
	assert_int_equal(v, 10);
	assert_int_equal(ab_store_incr(store, "one", 1, 60, &v, &error), 0);
	assert_int_equal(v, 1);
	store_close();
}

/* The largest batch: every request answered, in order. */
static void test_largest_batch(void **state)
{
	static struct ab_store_op ops[AB_STORE_BATCH_MAX];
	static char keys[AB_STORE_BATCH_MAX / 2][16];
	struct ab_store *store = store_on(&fake_a);
	const char *error;
	size_t i, half = AB_STORE_BATCH_MAX / 2;
	bool distinct;

	(void)state;
	for (i = 0; i < half; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%zu", i % FAKE_ITEMS);
		op_init(&ops[i], AB_STORE_INCR, keys[i], 1, 60);
		op_init(&ops[half + i], AB_STORE_GET, keys[i], 0, 0);
	}
	if (run(store, ops, AB_STORE_BATCH_MAX, &error) != 0)
		fail_msg("%s", error);
	for (i = 0; i < half; i++) {
		/* each of FAKE_ITEMS keys incremented half / FAKE_ITEMS times */
		assert_op(&ops[i], AB_STORE_DONE, i / FAKE_ITEMS + 1);
		assert_op(&ops[half + i], AB_STORE_DONE, half / FAKE_ITEMS);
	}
	assert_int_equal(fake_last_batch(&fake_a, &distinct), AB_STORE_BATCH_MAX);
	assert_true(distinct);
	store_close();
}

/* Writes posted without waiting are carried out before the next batch,
   whose replies come after what memcached says of them (an add that
   found its key). */
static void test_posted_writes_before_next_batch(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	struct ab_store_stats before, after;
	struct ab_store_op posted[4], ops[3];
	const char *error;

	(void)state;
	prime(store);
	ab_store_get_stats(store, &before);
	op_init(&posted[0], AB_STORE_INCR, "p", 2, 60);
	op_init(&posted[1], AB_STORE_ADD, "k1", 7, 60);		/* there: NS */
	op_init(&posted[2], AB_STORE_DECR, "missing", 1, 0);	/* NF */
	op_init(&posted[3], AB_STORE_SET, "s", 5, 60);
	ab_store_post(store, posted, 4);
	op_init(&ops[0], AB_STORE_GET, "p", 0, 0);
	op_init(&ops[1], AB_STORE_GET, "s", 0, 0);
	op_init(&ops[2], AB_STORE_GET, "k1", 0, 0);
	if (run(store, ops, 3, &error) != 0)
		fail_msg("%s", error);
	assert_op(&ops[0], AB_STORE_DONE, 2);
	assert_op(&ops[1], AB_STORE_DONE, 5);
	assert_op(&ops[2], AB_STORE_DONE, 42);
	ab_store_get_stats(store, &after);
	assert_int_equal(after.posts_lost, before.posts_lost);
	assert_int_equal(after.failures, before.failures);
	store_close();
}

/* A server that answers wrong spoils its batch, all of it, and only
   that batch: the connection is closed and the next batch gets a new
   one. */
static void test_wrong_answers_fail_the_batch(void **state)
{
	static const struct {
		enum fake_mode mode;
		const char *what;
	} cases[] = {
		{ FAKE_VA_OVER_MAX, "a VA size over AB_META_VALUE_MAX" },
		{ FAKE_VA_SHORT, "a VA size a byte short of the value" },
		{ FAKE_VA_LONG, "a VA size a byte over the value" },
		{ FAKE_SWAPPED, "the first two replies swapped" },
		{ FAKE_DROPPED, "no reply to the first request" },
		{ FAKE_DOUBLED, "the first reply twice" },
		{ FAKE_WRONG_KIND, "HD to an mg" },
		{ FAKE_GARBAGE, "garbage bytes" },
		{ FAKE_SERVER_ERROR, "SERVER_ERROR out of memory" },
		{ FAKE_ERROR_AHEAD, "SERVER_ERROR out of memory, then the replies" },
		{ FAKE_MN_FIRST, "MN before the replies" },
		{ FAKE_CLOSE_AFTER_FIRST, "closed after the first reply" },
	};
	struct ab_store *store;
	struct ab_store_op ops[3];
	const char *error;
	unsigned int accepts;
	size_t i, j;
	int ret;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fake_reset(&fake_a);
		store = store_on(&fake_a);
		prime(store);
		accepts = fake_accepts(&fake_a);

		fake_misbehave(&fake_a, cases[i].mode, 1);
		op_init(&ops[0], AB_STORE_GET, "k1", 0, 0);
		op_init(&ops[1], AB_STORE_INCR, "k2", 1, 60);
		op_init(&ops[2], AB_STORE_GET, "k3", 0, 0);
		ret = run(store, ops, 3, &error);
		if (ret != -1)
			fail_msg("%s: ab_store_run() returned %d", cases[i].what, ret);
		assert_non_null(error);
		print_message("  %s: %s\n", cases[i].what, error);
		for (j = 0; j < 3; j++) {
			if (ops[j].result != AB_STORE_FAILED)
				fail_msg("%s: %s is %d, not failed", cases[i].what,
					 ops[j].key, ops[j].result);
		}
		assert_next_batch_fine(store, &fake_a, accepts);
		store_close();
	}
}

/* A connection found closed before any reply came (memcached went down
   as the batch arrived): the batch goes once more on a new connection. */
static void test_closed_before_any_reply_retried_once(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	struct ab_store_stats before, after;
	struct ab_store_op ops[2];
	const char *error;
	unsigned int accepts;

	(void)state;
	prime(store);
	accepts = fake_accepts(&fake_a);
	ab_store_get_stats(store, &before);
	fake_misbehave(&fake_a, FAKE_CLOSE_BEFORE, 1);
	op_init(&ops[0], AB_STORE_GET, "k1", 0, 0);
	op_init(&ops[1], AB_STORE_INCR, "k2", 3, 60);
	if (run(store, ops, 2, &error) != 0)
		fail_msg("%s", error);
	assert_op(&ops[0], AB_STORE_DONE, 42);
	assert_op(&ops[1], AB_STORE_DONE, 3);	/* done once */
	assert_int_equal(fake_accepts(&fake_a), accepts + 1);
	ab_store_get_stats(store, &after);
	assert_int_equal(after.retried - before.retried, 1);

	/* closed again on the retry: failed, and not tried a third time */
	accepts = fake_accepts(&fake_a);
	before = after;
	fake_misbehave(&fake_a, FAKE_CLOSE_BEFORE, 2);
	op_init(&ops[0], AB_STORE_GET, "k1", 0, 0);
	op_init(&ops[1], AB_STORE_INCR, "k2", 3, 60);
	assert_int_equal(run(store, ops, 2, &error), -1);
	assert_non_null(error);
	print_message("  closed twice: %s\n", error);
	assert_op(&ops[0], AB_STORE_FAILED, 0);
	assert_op(&ops[1], AB_STORE_FAILED, 0);
	assert_int_equal(fake_accepts(&fake_a), accepts + 1);
	ab_store_get_stats(store, &after);
	assert_int_equal(after.retried - before.retried, 1);
	assert_string_equal(fake_value(&fake_a, "k2"), "3");	/* not done */

	assert_next_batch_fine(store, &fake_a, accepts + 1);
	store_close();
}

/* Closed after some replies came: those requests were carried out, so
   the batch is not sent again (an increment would count twice). */
static void test_closed_after_a_reply_not_retried(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	struct ab_store_stats before, after;
	struct ab_store_op ops[3];
	const char *error;
	unsigned int accepts;

	(void)state;
	prime(store);
	accepts = fake_accepts(&fake_a);
	ab_store_get_stats(store, &before);
	fake_misbehave(&fake_a, FAKE_CLOSE_AFTER_FIRST, 1);
	op_init(&ops[0], AB_STORE_GET, "k1", 0, 0);
	op_init(&ops[1], AB_STORE_INCR, "k2", 1, 60);
	op_init(&ops[2], AB_STORE_INCR, "k2", 1, 60);
	assert_int_equal(run(store, ops, 3, &error), -1);
	assert_op(&ops[0], AB_STORE_FAILED, 0);
	assert_op(&ops[1], AB_STORE_FAILED, 0);
	assert_op(&ops[2], AB_STORE_FAILED, 0);
	assert_int_equal(fake_accepts(&fake_a), accepts);
	ab_store_get_stats(store, &after);
	assert_int_equal(after.retried, before.retried);
	assert_string_equal(fake_value(&fake_a, "k2"), "2");
	assert_next_batch_fine(store, &fake_a, accepts);
	store_close();
}

/* memcached restarted between two batches: the kept connection is found
   closed, and the next batch goes on a new one. */
static void test_restart_between_batches(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	struct ab_store_stats before, after;
	struct ab_store_op op;
	const char *error;
	unsigned int accepts;
	int round;

	(void)state;
	for (round = 0; round < 3; round++) {
		op_init(&op, AB_STORE_INCR, "k", 4, 60);
		if (run(store, &op, 1, &error) != 0)
			fail_msg("round %d, before: %s", round, error);
		assert_op(&op, AB_STORE_DONE, 4);
		accepts = fake_accepts(&fake_a);
		ab_store_get_stats(store, &before);

		fake_restart(&fake_a);
		op_init(&op, AB_STORE_INCR, "k", 4, 60);
		if (run(store, &op, 1, &error) != 0)
			fail_msg("round %d, after the restart: %s", round, error);
		assert_op(&op, AB_STORE_DONE, 4);	/* the data went with it */
		assert_int_equal(fake_accepts(&fake_a), accepts + 1);
		ab_store_get_stats(store, &after);
		assert_int_equal(after.retried - before.retried, 1);
		assert_int_equal(after.failures, before.failures);
		fake_restart(&fake_a);
	}
	store_close();
}

/* Replies a byte at a time: read whole however they are cut. */
static void test_drip(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	struct ab_store_op ops[3];
	const char *error;
	int64_t start;

	(void)state;
	prime(store);
	fake_misbehave(&fake_a, FAKE_DRIP, 1);
	op_init(&ops[0], AB_STORE_GET, "k1", 0, 0);
	op_init(&ops[1], AB_STORE_INCR, "k2", 3, 60);
	op_init(&ops[2], AB_STORE_GET, "k3", 0, 0);
	start = now_ms();
	if (run(store, ops, 3, &error) != 0)
		fail_msg("%s", error);
	print_message("  dripped in %lld ms\n", (long long)(now_ms() - start));
	assert_op(&ops[0], AB_STORE_DONE, 42);
	assert_op(&ops[1], AB_STORE_DONE, 3);
	assert_op(&ops[2], AB_STORE_MISS, 0);
	store_close();
}

/* Replies slower than poll_timeout: given up on at poll_timeout. */
static void test_slow_drip_times_out(void **state)
{
	struct ab_store *store = store_on(&fake_a);
	struct ab_store_op ops[2];
	const char *error;
	unsigned int accepts;
	int64_t start, took;

	(void)state;
	prime(store);
	accepts = fake_accepts(&fake_a);
	fake_misbehave(&fake_a, FAKE_DRIP_SLOW, 1);
	op_init(&ops[0], AB_STORE_GET, "k1", 0, 0);
	op_init(&ops[1], AB_STORE_INCR, "k2", 1, 60);
	start = now_ms();
	assert_int_equal(run(store, ops, 2, &error), -1);
	took = now_ms() - start;
	assert_non_null(error);
	print_message("  gave up after %lld ms: %s\n", (long long)took, error);
	assert_true(took < POLL_TIMEOUT_MS + 1000);
	assert_op(&ops[0], AB_STORE_FAILED, 0);
	assert_op(&ops[1], AB_STORE_FAILED, 0);
	assert_next_batch_fine(store, &fake_a, accepts);
	store_close();
}

/* Two servers, one of which spoils its part: 1, and only its requests
   failed. */
static void test_one_of_two_servers_spoils(void **state)
{
	enum { N = 16 };
	struct ab_store *store;
	struct ab_store_op ops[N];
	char servers[64], keys[N][8];
	const char *error;
	bool on_b[N];
	size_t i, count_b = 0;

	(void)state;
	snprintf(servers, sizeof(servers), "127.0.0.1:%d,127.0.0.1:%d",
		 fake_a.port, fake_b.port);
	store = store_on_servers(servers);
	for (i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "s%zu", i);
		op_init(&ops[i], AB_STORE_SET, keys[i], i, 60);
	}
	assert_int_equal(run(store, ops, N, &error), 0);
	for (i = 0; i < N; i++) {
		on_b[i] = fake_value(&fake_b, keys[i])[0] != '\0';
		assert_true(on_b[i] != (fake_value(&fake_a, keys[i])[0] != '\0'));
		count_b += on_b[i];
	}
	assert_true(count_b > 0 && count_b < N);

	fake_misbehave(&fake_b, FAKE_GARBAGE, 1);
	for (i = 0; i < N; i++)
		op_init(&ops[i], AB_STORE_GET, keys[i], 0, 0);
	assert_int_equal(run(store, ops, N, &error), 1);
	print_message("  %zu of %d keys on the server that spoiled: %s\n",
		      count_b, N, error);
	for (i = 0; i < N; i++)
		assert_op(&ops[i], on_b[i] ? AB_STORE_FAILED : AB_STORE_DONE, i);

	for (i = 0; i < N; i++)
		op_init(&ops[i], AB_STORE_GET, keys[i], 0, 0);
	assert_int_equal(run(store, ops, N, &error), 0);
	for (i = 0; i < N; i++)
		assert_op(&ops[i], AB_STORE_DONE, i);
	store_close();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_batch_answered_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incr_creates_with_delta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_largest_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_posted_writes_before_next_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_answers_fail_the_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_before_any_reply_retried_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_after_a_reply_not_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_between_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_drip_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_of_two_servers_spoils, setup, teardown),
	};

	return cmocka_run_group_tests_name("store-fake", tests, group_setup,
					   group_teardown);
}
