/* Logging hook: each face passes its own (Dovecot's log, pam_syslog,
   stderr) so the library never picks a destination. */
#ifndef AB_LOG_H
#define AB_LOG_H

#include <stddef.h>

enum ab_log_level {
	AB_LOG_DEBUG,
	AB_LOG_INFO,
	AB_LOG_WARNING,
	AB_LOG_ERROR,
};

typedef void ab_log_fn(enum ab_log_level level, const char *msg, void *ctx);

/* Room for any login quoted by ab_log_quote(): each byte may double,
   plus the quotes. */
#define AB_LOG_QUOTED_MAX(len) (2 * (len) + 3)

/* value in double quotes, with " and \ escaped by a backslash, for the
   key=value lines: a login cannot close its quotes and forge a field
   (account="x\" address=192.0.2.1") for a log reader such as fail2ban.
   Returns buf; cut short (still quoted) when size is too small. */
const char *ab_log_quote(const char *value, char *buf, size_t size);

#endif
