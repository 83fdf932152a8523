/* Parses Dovecot's auth-policy request body (tracker/ab-json.c: the same
   reader on every Dovecot version). */
#include "lib.h"

#include "ab-json.h"
#include "policy-body.h"

static int body_string(pool_t pool, const char **field, const char *key,
		       enum ab_json_type type, const char *value,
		       const char **error_r)
{
	if (*field != NULL) {
		*error_r = t_strdup_printf("duplicate key \"%s\"", key);
		return -1;
	}
	if (type == AB_JSON_NULL) {
		*field = "";
		return 0;
	}
	if (type != AB_JSON_STRING) {
		*error_r = t_strdup_printf("\"%s\" must be a string", key);
		return -1;
	}
	*field = p_strdup(pool, value);
	return 0;
}

static int body_bool(bool *seen, bool *field, const char *key,
		     enum ab_json_type type, const char **error_r)
{
	if (*seen) {
		*error_r = t_strdup_printf("duplicate key \"%s\"", key);
		return -1;
	}
	if (type != AB_JSON_TRUE && type != AB_JSON_FALSE) {
		*error_r = t_strdup_printf("\"%s\" must be true or false", key);
		return -1;
	}
	*seen = TRUE;
	*field = type == AB_JSON_TRUE;
	return 0;
}

static int body_field(pool_t pool, struct policy_body *body, bool *seen_reject,
		      const char *key, enum ab_json_type type, const char *value,
		      const char **error_r)
{
	if (strcmp(key, "login") == 0)
		return body_string(pool, &body->login, key, type, value, error_r);
	if (strcmp(key, "remote") == 0)
		return body_string(pool, &body->remote, key, type, value, error_r);
	if (strcmp(key, "real_rip") == 0)
		return body_string(pool, &body->real_rip, key, type, value, error_r);
	if (strcmp(key, "protocol") == 0)
		return body_string(pool, &body->protocol, key, type, value, error_r);
	if (strcmp(key, "pwhash") == 0)
		return body_string(pool, &body->pwhash, key, type, value, error_r);
	if (strcmp(key, "session_id") == 0)
		return body_string(pool, &body->session_id, key, type, value, error_r);
	if (strcmp(key, "success") == 0)
		return body_bool(&body->have_success, &body->success, key, type,
				 error_r);
	if (strcmp(key, "policy_reject") == 0)
		return body_bool(seen_reject, &body->policy_reject, key, type,
				 error_r);
	/* device_id, tls and whatever else the admin sends */
	return 0;
}

struct body_context {
	pool_t pool;
	struct policy_body *body;
	bool seen_reject;
};

static int body_member(void *context, const char *key, enum ab_json_type type,
		       const char *value, const char **error_r)
{
	struct body_context *ctx = context;

	return body_field(ctx->pool, ctx->body, &ctx->seen_reject, key, type,
			  value, error_r);
}

int policy_body_parse(pool_t pool, const unsigned char *data, size_t size,
		      struct policy_body *body_r, const char **error_r)
{
	struct body_context ctx = { .pool = pool, .body = body_r };
	char *scratch, *error_buf;

	i_zero(body_r);
	if (size == 0) {
		*error_r = "empty body";
		return -1;
	}
	if (memchr(data, '\0', size) != NULL) {
		*error_r = "NUL byte in body";
		return -1;
	}
	scratch = t_malloc_no0(size + 2);
	error_buf = t_malloc_no0(128);
	return ab_json_object(data, size, scratch, size + 2, body_member, &ctx,
			      error_buf, 128, error_r);
}
