/* Output for the admin tool: JSON objects written field by field (strings
   escaped, invalid UTF-8 replaced) and durations for humans. */
#ifndef CLI_OUTPUT_H
#define CLI_OUTPUT_H

#include <stdbool.h>
#include <stdio.h>

struct json_out {
	FILE *f;
	unsigned int depth;
	bool first[8];		/* per depth: no comma before the next field */
};

void json_begin(struct json_out *out, FILE *f);
/* Ends the top-level object and the line. */
void json_end(struct json_out *out);
void json_object_begin(struct json_out *out, const char *name);
void json_object_end(struct json_out *out);
/* An array of objects: json_array_begin(), then per element
   json_element_begin() ... json_object_end(), then json_array_end(). */
void json_array_begin(struct json_out *out, const char *name);
void json_array_end(struct json_out *out);
void json_element_begin(struct json_out *out);
void json_str(struct json_out *out, const char *name, const char *value);
void json_uint(struct json_out *out, const char *name, unsigned long long value);
void json_bool(struct json_out *out, const char *name, bool value);
void json_null(struct json_out *out, const char *name);

/* A JSON string literal, quotes included. */
void json_write_string(FILE *f, const char *s);

/* "42m", "1h 5m", "2d 3h", "45s": the two largest units, for humans. */
const char *human_duration(unsigned long long secs, char *buf, size_t size);

#endif
