/* A JSON object of members, as Dovecot's auth policy sends it: strict
   RFC 8259 syntax, strings unescaped (bytes that are not UTF-8 are kept as
   they are, for the tracker to judge: ab_attempt_init()). Pure code, no
   I/O and no Dovecot: the policy service reads its bodies with it on every
   Dovecot version, and test/fuzz/fuzz-json.c feeds it anything. */
#ifndef AB_JSON_H
#define AB_JSON_H

#include <stdbool.h>
#include <stddef.h>

enum ab_json_type {
	AB_JSON_STRING,
	AB_JSON_NUMBER,
	AB_JSON_TRUE,
	AB_JSON_FALSE,
	AB_JSON_NULL,
	AB_JSON_NESTED,		/* an object or an array: checked, not given */
};

/* Nesting deeper than this is refused. */
#define AB_JSON_DEPTH_MAX 32

/* One member: its key and value, unescaped and NUL-terminated (a
   string's value; a number's text; "" for the others). Return -1 with
   *error_r to stop. */
typedef int ab_json_member_fn(void *context, const char *key,
			      enum ab_json_type type, const char *value,
			      const char **error_r);

/* Parse data (size bytes, no NUL needed) as one JSON object and call
   member for each of its members, in order. scratch takes the unescaped
   keys and strings: size + 2 bytes always suffice. Returns 0, or -1 with
   *error_r saying what is wrong and where ("at byte N"), in error_buf. */
int ab_json_object(const unsigned char *data, size_t size, char *scratch,
		   size_t scratch_size, ab_json_member_fn *member,
		   void *context, char *error_buf, size_t error_size,
		   const char **error_r);

/* Append s as a JSON string's contents (no quotes) to buf of size, NUL
   included; false when it does not fit. Control characters, '"' and '\'
   are escaped; other bytes are copied. */
bool ab_json_escape(char *buf, size_t size, const char *s);

#endif
