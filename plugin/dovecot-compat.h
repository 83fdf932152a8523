/* What differs between the Dovecot versions authbrake-policy builds
   against: 2.3 (Debian 12, Ubuntu 24.04) and 2.4 (Debian 13). One source,
   these few lines chosen by DOVECOT_PREREQ. */
#ifndef DOVECOT_COMPAT_H
#define DOVECOT_COMPAT_H

#include "http-server.h"

#if DOVECOT_PREREQ(2, 4, 0)
/* 2.4: str_begins() also returns the rest; str_begins_with() is the test */
#  define policy_str_begins(s, prefix) str_begins_with((s), (prefix))
#else
#  define policy_str_begins(s, prefix) str_begins((s), (prefix))
#endif

/* An HTTP server for one request at a time per connection, with limits
   on its clients' idle time, bodies and targets. */
static inline struct http_server *
policy_http_server_create(unsigned int idle_msecs, uoff_t max_payload,
			  uoff_t max_target)
{
#if DOVECOT_PREREQ(2, 4, 0)
	/* 2.4 keeps a pointer to its settings, in a pool of their own that
	   http_server_deinit() releases */
	pool_t pool = pool_alloconly_create("authbrake http settings", 512);
	struct http_server_settings *set = p_new(pool, struct http_server_settings, 1);
	struct http_server *server;

	http_server_settings_init(pool, set);
	set->max_client_idle_time_msecs = idle_msecs;
	set->max_pipelined_requests = 1;
	set->request_max_payload_size = max_payload;
	set->request_max_target_length = max_target;
	server = http_server_init(set, NULL);
	pool_unref(&pool);
	return server;
#else
	struct http_server_settings set;

	i_zero(&set);
	set.max_client_idle_time_msecs = idle_msecs;
	set.max_pipelined_requests = 1;
	set.request_limits.max_payload_size = max_payload;
	set.request_limits.max_target_length = max_target;
	return http_server_init(&set);
#endif
}

#endif
