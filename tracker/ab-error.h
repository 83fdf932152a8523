/* Error sentences for the error_r convention: one per-thread buffer,
   valid until the next error in the same thread. */
#ifndef AB_ERROR_H
#define AB_ERROR_H

/* Set *error_r (when error_r is not NULL) and return -1. */
int ab_error(const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
