/* authbrake-policy: a Dovecot service answering the auth policy protocol
   (auth_policy_server_url). It translates HTTP+JSON into tracker/ calls;
   the policy itself lives in libauthbrake. */
#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "str-sanitize.h"
#include "ioloop.h"
#include "istream.h"
#include "http-server.h"
#include "http-request.h"
#include "master-service.h"
#include "restrict-access.h"

#include <sodium.h>

#include "ab-config.h"
#include "ab-json.h"
#include "ab-dnsbl.h"
#include "ab-tracker.h"
#include "dovecot-compat.h"
#include "policy-body.h"
#include "policy-events.h"

#define POLICY_API_KEY_MAX 256
#define POLICY_CLIENT_IDLE_MSECS (5 * 60 * 1000)

struct policy_request {
	struct http_server_request *req;
	struct istream *payload;
	struct io *io;
	bool report;
	buffer_t *body;
	/* a request refused before its body was read: answered once the body
	   is read, or lib-http holds the answer back waiting for it */
	unsigned int error_status;
	const char *error_reason, *error;
	/* a request waiting in policy_queue to be decided */
	bool queued;
	struct ab_attempt attempt;
	enum ab_outcome outcome;
	/* an allow's metrics event, begun when it was queued: its duration
	   is the decision's latency */
	struct event *event;
	/* an allow waiting for its address's DNSBL answer */
	struct ab_dnsbl_lookup *dnsbl;
	struct io *dnsbl_io;
	struct timeout *dnsbl_to;
};

/* Requests ready in one turn of the ioloop wait there to be decided
   together: their round trips to memcached are shared, so under load
   they cost less than one each. The queue is run at the end of the turn
   (a timeout of 0), or at once when full. */
static struct policy_request *policy_queue[AB_TRACKER_BATCH_MAX];
static unsigned int policy_queue_count;
static struct timeout *policy_queue_to;
/* With one client connection nothing else can be ready in this turn (one
   request at a time per connection): its request is decided at once,
   without the extra turn of the loop the queue costs. */
static unsigned int policy_connections;

static struct ab_config policy_config;
static struct ab_tracker *policy_tracker;
static char policy_api_key[POLICY_API_KEY_MAX];
static struct http_server *policy_http_server;
static struct timeout *policy_evictions_to;

#define POLICY_EVICTIONS_CHECK_MSECS (60 * 1000)

static void policy_log(enum ab_log_level level, const char *msg,
		       void *context ATTR_UNUSED)
{
	switch (level) {
	case AB_LOG_DEBUG:
		i_debug("%s", msg);
		break;
	case AB_LOG_INFO:
		i_info("%s", msg);
		break;
	case AB_LOG_WARNING:
		i_warning("%s", msg);
		break;
	case AB_LOG_ERROR:
		i_error("%s", msg);
		break;
	}
}

static void policy_reply_json(struct http_server_request *req,
			      unsigned int status, const char *reason,
			      const char *json)
{
	struct http_server_response *resp;

	resp = http_server_response_create(req, status, reason);
	http_server_response_add_header(resp, "Content-Type",
					"application/json");
	http_server_response_set_payload_data(resp, (const unsigned char *)json,
					      strlen(json));
	http_server_response_submit(resp);
}

/* s as a JSON string's contents (tracker/ab-json.c's escaping) */
static void policy_json_append(string_t *dest, const char *s)
{
	size_t size = strlen(s) * 6 + 1;
	char *buf = t_malloc0(size);

	(void)ab_json_escape(buf, size, s);	/* 6 bytes per byte always fit */
	str_append(dest, buf);
}

/* A client error: logged with its reason, answered with a JSON error,
   and nothing is recorded. close: the rest of the request cannot be
   skipped safely, so the connection ends after the answer. */
static void policy_reply_error_full(struct http_server_request *req,
				    unsigned int status, const char *reason,
				    const char *error, bool close)
{
	struct http_server_response *resp;
	string_t *json = t_str_new(128);

	i_warning("rejected policy request: %u %s: %s", status, reason, error);
	str_append(json, "{\"error\":\"");
	policy_json_append(json, error);
	str_append(json, "\"}");
	resp = http_server_response_create(req, status, reason);
	http_server_response_add_header(resp, "Content-Type",
					"application/json");
	http_server_response_set_payload_data(resp, str_data(json),
					      str_len(json));
	if (close)
		http_server_response_submit_close(resp);
	else
		http_server_response_submit(resp);
}

static void policy_reply_error(struct http_server_request *req,
			       unsigned int status, const char *reason,
			       const char *error)
{
	policy_reply_error_full(req, status, reason, error, FALSE);
}

static bool policy_api_key_ok(const struct http_request *hreq)
{
	const char *key = http_request_header_get(hreq, "X-API-Key");
	size_t len = strlen(policy_api_key);

	if (key == NULL || strlen(key) != len)
		return FALSE;
	return sodium_memcmp(key, policy_api_key, len) == 0;
}

/* "/?command=allow" → "allow"; NULL when absent. */
static const char *policy_command(const struct http_request *hreq)
{
	const char *query = strchr(hreq->target_raw, '?');
	const char *const *args;

	if (query == NULL)
		return NULL;
	for (args = t_strsplit(query + 1, "&"); *args != NULL; args++) {
		if (policy_str_begins(*args, "command="))
			return *args + 8;
	}
	return NULL;
}

/* The client's address: remote only when it came through a proxy we trust
   (Dovecot's rip can be set by a client in login_trusted_networks). */
static const char *policy_client_address(const struct policy_body *body,
					 const char **error_r)
{
	struct ab_addr proxy;

	if (body->real_rip == NULL || body->real_rip[0] == '\0' ||
	    strcmp(body->real_rip, body->remote) == 0)
		return body->remote;
	if (ab_addr_parse(body->real_rip, &proxy, error_r) < 0) {
		*error_r = t_strdup_printf("real_rip: %s", *error_r);
		return NULL;
	}
	if (ab_cidr_list_match(&policy_config.trusted_proxies, &proxy))
		return body->remote;
	return body->real_rip;
}

/* A login authbrake cannot count as an account (over 255 bytes, a
   control byte) still counts against its address: answering 400 would let
   Dovecot check the password with nothing counted. */
static int policy_attempt_init(const struct policy_body *body,
			       const char *address, struct ab_attempt *attempt_r,
			       const char **error_r)
{
	const char *login = body->login[0] == '\0' ? NULL : body->login;
	const char *protocol = body->protocol != NULL ? body->protocol : "";
	size_t pw_len = body->pwhash != NULL ? strlen(body->pwhash) : 0;
	/* 64 characters of up to 4 bytes, and the ellipsis */
	char quoted[AB_LOG_QUOTED_MAX(64 * 4 + 3)];
	const char *error;

	if (ab_attempt_init(policy_tracker, attempt_r, login, address, protocol,
			    body->pwhash, pw_len, &error) < 0) {
		if (login == NULL) {
			/* the address is what is wrong (found by fuzz-policy-http) */
			*error_r = error;
			return -1;
		}
		if (ab_attempt_init(policy_tracker, attempt_r, NULL, address,
				    protocol, NULL, 0, error_r) < 0)
			return -1;
		i_warning("%s (login %s): counted against the address only",
			  error, ab_log_quote(str_sanitize_utf8(login, 64),
					      quoted, sizeof(quoted)));
	}
	if (body->session_id != NULL && body->session_id[0] != '\0') {
		ab_attempt_set_session(attempt_r, body->session_id,
				       strlen(body->session_id));
	} else {
		/* Postfix's SASL requests carry no session, so Dovecot sends
		   an empty session_id. The attempt is then named by what its
		   allow and its report share, so that it still holds its
		   places: parallel SMTP AUTH guesses would otherwise all pass
		   before the first report. Two attempts alike in all of it
		   share one name: a place may stay held until its TTL, which
		   errs toward counting too much. */
		const char *parts[] = {
			protocol, body->login, address,
			body->pwhash != NULL ? body->pwhash : "",
		};
		string_t *id = t_str_new(128);
		unsigned int i;

		for (i = 0; i < N_ELEMENTS(parts); i++) {
			str_append(id, parts[i]);
			str_append_c(id, '\0');
		}
		ab_attempt_set_session(attempt_r, str_data(id), str_len(id));
	}
	return 0;
}

static void policy_reply_decision(struct policy_request *preq,
				  const struct ab_decision *decision)
{
	struct http_server_request *req = preq->req;
	char line[1024];

	switch (decision->verdict) {
	case AB_ALLOW:
		policy_reply_json(req, 200, "OK", "{\"status\":0}");
		return;
	case AB_TARPIT:
		i_info("%s", ab_decision_log_line(&preq->attempt, decision,
						  line, sizeof(line)));
		policy_reply_json(req, 200, "OK",
				  t_strdup_printf("{\"status\":%u}",
						  decision->delay_s));
		return;
	case AB_REJECT: {
		string_t *json = t_str_new(128);

		i_info("%s", ab_decision_log_line(&preq->attempt, decision,
						  line, sizeof(line)));
		str_append(json, "{\"status\":-1,\"msg\":\"");
		policy_json_append(json, decision->user_msg);
		str_append(json, "\"}");
		policy_reply_json(req, 200, "OK", str_c(json));
		return;
	}
	}
	i_unreached();
}

static void policy_queue_add(struct policy_request *preq);

/* The DNSBL answer is in, or dnsbl_timeout has passed: the answer is
   kept (a zone that did not answer counts as not listed, logged) and
   the request decided. */
static void policy_dnsbl_done(struct policy_request *preq)
{
	struct ab_dnsbl_result result;

	io_remove(&preq->dnsbl_io);
	timeout_remove(&preq->dnsbl_to);
	ab_dnsbl_lookup_finish(&preq->dnsbl, &result);
	T_BEGIN {
		ab_tracker_dnsbl_take(policy_tracker, &preq->attempt, &result, 0);
		policy_queue_add(preq);
	} T_END;
}

static void policy_dnsbl_input(struct policy_request *preq)
{
	if (ab_dnsbl_lookup_input(preq->dnsbl))
		policy_dnsbl_done(preq);
}

/* Look the request's address up without blocking the process; returns
   FALSE when no lookup could be sent (the attempt is then checked, as
   not listed, and decided now). */
static bool policy_dnsbl_start(struct policy_request *preq)
{
	struct ab_dnsbl *dnsbl = ab_tracker_dnsbl(policy_tracker);
	const struct ab_config *cfg = ab_tracker_config(policy_tracker);
	struct ab_dnsbl_result result;
	const char *error;

	if (ab_dnsbl_lookup_start(dnsbl, &preq->attempt.addr, &preq->dnsbl,
				  &error) < 0) {
		ab_dnsbl_result_failed(&result, error);
		ab_tracker_dnsbl_take(policy_tracker, &preq->attempt, &result, 0);
		return FALSE;
	}
	preq->dnsbl_io = io_add(ab_dnsbl_lookup_fd(preq->dnsbl), IO_READ,
				policy_dnsbl_input, preq);
	preq->dnsbl_to = timeout_add_short(cfg->dnsbl_timeout_ms,
					   policy_dnsbl_done, preq);
	return TRUE;
}

/* Allows whose address needs a DNSBL answer: the answers memcached keeps
   are read for all of them in one round trip; an address without one is
   looked up, and its request leaves the batch until the answer comes.
   Returns how many allows stay. */
static unsigned int policy_dnsbl_check(struct policy_request **allows,
				       unsigned int n_allow)
{
	struct ab_attempt *attempts[AB_TRACKER_BATCH_MAX];
	unsigned int i, n = 0;

	if (ab_tracker_dnsbl(policy_tracker) == NULL)
		return n_allow;
	for (i = 0; i < n_allow; i++)
		attempts[i] = &allows[i]->attempt;
	ab_tracker_dnsbl_cached(policy_tracker, attempts, n_allow);
	for (i = 0; i < n_allow; i++) {
		if (ab_tracker_dnsbl_wanted(policy_tracker, &allows[i]->attempt) &&
		    policy_dnsbl_start(allows[i]))
			continue;
		allows[n++] = allows[i];
	}
	return n;
}

/* Decide every request in the queue: allows together, reports together. */
static void policy_queue_run(void *context ATTR_UNUSED)
{
	struct policy_request *allows[AB_TRACKER_BATCH_MAX];
	struct policy_request *reports[AB_TRACKER_BATCH_MAX];
	const struct ab_attempt *attempts[AB_TRACKER_BATCH_MAX];
	enum ab_outcome outcomes[AB_TRACKER_BATCH_MAX];
	struct ab_decision decisions[AB_TRACKER_BATCH_MAX];
	unsigned int i, n_allow = 0, n_report = 0;
	const char *error;
	bool stored = TRUE;

	timeout_remove(&policy_queue_to);
#ifdef AB_BENCH_HTTP_FLOOR
	/* bench/ builds this service a second time with the HTTP side
	   alone: each request read, parsed and answered {"status":0}, nothing
	   asked of memcached. What it serves is the most a Dovecot service
	   can on that machine (bench/README.md, "The floor"). */
#ifdef AB_BENCH_STORE_FLOOR
	/* ... and once more with the least a shared store can cost: one
	   round trip for the batch, AB_BENCH_STORE_FLOOR reads per request
	   and nothing else (bench/README.md, "The store floor") */
	{
		static struct ab_store_op ops[AB_STORE_BATCH_MAX];
		static char keys[AB_STORE_BATCH_MAX][32];
		unsigned int n = 0, k;

		for (i = 0; i < policy_queue_count; i++) {
			for (k = 0; k < AB_BENCH_STORE_FLOOR &&
			     n < N_ELEMENTS(ops); k++, n++) {
				memset(&ops[n], 0, sizeof(ops[n]));
				i_snprintf(keys[n], sizeof(keys[n]), "ab1:bf:%u",
					   (i * AB_BENCH_STORE_FLOOR + k) % 1000);
				ops[n].cmd = AB_STORE_GET;
				ops[n].key = keys[n];
			}
		}
		(void)ab_store_run(ab_tracker_store(policy_tracker), ops, n,
				   &error);
	}
#endif
	for (i = 0; i < policy_queue_count; i++) {
		policy_queue[i]->queued = FALSE;
		policy_reply_json(policy_queue[i]->req, 200, "OK", "{\"status\":0}");
	}
	policy_queue_count = 0;
	return;
#endif
	for (i = 0; i < policy_queue_count; i++) {
		struct policy_request *preq = policy_queue[i];

		preq->queued = FALSE;
		if (preq->report)
			reports[n_report++] = preq;
		else
			allows[n_allow++] = preq;
	}
	policy_queue_count = 0;

	T_BEGIN {
		n_allow = policy_dnsbl_check(allows, n_allow);
		for (i = 0; i < n_allow; i++)
			attempts[i] = &allows[i]->attempt;
		if (n_allow > 0)
			ab_tracker_allow_many(policy_tracker, attempts, n_allow,
					      time(NULL), 0, decisions);
		for (i = 0; i < n_allow; i++) {
			policy_decision_event_send(&allows[i]->event,
						   &allows[i]->attempt, &decisions[i]);
			policy_reply_decision(allows[i], &decisions[i]);
		}

		/* Dovecot does not wait for a report's answer to go on; a
		   store error is logged by the tracker (once per
		   fail_log_interval) and changes nothing for the client. The
		   answer follows the writes, so a client that asks memcached
		   after it sees them. */
		for (i = 0; i < n_report; i++) {
			attempts[i] = &reports[i]->attempt;
			outcomes[i] = reports[i]->outcome;
		}
		if (n_report > 0)
			stored = ab_tracker_report_many(policy_tracker, attempts,
							outcomes, n_report,
							time(NULL), &error) == 0;
		for (i = 0; i < n_report; i++) {
			policy_report_event_send(&reports[i]->attempt,
				outcomes[i] == AB_OUTCOME_POLICY_REJECT ? "policy_reject" :
				outcomes[i] == AB_OUTCOME_SUCCESS ? "success" : "failure",
				stored);
			policy_reply_json(reports[i]->req, 200, "OK", "{\"status\":0}");
		}
	} T_END;
}

static void policy_queue_add(struct policy_request *preq)
{
	preq->queued = TRUE;
	policy_queue[policy_queue_count++] = preq;
	if (policy_queue_count == N_ELEMENTS(policy_queue) ||
	    policy_connections <= 1)
		policy_queue_run(NULL);
	else if (policy_queue_to == NULL)
		policy_queue_to = timeout_add_short(0, policy_queue_run, NULL);
}

/* A request gone before it was decided (its client went away). */
static void policy_queue_remove(struct policy_request *preq)
{
	unsigned int i;

	for (i = 0; i < policy_queue_count; i++) {
		if (policy_queue[i] == preq) {
			policy_queue[i] = policy_queue[--policy_queue_count];
			break;
		}
	}
	preq->queued = FALSE;
}

/* Parse and check the body; a good request joins the queue. */
static void policy_answer(struct policy_request *preq)
{
	struct http_server_request *req = preq->req;
	struct policy_body body;
	const char *address, *error;

	if (policy_body_parse(http_server_request_get_pool(req),
			      preq->body->data, preq->body->used,
			      &body, &error) < 0) {
		policy_reply_error(req, 400, "Bad Request", error);
		return;
	}
	if (body.login == NULL || body.remote == NULL) {
		policy_reply_error(req, 400, "Bad Request",
				   body.login == NULL ? "missing \"login\"" :
				   "missing \"remote\"");
		return;
	}
	if (preq->report && !body.have_success) {
		policy_reply_error(req, 400, "Bad Request",
				   "report without \"success\"");
		return;
	}
	if ((address = policy_client_address(&body, &error)) == NULL ||
	    policy_attempt_init(&body, address, &preq->attempt, &error) < 0) {
		policy_reply_error(req, 400, "Bad Request", error);
		return;
	}
	preq->outcome = body.policy_reject ? AB_OUTCOME_POLICY_REJECT :
		body.success ? AB_OUTCOME_SUCCESS : AB_OUTCOME_FAILURE;
	if (!preq->report)
		preq->event = policy_decision_event_begin();
	policy_queue_add(preq);
}

/* A request refused on its method, key or command. */
static void policy_reply_refusal(struct policy_request *preq)
{
	if (preq->error_status == 405) {
		i_warning("rejected policy request: 405 %s", preq->error);
		http_server_request_fail_bad_method(preq->req, "POST");
		return;
	}
	policy_reply_error(preq->req, preq->error_status, preq->error_reason,
			   preq->error);
}

static void policy_request_destroy(struct policy_request *preq)
{
	if (preq->queued)
		policy_queue_remove(preq);
	if (preq->dnsbl != NULL) {
		struct ab_dnsbl_result result;

		io_remove(&preq->dnsbl_io);
		timeout_remove(&preq->dnsbl_to);
		ab_dnsbl_lookup_finish(&preq->dnsbl, &result);
	}
	if (preq->event != NULL)
		event_unref(&preq->event);
	io_remove(&preq->io);
	i_stream_unref(&preq->payload);
	http_server_request_unref(&preq->req);
}

/* Reads the body ourselves rather than with lib-http's buffer_payload:
   in Dovecot 2.3.19 that one panics when a chunked body passes the limit. */
static void policy_payload_input(struct policy_request *preq)
{
	struct http_server_request *req = preq->req;
	const unsigned char *data;
	size_t size;
	int ret;

	while ((ret = i_stream_read_more(preq->payload, &data, &size)) > 0) {
		if (preq->body->used + size > POLICY_BODY_MAX_SIZE)
			break;
		buffer_append(preq->body, data, size);
		i_stream_skip(preq->payload, size);
	}
	if (ret == 0)
		return;
	io_remove(&preq->io);
	if (ret > 0 || preq->payload->stream_errno == EMSGSIZE) {
		/* the rest of the body is not read: the connection cannot go
		   on with the next request */
		policy_reply_error_full(req, 413, "Payload Too Large",
			t_strdup_printf("body over %u bytes",
					POLICY_BODY_MAX_SIZE), TRUE);
	} else if (preq->payload->stream_errno != 0) {
		policy_reply_error_full(req, 400, "Bad Request",
			t_strdup_printf("could not read the body: %s",
					i_stream_get_error(preq->payload)), TRUE);
	} else if (preq->error_status != 0) {
		policy_reply_refusal(preq);
	} else T_BEGIN {
		policy_answer(preq);
	} T_END;
}

static void policy_handle_request(void *context ATTR_UNUSED,
				  struct http_server_request *req)
{
	const struct http_request *hreq = http_server_request_get(req);
	struct policy_request *preq;
	const char *command;
	pool_t pool;

	pool = http_server_request_get_pool(req);
	preq = p_new(pool, struct policy_request, 1);
	preq->req = req;
	if (!http_request_method_is(hreq, "POST")) {
		preq->error_status = 405;
		preq->error_reason = "Method Not Allowed";
		preq->error = "only POST is answered";
	} else if (!policy_api_key_ok(hreq)) {
		preq->error_status = 401;
		preq->error_reason = "Unauthorized";
		preq->error = "missing or wrong X-API-Key";
	} else if ((command = policy_command(hreq)) == NULL ||
		   (strcmp(command, "allow") != 0 &&
		    strcmp(command, "report") != 0)) {
		preq->error_status = 400;
		preq->error_reason = "Bad Request";
		preq->error = command == NULL ? "no command in the URL" :
			p_strdup_printf(pool, "unknown command \"%s\"",
					str_sanitize_utf8(command, 32));
	} else {
		preq->report = strcmp(command, "report") == 0;
	}
	if (hreq->payload == NULL) {
		if (preq->error_status != 0)
			policy_reply_refusal(preq);
		else
			policy_reply_error(req, 400, "Bad Request", "empty body");
		return;
	}

	/* Every request with a body is read to its end (at most
	   POLICY_BODY_MAX_SIZE) before it is answered, whatever the answer:
	   lib-http sends no response before the request's body is consumed. */
	preq->body = buffer_create_dynamic(pool, 1024);
	/* our own reference: once the body has ended lib-http lets go of
	   its own, and removing our io must not free the stream we still
	   read the error of (ASan found it) */
	preq->payload = hreq->payload;
	i_stream_ref(preq->payload);
	/* released in policy_request_destroy(), after the response is sent
	   or when the client goes away first */
	http_server_request_ref(req);
	http_server_request_set_destroy_callback(req, policy_request_destroy,
						 preq);
	preq->io = io_add_istream(preq->payload, policy_payload_input, preq);
	policy_payload_input(preq);
}

static void policy_connection_destroy(void *context ATTR_UNUSED,
				      const char *reason ATTR_UNUSED)
{
	i_assert(policy_connections > 0);
	policy_connections--;
	master_service_client_connection_destroyed(master_service);
}

static const struct http_server_callbacks policy_http_callbacks = {
	.handle_request = policy_handle_request,
	.connection_destroy = policy_connection_destroy,
};

static void policy_client_connected(struct master_service_connection *conn)
{
	master_service_client_connection_accept(conn);
	policy_connections++;
	(void)http_server_connection_create(policy_http_server, conn->fd,
					    conn->fd, FALSE,
					    &policy_http_callbacks, NULL);
}

/* The HTTP side: one request at a time per connection, small bodies and
   targets (test/fuzz/fuzz-policy-http.c builds the same server). */
static struct http_server *policy_http_server_init(void)
{
	return policy_http_server_create(POLICY_CLIENT_IDLE_MSECS,
					 POLICY_BODY_MAX_SIZE, 1024);
}

static void policy_init(const char *config_path)
{
	const char *error;

	ab_config_defaults(&policy_config);
	if (ab_config_load(&policy_config, config_path, &error) < 0 ||
	    ab_config_validate(&policy_config, &error) < 0)
		i_fatal("%s", error);
	if (ab_token_load(policy_config.api_key_file, policy_api_key,
			  sizeof(policy_api_key), &error) < 0)
		i_fatal("API key: %s (the policy endpoint refuses to run "
			"without one)", error);
	if (ab_tracker_init(&policy_config, policy_log, NULL, &policy_tracker,
			    &error) < 0)
		i_fatal("%s", error);
	policy_events_init(policy_tracker);
}

int main(int argc, char *argv[])
{
	const char *config_path = AB_CONFIG_DEFAULT_PATH;
	int c;

	master_service = master_service_init("authbrake-policy",
					     MASTER_SERVICE_FLAG_NO_SSL_INIT,
					     &argc, &argv, "C:");
	while ((c = master_getopt(master_service)) > 0) {
		switch (c) {
		case 'C':
			config_path = optarg;
			break;
		default:
			return FATAL_DEFAULT;
		}
	}
	master_service_init_log(master_service);
	/* Read the config and the secrets while we may still be root. */
	policy_init(config_path);
	restrict_access_by_env(RESTRICT_ACCESS_FLAG_ALLOW_ROOT, NULL);
	restrict_access_allow_coredumps(TRUE);

	policy_http_server = policy_http_server_init();

	master_service_init_finish(master_service);
	/* lost counts and locks are worth a warning: memcached evicts */
	ab_tracker_watch_evictions(policy_tracker);
	policy_evictions_to = timeout_add(POLICY_EVICTIONS_CHECK_MSECS,
					  ab_tracker_watch_evictions,
					  policy_tracker);
	master_service_run(master_service, policy_client_connected);
	timeout_remove(&policy_evictions_to);
	timeout_remove(&policy_queue_to);

	http_server_deinit(&policy_http_server);
	ab_tracker_deinit(&policy_tracker);
	policy_events_deinit();
	ab_config_free(&policy_config);
	sodium_memzero(policy_api_key, sizeof(policy_api_key));
	master_service_deinit(&master_service);
	return 0;
}
