/* Error sentences for the error_r convention. */
#include <stdarg.h>
#include <stdio.h>

#include "ab-error.h"

int ab_error(const char **error_r, const char *fmt, ...)
{
	static __thread char buf[1024];
	char tmp[sizeof(buf)];
	va_list args;

	if (error_r == NULL)
		return -1;
	/* fmt may quote the previous error, which lives in buf */
	va_start(args, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, args);
	va_end(args);
	snprintf(buf, sizeof(buf), "%s", tmp);
	*error_r = buf;
	return -1;
}
