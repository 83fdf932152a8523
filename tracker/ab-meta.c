/* memcached's meta protocol, both ways (see ab-meta.h). The parser
   trusts nothing: every length is checked against what was received and
   against what authbrake itself could have stored. */
#include <stdio.h>
#include <string.h>

#include "ab-meta.h"

static bool key_ok(const char *key, size_t *len_r)
{
	size_t len = 0;

	if (key == NULL)
		return false;
	for (; key[len] != '\0'; len++) {
		unsigned char c = (unsigned char)key[len];

		if (len == AB_META_KEY_MAX || c <= ' ' || c >= 0x7f)
			return false;
	}
	*len_r = len;
	return len > 0;
}

size_t ab_meta_put(unsigned char *out, enum ab_meta_cmd cmd, const char *key,
		   const void *bytes, size_t bytes_len, uint64_t number,
		   unsigned int ttl_s, uint32_t opaque, bool quiet)
{
	char *p = (char *)out, num[24];
	const char *q = quiet ? " q" : "";
	unsigned long long n = (unsigned long long)number;
	size_t key_len;
	int len = 0;

	if (cmd == AB_META_NOOP) {
		memcpy(p, "mn\r\n", 4);
		return 4;
	}
	if (!key_ok(key, &key_len))
		return 0;
	/* the key is checked: at most AB_META_KEY_MAX printable bytes, so
	   every line below fits in AB_META_REQUEST_MAX */
	switch (cmd) {
	case AB_META_GET:
		len = sprintf(p, "mg %s v O%u%s\r\n", key, opaque, q);
		break;
	case AB_META_GETS:
		len = sprintf(p, "mg %s v c O%u%s\r\n", key, opaque, q);
		break;
	case AB_META_CAS:
		if (bytes == NULL || bytes_len > AB_META_VALUE_MAX)
			return 0;
		if (n == 0)
			len = sprintf(p, "ms %s %zu T%u ME c O%u%s\r\n", key,
				      bytes_len, ttl_s, opaque, q);
		else
			len = sprintf(p, "ms %s %zu T%u C%llu c O%u%s\r\n", key,
				      bytes_len, ttl_s, n, opaque, q);
		memcpy(p + len, bytes, bytes_len);
		len += (int)bytes_len;
		memcpy(p + len, "\r\n", 2);
		len += 2;
		break;
	case AB_META_SET:
	case AB_META_ADD:
		if (bytes == NULL) {
			bytes_len = (size_t)sprintf(num, "%llu", n);
			bytes = num;
		}
		if (bytes_len > AB_META_VALUE_MAX)
			return 0;
		len = sprintf(p, "ms %s %zu T%u%s O%u%s\r\n", key, bytes_len, ttl_s,
			      cmd == AB_META_ADD ? " ME" : "", opaque, q);
		memcpy(p + len, bytes, bytes_len);
		len += (int)bytes_len;
		memcpy(p + len, "\r\n", 2);
		len += 2;
		break;
	case AB_META_INCR:
		/* created with the delta as its value: memcached stores J on a
		   miss and does not add D to it */
		len = sprintf(p, "ma %s%s N%u J%llu D%llu O%u%s\r\n", key,
			      quiet ? "" : " v", ttl_s, n, n, opaque, q);
		break;
	case AB_META_DECR:
		len = sprintf(p, "ma %s%s MD D%llu O%u%s\r\n", key,
			      quiet ? "" : " v", n, opaque, q);
		break;
	case AB_META_DELETE:
		len = sprintf(p, "md %s O%u%s\r\n", key, opaque, q);
		break;
	case AB_META_NOOP:
		break;
	}
	return len > 0 ? (size_t)len : 0;
}

/* Digits only, at most max; true with the value. */
static bool parse_uint(const unsigned char *p, size_t len, uint64_t max,
		       uint64_t *n_r)
{
	uint64_t n = 0;
	size_t i;

	if (len == 0 || len > 20)
		return false;
	for (i = 0; i < len; i++) {
		unsigned int d;

		if (p[i] < '0' || p[i] > '9')
			return false;
		d = (unsigned int)(p[i] - '0');
		if (n > (max - d) / 10)
			return false;
		n = n * 10 + d;
	}
	*n_r = n;
	return true;
}

bool ab_meta_number(const unsigned char *value, size_t len, uint64_t *n_r)
{
	/* a decrement that loses a digit may leave the value padded with
	   spaces ("10" - 1 is "9 "): memcached's protocol.txt allows it,
	   and 1.6 does it */
	while (len > 1 && value[len - 1] == ' ')
		len--;
	return parse_uint(value, len, UINT64_MAX, n_r);
}

static long fail(const char **error_r, const char *error)
{
	*error_r = error;
	return -1;
}

long ab_meta_parse(const unsigned char *buf, size_t len,
		   struct ab_meta_reply *reply_r, const char **error_r)
{
	static const struct {
		char code[3];
		enum ab_meta_status status;
	} codes[] = {
		{ "HD", AB_META_HD }, { "VA", AB_META_VA }, { "EN", AB_META_EN },
		{ "NF", AB_META_NF }, { "NS", AB_META_NS }, { "EX", AB_META_EX },
		{ "MN", AB_META_MN },
	};
	const unsigned char *end, *p, *tok;
	size_t line_len, i, total;
	uint64_t n;
	bool known = false;

	memset(reply_r, 0, sizeof(*reply_r));
	if (len == 0)
		return 0;
	end = memchr(buf, '\n', len < AB_META_LINE_MAX ? len : AB_META_LINE_MAX);
	if (end == NULL)
		return len >= AB_META_LINE_MAX ?
			fail(error_r, "a reply line longer than any we ask for") : 0;
	if (end == buf || end[-1] != '\r')
		return fail(error_r, "a reply line not ended by CRLF");
	line_len = (size_t)(end - buf) - 1;	/* without CRLF */
	total = line_len + 2;

	/* the error strings carry no opaque: a batch they land in fails */
	if ((line_len == 5 && memcmp(buf, "ERROR", 5) == 0) ||
	    (line_len >= 12 && memcmp(buf, "CLIENT_ERROR", 12) == 0) ||
	    (line_len >= 12 && memcmp(buf, "SERVER_ERROR", 12) == 0)) {
		reply_r->status = AB_META_ERROR;
		return (long)total;
	}
	if (line_len < 2)
		return fail(error_r, "a reply line too short for a code");
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		if (memcmp(buf, codes[i].code, 2) == 0) {
			reply_r->status = codes[i].status;
			known = true;
			break;
		}
	}
	if (!known)
		return fail(error_r, "an unknown reply code");
	if (line_len > 2 && buf[2] != ' ')
		return fail(error_r, "a reply code run into its flags");

	/* tokens: VA's size first, then flags; only O is ours to read */
	p = buf + 2;
	end = buf + line_len;
	if (reply_r->status == AB_META_VA) {
		if (p == end)
			return fail(error_r, "VA without a size");
		tok = ++p;
		while (p < end && *p != ' ')
			p++;
		if (!parse_uint(tok, (size_t)(p - tok), AB_META_VALUE_MAX, &n))
			return fail(error_r, "VA with a size that is not one or too large");
		reply_r->value_len = (size_t)n;
	}
	while (p < end) {
		if (*p++ != ' ' || p == end || *p == ' ')
			return fail(error_r, "a reply with empty flags");
		tok = p;
		while (p < end && *p != ' ') {
			if (*p < 0x21 || *p > 0x7e)
				return fail(error_r, "a control byte in a reply line");
			p++;
		}
		if (*tok == 'c') {
			if (reply_r->has_cas)
				return fail(error_r, "two CAS tokens in one reply");
			if (!parse_uint(tok + 1, (size_t)(p - tok - 1), UINT64_MAX, &n))
				return fail(error_r, "a CAS token that is not a number");
			reply_r->has_cas = true;
			reply_r->cas = n;
		} else if (*tok == 'O') {
			if (reply_r->has_opaque)
				return fail(error_r, "two opaque tokens in one reply");
			if (!parse_uint(tok + 1, (size_t)(p - tok - 1), UINT32_MAX, &n))
				return fail(error_r, "an opaque token we did not send");
			reply_r->has_opaque = true;
			reply_r->opaque = (uint32_t)n;
		}
	}
	if (reply_r->status != AB_META_VA)
		return (long)total;
	if (len - total < reply_r->value_len + 2)
		return 0;	/* the value is still coming */
	if (buf[total + reply_r->value_len] != '\r' ||
	    buf[total + reply_r->value_len + 1] != '\n')
		return fail(error_r, "a value not ended by CRLF where its size says");
	reply_r->value = buf + total;
	return (long)(total + reply_r->value_len + 2);
}

bool ab_meta_fits(enum ab_meta_cmd cmd, enum ab_meta_status status)
{
	switch (cmd) {
	case AB_META_GET:
		return status == AB_META_VA || status == AB_META_EN;
	case AB_META_SET:
		return status == AB_META_HD;
	case AB_META_ADD:
		return status == AB_META_HD || status == AB_META_NS;
	case AB_META_INCR:
		/* NS: a race memcached's own lock rules out */
		return status == AB_META_VA || status == AB_META_HD ||
			status == AB_META_NS;
	case AB_META_DECR:
		return status == AB_META_VA || status == AB_META_HD ||
			status == AB_META_NF;
	case AB_META_DELETE:
		return status == AB_META_HD || status == AB_META_NF;
	case AB_META_NOOP:
		return status == AB_META_MN;
	case AB_META_GETS:
		return status == AB_META_VA || status == AB_META_EN;
	case AB_META_CAS:
		/* EX: changed since it was read; NF: gone since; NS: there
		   already when it was missing */
		return status == AB_META_HD || status == AB_META_EX ||
			status == AB_META_NF || status == AB_META_NS;
	}
	return false;
}
