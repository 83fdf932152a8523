/* pam_authbrake: authbrake's decisions for a PAM stack (Courier's
   authdaemond first of all), in pam_faillock's shape: "preauth" decides
   before the real module, "authfail" and "authsucc" record its outcome.
   A thin face: it builds an attempt, asks the tracker, translates. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#include <security/pam_modules.h>
#include <security/pam_ext.h>
#include <sodium.h>

#include "ab-error.h"
#include "ab-tracker.h"

#define AB_PAM_EXPORT __attribute__((visibility("default")))

enum pam_action {
	ACTION_NONE,
	ACTION_PREAUTH,
	ACTION_AUTHFAIL,
	ACTION_AUTHSUCC,
};

/* The configuration and the tracker (its memcached connections) of one
   PAM handle: preauth makes them, and authfail, authsucc and the account
   phase of the same login use them again, so a login parses the config
   and connects once. Freed by pam_end(). */
struct pam_shared {
	char *args;		/* the arguments they were made from */
	struct ab_config cfg;
	struct ab_tracker *tracker;
};

#define SHARED_DATA "pam_authbrake_tracker"

/* One PAM call. */
struct pam_call {
	pam_handle_t *pamh;
	enum pam_action action;
	bool silent;
	struct ab_config *cfg;
	struct ab_tracker *tracker;
	struct ab_attempt attempt;
};

static void pam_log(enum ab_log_level level, const char *msg, void *ctx)
{
	static const int prio[] = {
		[AB_LOG_DEBUG] = LOG_DEBUG, [AB_LOG_INFO] = LOG_INFO,
		[AB_LOG_WARNING] = LOG_WARNING, [AB_LOG_ERROR] = LOG_ERR,
	};

	pam_syslog(ctx, prio[level], "%s", msg);
}

static const char *fail_mode_name(enum ab_fail_mode mode)
{
	return mode == AB_FAIL_OPEN ? "open" : "closed";
}

/* The action words first (so even a broken configuration knows what the
   call was for), then the config file (conf=, else the default path),
   then the other arguments as "key=value" through the same parser. */
static enum pam_action args_action(int argc, const char **argv)
{
	enum pam_action action = ACTION_NONE;
	int i;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "preauth") == 0)
			action = ACTION_PREAUTH;
		else if (strcmp(argv[i], "authfail") == 0)
			action = ACTION_AUTHFAIL;
		else if (strcmp(argv[i], "authsucc") == 0)
			action = ACTION_AUTHSUCC;
	}
	return action;
}

static bool arg_is_action(const char *arg)
{
	return strcmp(arg, "preauth") == 0 || strcmp(arg, "authfail") == 0 ||
		strcmp(arg, "authsucc") == 0 || strcmp(arg, "silent") == 0;
}

/* The arguments that make the configuration, one per line: two calls
   with the same ones can share it. NULL when out of memory. */
static char *args_key(int argc, const char **argv)
{
	size_t len = 1;
	char *key;
	int i;

	for (i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	if ((key = malloc(len)) == NULL)
		return NULL;
	key[0] = '\0';
	for (i = 0; i < argc; i++) {
		if (arg_is_action(argv[i]))
			continue;
		strcat(key, argv[i]);
		strcat(key, "\n");
	}
	return key;
}

static int args_parse(struct ab_config *cfg, int argc, const char **argv,
		      const char **error_r)
{
	const char *conf = AB_CONFIG_DEFAULT_PATH;
	int i;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "conf=", 5) == 0)
			conf = argv[i] + 5;
	}
	if (ab_config_load(cfg, conf, error_r) < 0)
		return -1;
	for (i = 0; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		char key[64];

		if (arg_is_action(argv[i]) || strncmp(argv[i], "conf=", 5) == 0)
			continue;
		if (eq == NULL || eq == argv[i] ||
		    (size_t)(eq - argv[i]) >= sizeof(key))
			return ab_error(error_r, "unknown module argument '%.80s' "
					"(use preauth, authfail, authsucc, silent, conf=FILE or key=value)",
					argv[i]);
		memcpy(key, argv[i], (size_t)(eq - argv[i]));
		key[eq - argv[i]] = '\0';
		if (ab_config_set(cfg, key, eq + 1, "module argument",
				  error_r) < 0)
			return -1;
	}
	return ab_config_validate(cfg, error_r);
}

static void shared_free(struct pam_shared *shared)
{
	ab_tracker_deinit(&shared->tracker);
	ab_config_free(&shared->cfg);
	free(shared->args);
	free(shared);
}

static void shared_cleanup(pam_handle_t *pamh, void *data, int error_status)
{
	(void)pamh;
	(void)error_status;
	shared_free(data);
}

/* When the configuration cannot be read, its fail_mode cannot be either:
   use a fail_mode= module argument if there is one, else the default
   (open). Open never opens the door: preauth returns PAM_IGNORE and the
   real module still checks the password; the brake is off and every call
   says so at LOG_ERR. Sites that would rather refuse logins while the
   brake is broken put fail_mode=closed on the preauth line.
   See pam_authbrake(8), "A broken configuration". */
static enum ab_fail_mode broken_config_fail_mode(int argc, const char **argv)
{
	enum ab_fail_mode mode = AB_FAIL_OPEN;
	int i;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "fail_mode=closed") == 0)
			mode = AB_FAIL_CLOSED;
		else if (strcmp(argv[i], "fail_mode=open") == 0)
			mode = AB_FAIL_OPEN;
	}
	return mode;
}

/* The attempt from PAM_USER, PAM_RHOST, PAM_SERVICE (and PAM_AUTHTOK for
   a failure's password fingerprint). A login or address the tracker
   refuses is left out with a notice: the other rules still apply, and the
   real module turns down a login that is not a user. */
static void attempt_build(struct pam_call *call, bool with_pw)
{
	const void *rhost = NULL, *service = NULL, *authtok = NULL;
	const char *user = NULL, *error;
	const char *pw = NULL;

	if (pam_get_user(call->pamh, &user, NULL) != PAM_SUCCESS ||
	    user == NULL || user[0] == '\0')
		user = NULL;
	(void)pam_get_item(call->pamh, PAM_RHOST, &rhost);
	(void)pam_get_item(call->pamh, PAM_SERVICE, &service);
	if (with_pw &&
	    pam_get_item(call->pamh, PAM_AUTHTOK, &authtok) == PAM_SUCCESS)
		pw = authtok;

	if (ab_attempt_init(call->tracker, &call->attempt, user, rhost,
			    service, pw, pw == NULL ? 0 : strlen(pw),
			    &error) == 0)
		goto password;
	pam_syslog(call->pamh, LOG_NOTICE, "%s; deciding without it", error);
	if (ab_attempt_init(call->tracker, &call->attempt, user, NULL,
			    service, pw, pw == NULL ? 0 : strlen(pw),
			    &error) == 0)
		goto password;
	if (ab_attempt_init(call->tracker, &call->attempt, NULL, rhost,
			    service, NULL, 0, &error) == 0)
		return;
	(void)ab_attempt_init(call->tracker, &call->attempt, NULL, NULL,
			      service, NULL, 0, &error);
	return;
password:
	/* a wrong password tried on many accounts turns campaign mode on */
	ab_attempt_set_spray_password(call->tracker, &call->attempt, pw,
				      pw == NULL ? 0 : strlen(pw));
}

/* preauth and authfail/authsucc of one login share the PAM handle: an id
   kept on it pairs the decision with its outcome, as Dovecot's session_id
   does, so the places preauth holds are settled by the outcome. */
#define SESSION_DATA "pam_authbrake_session"

static void session_cleanup(pam_handle_t *pamh, void *data, int error_status)
{
	(void)pamh;
	(void)error_status;
	free(data);
}

static void session_pair(struct pam_call *call)
{
	const void *data = NULL;
	uint8_t *id;

	if (call->action != ACTION_PREAUTH) {
		if (pam_get_data(call->pamh, SESSION_DATA, &data) == PAM_SUCCESS &&
		    data != NULL)
			ab_attempt_set_session(&call->attempt, data,
					       AB_SESSION_LEN);
		return;
	}
	if ((id = malloc(AB_SESSION_LEN)) == NULL)
		return;
	if (sodium_init() < 0) {
		free(id);
		return;
	}
	randombytes_buf(id, AB_SESSION_LEN);
	if (pam_set_data(call->pamh, SESSION_DATA, id, session_cleanup) !=
	    PAM_SUCCESS) {
		free(id);
		return;
	}
	ab_attempt_set_session(&call->attempt, id, AB_SESSION_LEN);
}

static void tarpit_sleep(unsigned int secs)
{
	struct timespec left = { .tv_sec = secs, .tv_nsec = 0 };

	while (nanosleep(&left, &left) < 0 && errno == EINTR)
		;
}

static int preauth(struct pam_call *call)
{
	struct ab_decision decision;
	char line[1024];
	unsigned int slept;

	/* a DNSBL answer memcached keeps, else a lookup of at most
	   dnsbl_timeout (nothing when dnsbl is empty) */
	ab_tracker_dnsbl_check(call->tracker, &call->attempt, 0);
	ab_tracker_allow(call->tracker, &call->attempt, time(NULL), 0, &decision);
	switch (decision.verdict) {
	case AB_ALLOW:
		return PAM_SUCCESS;
	case AB_TARPIT:
		slept = decision.delay_s < call->cfg->pam_max_delay_s ?
			decision.delay_s : call->cfg->pam_max_delay_s;
		pam_syslog(call->pamh, LOG_NOTICE, "%s slept=%us pam_max_delay=%us",
			   ab_decision_log_line(&call->attempt, &decision,
						line, sizeof(line)),
			   slept, call->cfg->pam_max_delay_s);
		tarpit_sleep(slept);
		return PAM_SUCCESS;
	case AB_REJECT:
		break;
	}
	pam_syslog(call->pamh, LOG_WARNING, "%s",
		   ab_decision_log_line(&call->attempt, &decision, line, sizeof(line)));
	if (!call->silent && decision.user_msg != NULL &&
	    decision.user_msg[0] != '\0')
		(void)pam_error(call->pamh, "%s", decision.user_msg);
	return PAM_AUTH_ERR;
}

/* A store error is logged by the tracker, through pam_log(). */
static void record(struct pam_call *call, enum ab_outcome outcome)
{
	const char *error;

	(void)ab_tracker_report(call->tracker, &call->attempt, outcome,
				time(NULL), &error);
}

/* What a call returns when the module cannot work: preauth follows
   fail_mode; authfail stays a failure (the password was wrong whatever
   the brake thinks); authsucc stays a success (recording never gates). */
static int broken_result(const struct pam_call *call, enum ab_fail_mode mode)
{
	switch (call->action) {
	case ACTION_AUTHFAIL:
		return PAM_AUTH_ERR;
	case ACTION_AUTHSUCC:
		return PAM_SUCCESS;
	default:
		return mode == AB_FAIL_OPEN ? PAM_IGNORE : PAM_AUTH_ERR;
	}
}

static const char *broken_consequence(const struct pam_call *call,
				      enum ab_fail_mode mode)
{
	if (call->action != ACTION_PREAUTH)
		return "this attempt is not recorded";
	return mode == AB_FAIL_OPEN ?
		"the brake is off, the password check goes on" :
		"logins are refused";
}

/* The configuration and tracker for these arguments: the handle's own
   when an earlier call of this login made them from the same ones, else
   new ones, kept on the handle. NULL when the configuration is broken
   (logged, *ret_r set). */
static struct pam_shared *shared_get(struct pam_call *call, int argc,
				     const char **argv, int *ret_r)
{
	struct pam_shared *shared;
	const void *data = NULL;
	const char *error;
	char *key = args_key(argc, argv);

	if (key == NULL) {
		pam_syslog(call->pamh, LOG_ERR, "out of memory; fail_mode=open: %s",
			   broken_consequence(call, AB_FAIL_OPEN));
		*ret_r = broken_result(call, AB_FAIL_OPEN);
		return NULL;
	}
	if (pam_get_data(call->pamh, SHARED_DATA, &data) == PAM_SUCCESS &&
	    data != NULL) {
		shared = (struct pam_shared *)data;
		if (strcmp(shared->args, key) == 0) {
			free(key);
			return shared;
		}
	}
	if ((shared = calloc(1, sizeof(*shared))) == NULL) {
		free(key);
		pam_syslog(call->pamh, LOG_ERR, "out of memory; fail_mode=open: %s",
			   broken_consequence(call, AB_FAIL_OPEN));
		*ret_r = broken_result(call, AB_FAIL_OPEN);
		return NULL;
	}
	shared->args = key;
	ab_config_defaults(&shared->cfg);
	if (args_parse(&shared->cfg, argc, argv, &error) < 0) {
		enum ab_fail_mode mode = broken_config_fail_mode(argc, argv);

		pam_syslog(call->pamh, LOG_ERR,
			   "configuration error: %s; fail_mode=%s (%s): %s",
			   error, fail_mode_name(mode),
			   mode == AB_FAIL_OPEN ? "the default, no fail_mode=closed module argument" :
			   "from the module arguments",
			   broken_consequence(call, mode));
		*ret_r = broken_result(call, mode);
		shared_free(shared);
		return NULL;
	}
	/* a login is a process of its own: a refusal remembered would be
	   forgotten with it (verdict_cache is for the Dovecot service) */
	shared->cfg.verdict_cache_s = 0;
	if (ab_tracker_init(&shared->cfg, pam_log, call->pamh, &shared->tracker,
			    &error) < 0) {
		pam_syslog(call->pamh, LOG_ERR, "configuration error: %s; fail_mode=%s: %s",
			   error, fail_mode_name(shared->cfg.fail_mode),
			   broken_consequence(call, shared->cfg.fail_mode));
		*ret_r = broken_result(call, shared->cfg.fail_mode);
		shared_free(shared);
		return NULL;
	}
	/* each login is a new process: what one learns of a dead or hung
	   memcached, the next knows (a file that cannot be kept costs only
	   that) */
	(void)ab_store_share_state(ab_tracker_store(shared->tracker),
				   shared->cfg.server_state_file, &error);
	/* replaces (and frees) one made from other arguments; when it
	   cannot be kept, run() frees it after this call */
	(void)pam_set_data(call->pamh, SHARED_DATA, shared, shared_cleanup);
	return shared;
}

static int run(pam_handle_t *pamh, int flags, int argc, const char **argv,
	       enum pam_action forced)
{
	struct pam_call call;
	struct pam_shared *shared;
	const void *kept = NULL;
	int ret, i;

	memset(&call, 0, sizeof(call));
	call.pamh = pamh;
	call.action = forced != ACTION_NONE ? forced : args_action(argc, argv);
	if (call.action == ACTION_NONE) {
		pam_syslog(pamh, LOG_ERR,
			   "configuration error: no action: give preauth, authfail or authsucc "
			   "as a module argument; the module is ignored");
		return PAM_IGNORE;
	}
	call.silent = (flags & PAM_SILENT) != 0;
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "silent") == 0)
			call.silent = true;
	}
	if ((shared = shared_get(&call, argc, argv, &ret)) == NULL)
		return ret;
	call.cfg = &shared->cfg;
	call.tracker = shared->tracker;

	attempt_build(&call, call.action == ACTION_AUTHFAIL);
	session_pair(&call);
	switch (call.action) {
	case ACTION_PREAUTH:
		ret = preauth(&call);
		break;
	case ACTION_AUTHFAIL:
		record(&call, AB_OUTCOME_FAILURE);
		ret = PAM_AUTH_ERR;
		break;
	default:
		record(&call, AB_OUTCOME_SUCCESS);
		ret = PAM_SUCCESS;
		break;
	}
	memset(&call.attempt, 0, sizeof(call.attempt));
	/* not kept on the handle (pam_set_data failed): this call's own */
	if (pam_get_data(pamh, SHARED_DATA, &kept) != PAM_SUCCESS ||
	    kept != shared)
		shared_free(shared);
	return ret;
}

AB_PAM_EXPORT int pam_sm_authenticate(pam_handle_t *pamh, int flags,
				      int argc, const char **argv)
{
	return run(pamh, flags, argc, argv, ACTION_NONE);
}

AB_PAM_EXPORT int pam_sm_setcred(pam_handle_t *pamh, int flags,
				 int argc, const char **argv)
{
	(void)pamh; (void)flags; (void)argc; (void)argv;
	return PAM_SUCCESS;
}

/* In the account phase the module records a success, for stacks that
   cannot run "authsucc" in the auth phase (use one or the other). */
AB_PAM_EXPORT int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags,
				   int argc, const char **argv)
{
	return run(pamh, flags, argc, argv, ACTION_AUTHSUCC);
}
