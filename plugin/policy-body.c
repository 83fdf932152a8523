/* Parses Dovecot's auth-policy request body with Dovecot's own json-parser. */
#include "lib.h"
#include "istream.h"
#include "json-parser.h"

#include "policy-body.h"

static int body_string(pool_t pool, const char **field, const char *key,
		       enum json_type type, const char *value,
		       const char **error_r)
{
	if (*field != NULL) {
		*error_r = t_strdup_printf("duplicate key \"%s\"", key);
		return -1;
	}
	if (type == JSON_TYPE_NULL) {
		*field = "";
		return 0;
	}
	if (type != JSON_TYPE_STRING) {
		*error_r = t_strdup_printf("\"%s\" must be a string", key);
		return -1;
	}
	*field = p_strdup(pool, value);
	return 0;
}

static int body_bool(bool *seen, bool *field, const char *key,
		     enum json_type type, const char **error_r)
{
	if (*seen) {
		*error_r = t_strdup_printf("duplicate key \"%s\"", key);
		return -1;
	}
	if (type != JSON_TYPE_TRUE && type != JSON_TYPE_FALSE) {
		*error_r = t_strdup_printf("\"%s\" must be true or false", key);
		return -1;
	}
	*seen = TRUE;
	*field = type == JSON_TYPE_TRUE;
	return 0;
}

static int body_field(pool_t pool, struct policy_body *body, bool *seen_reject,
		      const char *key, enum json_type type, const char *value,
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

int policy_body_parse(pool_t pool, const unsigned char *data, size_t size,
		      struct policy_body *body_r, const char **error_r)
{
	struct istream *input;
	struct json_parser *parser;
	enum json_type type;
	const char *key, *value, *error = NULL, *parse_error;
	bool seen_reject = FALSE;
	int ret;

	i_zero(body_r);
	if (size == 0) {
		*error_r = "empty body";
		return -1;
	}
	if (memchr(data, '\0', size) != NULL) {
		*error_r = "NUL byte in body";
		return -1;
	}
	input = i_stream_create_from_data(data, size);
	parser = json_parser_init(input);
	while ((ret = json_parse_next(parser, &type, &key)) > 0) {
		if (type != JSON_TYPE_OBJECT_KEY) {
			error = "expected a JSON object of key/value pairs";
			break;
		}
		key = t_strdup(key);
		if (json_parse_next(parser, &type, &value) <= 0) {
			error = t_strdup_printf("no value for key \"%s\"", key);
			break;
		}
		if (type == JSON_TYPE_OBJECT || type == JSON_TYPE_ARRAY)
			json_parse_skip(parser);
		if (body_field(pool, body_r, &seen_reject, key, type, value,
			       &error) < 0)
			break;
	}
	if (json_parser_deinit(&parser, &parse_error) < 0 && error == NULL)
		error = t_strdup_printf("malformed JSON: %s", parse_error);
	i_stream_unref(&input);
	if (error != NULL) {
		*error_r = error;
		return -1;
	}
	return 0;
}
