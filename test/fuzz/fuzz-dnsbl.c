/* Feeds bytes to ab-dnsbl.c as a DNS answer (ab_dnsbl_answer_parse) to
   the query for 2.0.0.127.bl.test, with the id the datagram carries, so
   that every input is parsed past the header. */
#include <stdint.h>
#include <string.h>

#include "ab-dnsbl.h"
#include "fuzz-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ab_dnsbl_result result;
	uint16_t id = size >= 2 ? (uint16_t)((data[0] << 8) | data[1]) : 0;

	memset(&result, 0xa5, sizeof(result));
	if (ab_dnsbl_answer_parse(data, size, id, "2.0.0.127.bl.test", &result)) {
		CHECK(result.status == AB_DNSBL_LISTED ||
		      result.status == AB_DNSBL_NOT_LISTED ||
		      result.status == AB_DNSBL_ERROR);
		/* a TTL memcached keeps: never 0 (for ever), at most a day */
		CHECK(result.ttl_s >= 1 && result.ttl_s <= AB_DNSBL_MAX_TTL);
		CHECK(memchr(result.error, '\0', sizeof(result.error)) != NULL);
		if (result.status == AB_DNSBL_LISTED)
			CHECK(result.answer[0] == 127);
	}
	return 0;
}
