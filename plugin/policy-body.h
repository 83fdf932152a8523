/* The JSON body Dovecot's auth process posts to the policy server,
   parsed strictly: what authbrake needs, or a sentence saying what is wrong. */
#ifndef POLICY_BODY_H
#define POLICY_BODY_H

/* Bodies are small (a few hundred bytes); anything larger is not Dovecot. */
#define POLICY_BODY_MAX_SIZE 8192

struct policy_body {
	/* NULL when absent; strings live in the pool given to the parser */
	const char *login, *remote, *real_rip, *protocol, *pwhash, *session_id;
	bool have_success, success;
	bool policy_reject;
};

/* Parse data into body_r. Unknown keys are ignored (Dovecot sends what the
   admin lists in auth_policy_request_attributes); known keys must have the
   right type. Returns 0, or -1 with error_r set. */
int policy_body_parse(pool_t pool, const unsigned char *data, size_t size,
		      struct policy_body *body_r, const char **error_r);

#endif
