/* Logging hook: each face passes its own (Dovecot's log, pam_syslog,
   stderr) so the library never picks a destination. */
#ifndef AB_LOG_H
#define AB_LOG_H

enum ab_log_level {
	AB_LOG_DEBUG,
	AB_LOG_INFO,
	AB_LOG_WARNING,
	AB_LOG_ERROR,
};

typedef void ab_log_fn(enum ab_log_level level, const char *msg, void *ctx);

#endif
