/* Quoting for log lines that carry what a client sent (a login). */
#include "ab-log.h"

const char *ab_log_quote(const char *value, char *buf, size_t size)
{
	size_t n = 0;

	if (size < 3) {
		if (size > 0)
			buf[0] = '\0';
		return buf;
	}
	buf[n++] = '"';
	for (; *value != '\0'; value++) {
		size_t need = (*value == '"' || *value == '\\') ? 2 : 1;

		/* keep room for the closing quote and the NUL */
		if (n + need + 2 > size)
			break;
		if (need == 2)
			buf[n++] = '\\';
		buf[n++] = *value;
	}
	buf[n++] = '"';
	buf[n] = '\0';
	return buf;
}
