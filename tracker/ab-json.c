/* A strict JSON object reader (RFC 8259) for the policy service's bodies,
   and the escaping of strings it answers with. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ab-json.h"

struct reader {
	const unsigned char *p, *start, *end;
	char *out, *out_end;
	char *error_buf;
	size_t error_size;
	const char *error;
};

static int fail(struct reader *r, const char *what)
{
	snprintf(r->error_buf, r->error_size, "malformed JSON at byte %zu: %s",
		 (size_t)(r->p - r->start), what);
	r->error = r->error_buf;
	return -1;
}

static void skip_space(struct reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' ||
				 *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int hex4(struct reader *r, uint32_t *u_r)
{
	uint32_t u = 0;
	unsigned int i;

	if (r->end - r->p < 4)
		return fail(r, "a \\u escape needs four hex digits");
	for (i = 0; i < 4; i++) {
		unsigned char c = r->p[i];

		u <<= 4;
		if (c >= '0' && c <= '9')
			u |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			u |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			u |= (uint32_t)(c - 'A' + 10);
		else
			return fail(r, "a \\u escape needs four hex digits");
	}
	r->p += 4;
	*u_r = u;
	return 0;
}

static int put(struct reader *r, const unsigned char *bytes, size_t n)
{
	if ((size_t)(r->out_end - r->out) <= n)
		return fail(r, "no room to unescape");
	memcpy(r->out, bytes, n);
	r->out += n;
	return 0;
}

static int put_code_point(struct reader *r, uint32_t u)
{
	unsigned char b[4];
	size_t n;

	if (u < 0x80) {
		b[0] = (unsigned char)u;
		n = 1;
	} else if (u < 0x800) {
		b[0] = (unsigned char)(0xc0 | (u >> 6));
		b[1] = (unsigned char)(0x80 | (u & 0x3f));
		n = 2;
	} else if (u < 0x10000) {
		b[0] = (unsigned char)(0xe0 | (u >> 12));
		b[1] = (unsigned char)(0x80 | ((u >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (u & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | (u >> 18));
		b[1] = (unsigned char)(0x80 | ((u >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((u >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (u & 0x3f));
		n = 4;
	}
	return put(r, b, n);
}

/* A string at r->p (its opening quote), unescaped into r->out and
   NUL-terminated; *value_r points at it. */
static int string(struct reader *r, const char **value_r)
{
	char *start = r->out;
	uint32_t u, low;

	r->p++;
	for (;;) {
		if (r->p >= r->end)
			return fail(r, "a string does not end");
		if (*r->p == '"') {
			r->p++;
			break;
		}
		if (*r->p < 0x20)
			return fail(r, "a control character in a string");
		if (*r->p != '\\') {
			/* bytes as they are: a login that is not UTF-8 is
			   the tracker's to judge (it counts it against the
			   address), not a reason to decide nothing */
			if (put(r, r->p, 1) < 0)
				return -1;
			r->p++;
			continue;
		}
		if (++r->p >= r->end)
			return fail(r, "a string does not end");
		switch (*r->p++) {
		case '"': u = '"'; break;
		case '\\': u = '\\'; break;
		case '/': u = '/'; break;
		case 'b': u = '\b'; break;
		case 'f': u = '\f'; break;
		case 'n': u = '\n'; break;
		case 'r': u = '\r'; break;
		case 't': u = '\t'; break;
		case 'u':
			if (hex4(r, &u) < 0)
				return -1;
			if (u >= 0xdc00 && u <= 0xdfff)
				return fail(r, "a lone low surrogate");
			if (u >= 0xd800 && u <= 0xdbff) {
				if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
					return fail(r, "a high surrogate without its low one");
				r->p += 2;
				if (hex4(r, &low) < 0)
					return -1;
				if (low < 0xdc00 || low > 0xdfff)
					return fail(r, "a high surrogate without its low one");
				u = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00);
			}
			if (u == 0)
				return fail(r, "a NUL in a string");
			break;
		default:
			r->p--;
			return fail(r, "an unknown escape in a string");
		}
		if (put_code_point(r, u) < 0)
			return -1;
	}
	if (put(r, (const unsigned char *)"", 1) < 0)
		return -1;
	*value_r = start;
	return 0;
}

static bool digit(const struct reader *r)
{
	return r->p < r->end && *r->p >= '0' && *r->p <= '9';
}

/* A number's text, checked against the grammar, copied to r->out. */
static int number(struct reader *r, const char **value_r)
{
	const unsigned char *start = r->p;
	char *out = r->out;

	if (r->p < r->end && *r->p == '-')
		r->p++;
	if (!digit(r))
		return fail(r, "a number needs a digit");
	if (*r->p == '0')
		r->p++;
	else
		while (digit(r))
			r->p++;
	if (r->p < r->end && *r->p == '.') {
		r->p++;
		if (!digit(r))
			return fail(r, "a number needs a digit after '.'");
		while (digit(r))
			r->p++;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (!digit(r))
			return fail(r, "a number needs a digit in its exponent");
		while (digit(r))
			r->p++;
	}
	if (put(r, start, (size_t)(r->p - start)) < 0 ||
	    put(r, (const unsigned char *)"", 1) < 0)
		return -1;
	*value_r = out;
	return 0;
}

static int literal(struct reader *r, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return fail(r, "expected a value");
	r->p += n;
	return 0;
}

static int value(struct reader *r, unsigned int depth, enum ab_json_type *type_r,
		 const char **value_r);

/* An object or an array, checked and dropped: what it unescaped is
   given back. */
static int nested(struct reader *r, unsigned int depth)
{
	char *mark = r->out;
	bool object = *r->p == '{', first = true;
	enum ab_json_type type;
	const char *ignored;

	if (depth >= AB_JSON_DEPTH_MAX)
		return fail(r, "nested too deep");
	r->p++;
	for (;;) {
		skip_space(r);
		if (r->p >= r->end)
			return fail(r, object ? "an object does not end" :
				    "an array does not end");
		/* after a ',' a member is required: no trailing comma */
		if (*r->p == (object ? '}' : ']')) {
			r->p++;
			break;
		}
		if (!first) {
			if (*r->p != ',')
				return fail(r, object ? "expected ',' or '}'" :
					    "expected ',' or ']'");
			r->p++;
			skip_space(r);
		}
		first = false;
		if (object) {
			if (r->p >= r->end || *r->p != '"')
				return fail(r, "expected a key");
			if (string(r, &ignored) < 0)
				return -1;
			skip_space(r);
			if (r->p >= r->end || *r->p != ':')
				return fail(r, "expected ':'");
			r->p++;
		}
		if (value(r, depth + 1, &type, &ignored) < 0)
			return -1;
		r->out = mark;
	}
	r->out = mark;
	return 0;
}

static int value(struct reader *r, unsigned int depth, enum ab_json_type *type_r,
		 const char **value_r)
{
	skip_space(r);
	*value_r = "";
	if (r->p >= r->end)
		return fail(r, "expected a value");
	switch (*r->p) {
	case '"':
		*type_r = AB_JSON_STRING;
		return string(r, value_r);
	case '{':
	case '[':
		*type_r = AB_JSON_NESTED;
		return nested(r, depth);
	case 't':
		*type_r = AB_JSON_TRUE;
		return literal(r, "true");
	case 'f':
		*type_r = AB_JSON_FALSE;
		return literal(r, "false");
	case 'n':
		*type_r = AB_JSON_NULL;
		return literal(r, "null");
	default:
		if (*r->p != '-' && (*r->p < '0' || *r->p > '9'))
			return fail(r, "expected a value");
		*type_r = AB_JSON_NUMBER;
		return number(r, value_r);
	}
}

int ab_json_object(const unsigned char *data, size_t size, char *scratch,
		   size_t scratch_size, ab_json_member_fn *member,
		   void *context, char *error_buf, size_t error_size,
		   const char **error_r)
{
	struct reader r = {
		.p = data, .start = data, .end = data + size,
		.out = scratch, .out_end = scratch + scratch_size,
		.error_buf = error_buf, .error_size = error_size,
	};
	enum ab_json_type type;
	const char *key, *val;
	bool first = true;

	skip_space(&r);
	if (r.p >= r.end || *r.p != '{') {
		fail(&r, "expected a JSON object");
		*error_r = r.error;
		return -1;
	}
	r.p++;
	for (;;) {
		char *mark = r.out;

		skip_space(&r);
		if (r.p >= r.end) {
			fail(&r, "the object does not end");
			break;
		}
		if (*r.p == '}') {
			/* after a ',' a key is required: no trailing comma */
			r.p++;
			skip_space(&r);
			if (r.p < r.end) {
				fail(&r, "something after the object");
				break;
			}
			return 0;
		}
		if (!first) {
			if (*r.p != ',') {
				fail(&r, "expected ',' or '}'");
				break;
			}
			r.p++;
			skip_space(&r);
		}
		first = false;
		if (r.p >= r.end || *r.p != '"') {
			fail(&r, "expected a key");
			break;
		}
		if (string(&r, &key) < 0)
			break;
		skip_space(&r);
		if (r.p >= r.end || *r.p != ':') {
			fail(&r, "expected ':'");
			break;
		}
		r.p++;
		if (value(&r, 1, &type, &val) < 0)
			break;
		if (member(context, key, type, val, &r.error) < 0)
			break;
		r.out = mark;
	}
	*error_r = r.error;
	return -1;
}

bool ab_json_escape(char *buf, size_t size, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = strnlen(buf, size);

	if (len >= size)
		return false;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[7];
		size_t n;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 0xf];
			n = 6;
		} else {
			esc[0] = (char)c;
			n = 1;
		}
		if (size - len <= n)
			return false;
		memcpy(buf + len, esc, n);
		len += n;
		buf[len] = '\0';
	}
	return true;
}
