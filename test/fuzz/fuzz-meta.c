/* Feeds bytes to ab-meta.c as a memcached server's answers to a batch:
   replies parsed one after another, as the store reads them, with what
   a parsed reply promises checked against the bytes it came from. The
   input's first line is also written out as a key of every request. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ab-meta.h"
#include "fuzz-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A copy of exactly len bytes, so that ASan sees a read past them. */
static unsigned char *exact_copy(const unsigned char *p, size_t len)
{
	unsigned char *copy = malloc(len > 0 ? len : 1);

	CHECK(copy != NULL);
	if (len > 0)
		memcpy(copy, p, len);
	return copy;
}

static long parse(const unsigned char *buf, size_t len,
		  struct ab_meta_reply *reply_r)
{
	const char *error = NULL;
	long r = ab_meta_parse(buf, len, reply_r, &error);

	CHECK(r >= -1);
	CHECK(r <= (long)len);
	if (r == -1)
		CHECK(error != NULL && error[0] != '\0');
	return r;
}

/* A counter read back as memcached wrote it: the same digits without
   leading zeros (and without the spaces a decrement may leave after
   them). */
static void check_number(const unsigned char *value, size_t len)
{
	char printed[24];
	uint64_t n;
	size_t zeros = 0;

	if (!ab_meta_number(value, len, &n))
		return;
	while (len > 1 && value[len - 1] == ' ')
		len--;
	CHECK(len >= 1 && len <= 20);
	while (zeros + 1 < len && value[zeros] == '0')
		zeros++;
	snprintf(printed, sizeof(printed), "%llu", (unsigned long long)n);
	CHECK(strlen(printed) == len - zeros);
	CHECK(memcmp(printed, value + zeros, len - zeros) == 0);
}

/* What one reply of r bytes at buf (len bytes left) promises. */
static void check_reply(const unsigned char *buf, size_t len, long r,
			const struct ab_meta_reply *reply)
{
	const unsigned char *end = buf + len;

	CHECK(r > 0 && (size_t)r <= len);
	CHECK(reply->status >= AB_META_HD && reply->status <= AB_META_ERROR);
	/* an error line says nothing of whose it is */
	if (reply->status == AB_META_ERROR)
		CHECK(!reply->has_opaque);
	if (reply->status != AB_META_VA) {
		CHECK(reply->value == NULL && reply->value_len == 0);
		CHECK(buf[r - 2] == '\r' && buf[r - 1] == '\n');
		return;
	}
	CHECK(reply->value_len <= AB_META_VALUE_MAX);
	CHECK(reply->value != NULL);
	CHECK(reply->value > buf && reply->value <= end);
	CHECK(reply->value_len + 2 <= (size_t)(end - reply->value));
	/* the value is the end of the reply, and ends with CRLF */
	CHECK(reply->value + reply->value_len + 2 == buf + r);
	CHECK(reply->value[-2] == '\r' && reply->value[-1] == '\n');
	CHECK(reply->value[reply->value_len] == '\r' &&
	      reply->value[reply->value_len + 1] == '\n');
	check_number(reply->value, reply->value_len);
}

/* The reply again from exactly its own bytes: the same reply; and from
   fewer (every count when all_prefixes, else one short): not yet one,
   as a reply arrives in pieces. */
static void check_alone(const unsigned char *buf, long r,
			const struct ab_meta_reply *reply, bool all_prefixes)
{
	struct ab_meta_reply again;
	unsigned char *copy = exact_copy(buf, (size_t)r);
	size_t k;

	CHECK(parse(copy, (size_t)r, &again) == r);
	CHECK(again.status == reply->status);
	CHECK(again.has_opaque == reply->has_opaque);
	CHECK(again.opaque == reply->opaque);
	CHECK(again.value_len == reply->value_len);
	CHECK((again.value == NULL) == (reply->value == NULL));
	if (again.value != NULL)
		CHECK(again.value - copy == reply->value - buf);
	free(copy);

	for (k = all_prefixes ? 0 : (size_t)r - 1; k < (size_t)r; k++) {
		copy = exact_copy(buf, k);
		if (parse(copy, k, &again) != 0) {
			fprintf(stderr, "a reply of %ld bytes parses from its "
				"first %zu\n", r, k);
			abort();
		}
		free(copy);
	}
}

/* What memcached takes as a key, written apart from ab-meta.c's check. */
static bool key_acceptable(const char *key, size_t len)
{
	size_t i;

	if (len == 0 || len > AB_META_KEY_MAX)
		return false;
	for (i = 0; i < len; i++) {
		if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
			return false;
	}
	return true;
}

/* The first line as a key of every request: refused, or written within
   AB_META_REQUEST_MAX into a buffer of just that size. */
static void check_requests(const uint8_t *data, size_t size)
{
	static const enum ab_meta_cmd cmds[] = {
		AB_META_GET, AB_META_SET, AB_META_ADD, AB_META_INCR,
		AB_META_DECR, AB_META_DELETE, AB_META_NOOP, AB_META_GETS,
		AB_META_CAS,
	};
	const uint8_t *nl = memchr(data, '\n', size);
	size_t key_len = nl != NULL ? (size_t)(nl - data) : size, i, len;
	/* one byte more than a value may have, from the longest inputs */
	size_t value_len = size < AB_META_VALUE_MAX + 1 ? size : AB_META_VALUE_MAX + 1;
	unsigned char *out = malloc(AB_META_REQUEST_MAX);
	char *key = malloc(key_len + 1);

	CHECK(out != NULL && key != NULL);
	memcpy(key, data, key_len);
	key[key_len] = '\0';
	key_len = strlen(key);		/* a NUL ends it early */
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		len = ab_meta_put(out, cmds[i], key, data, value_len,
				  UINT64_MAX, UINT32_MAX, UINT32_MAX, i % 2 == 0);
		CHECK(len <= AB_META_REQUEST_MAX);
		if (cmds[i] != AB_META_NOOP)
			CHECK((len > 0) == (key_acceptable(key, key_len) &&
					    ((cmds[i] != AB_META_SET &&
					      cmds[i] != AB_META_ADD &&
					      cmds[i] != AB_META_CAS) ||
					     value_len <= AB_META_VALUE_MAX)));
		if (len == 0)
			continue;
		CHECK(len >= 4 && out[len - 2] == '\r' && out[len - 1] == '\n');
		if (cmds[i] == AB_META_NOOP)
			continue;
		/* the key went out whole, as the second token */
		CHECK(key_len > 0 && key_len <= AB_META_KEY_MAX);
		CHECK(memcmp(out + 3, key, key_len) == 0 &&
		      out[3 + key_len] == ' ');
	}
	free(key);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ab_meta_reply reply;
	size_t pos = 0, count = 0;
	long r;

	while (pos < size) {
		memset(&reply, 0xa5, sizeof(reply));
		r = parse(data + pos, size - pos, &reply);
		if (r <= 0)
			break;
		check_reply(data + pos, size - pos, r, &reply);
		check_alone(data + pos, r, &reply, count == 0);
		pos += (size_t)r;
		count++;
	}
	if (size > 0)
		check_requests(data, size);
	return 0;
}
