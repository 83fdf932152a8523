/* memcached's meta protocol (doc/protocol.txt in memcached's source):
   requests written into a buffer, replies parsed out of one. No I/O and
   no state, so that the parser can be fed any bytes a server might send
   (test/fuzz/fuzz-meta.c) and the store (ab-store.c) only moves them. */
#ifndef AB_META_H
#define AB_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ab_meta_cmd {
	AB_META_GET,		/* mg KEY v */
	AB_META_SET,		/* ms KEY LEN T */
	AB_META_ADD,		/* ms KEY LEN T ME: only when missing */
	AB_META_INCR,		/* ma KEY v N J D: created with the delta */
	AB_META_DECR,		/* ma KEY v MD D: never below 0, never created */
	AB_META_DELETE,		/* md KEY */
	AB_META_NOOP,		/* mn: its MN closes a batch */
	AB_META_GETS,		/* mg KEY v c: the value and its CAS token */
	/* ms KEY LEN T C<cas> c: stored only when the item is still as read
	   (cas 0: only when missing, ME); answers the new CAS token */
	AB_META_CAS,
};

enum ab_meta_status {
	AB_META_HD,		/* done, no value */
	AB_META_VA,		/* done, with a value */
	AB_META_EN,		/* mg: a miss */
	AB_META_NF,		/* not found */
	AB_META_NS,		/* not stored: an add whose key exists */
	AB_META_EX,		/* a CAS mismatch */
	AB_META_MN,		/* the no-op's answer */
	AB_META_ERROR,		/* ERROR, CLIENT_ERROR or SERVER_ERROR */
};

/* The largest value written or accepted: authbrake's values are a
   number, a sealed `authbrake list` entry or an identity's record
   (ab-record.h). A reply announcing more is not a reply to us. */
#define AB_META_VALUE_MAX 2048
/* The longest key memcached takes. */
#define AB_META_KEY_MAX 250
/* The longest request: the command line and a value. */
#define AB_META_REQUEST_MAX (AB_META_KEY_MAX + 96 + AB_META_VALUE_MAX)
/* The longest reply line we accept (ours are short; memcached's error
   strings too). */
#define AB_META_LINE_MAX 512

struct ab_meta_reply {
	enum ab_meta_status status;
	bool has_opaque;
	uint32_t opaque;
	/* the c flag: the item's CAS token */
	bool has_cas;
	uint64_t cas;
	/* AB_META_VA: the value, pointing into the parsed buffer */
	const unsigned char *value;
	size_t value_len;
};

/* Append one request to out (room for AB_META_REQUEST_MAX bytes).
   number: INCR/DECR's delta, or the value of a SET/ADD when bytes is
   NULL (written in decimal, as memcached keeps counters), or CAS's
   token; ttl_s: SET, ADD, CAS, and INCR when it creates. quiet: memcached answers only what is
   not a success (posted requests). Returns the bytes written, or 0 when
   the key or value cannot be sent (empty, too long, a space or control
   byte in the key, a value over AB_META_VALUE_MAX). */
size_t ab_meta_put(unsigned char *out, enum ab_meta_cmd cmd, const char *key,
		   const void *bytes, size_t bytes_len, uint64_t number,
		   unsigned int ttl_s, uint32_t opaque, bool quiet);

/* Parse the first reply in buf[0..len). Returns its length (> 0), 0 when
   more bytes are needed, or -1 when no server of ours sends this
   (*error_r says what was wrong). A reply never reaches past len. */
long ab_meta_parse(const unsigned char *buf, size_t len,
		   struct ab_meta_reply *reply_r, const char **error_r);

/* Is status an answer a request of this kind can get? */
bool ab_meta_fits(enum ab_meta_cmd cmd, enum ab_meta_status status);

/* A value as memcached keeps a counter: 1 to 20 decimal digits, no more
   than UINT64_MAX, perhaps padded with spaces after a decrement. */
bool ab_meta_number(const unsigned char *value, size_t len, uint64_t *n_r);

#endif
