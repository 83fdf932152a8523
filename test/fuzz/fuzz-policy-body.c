/* Feeds a request body to plugin/policy-body.c's policy_body_parse(). */
#include "lib.h"

#include "policy-body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialized = FALSE;
	struct policy_body body;
	const char *error;
	pool_t pool;

	if (!initialized) {
		lib_init();
		initialized = TRUE;
	}
	pool = pool_alloconly_create("fuzz policy body", 1024);
	T_BEGIN {
		if (policy_body_parse(pool, data, size, &body, &error) < 0) {
			i_assert(error != NULL && error[0] != '\0');
		} else {
			/* what parsed is readable to its end */
			const char *const fields[] = {
				body.login, body.remote, body.real_rip,
				body.protocol, body.pwhash, body.session_id
			};
			unsigned int i;

			for (i = 0; i < N_ELEMENTS(fields); i++) {
				if (fields[i] != NULL)
					(void)strlen(fields[i]);
			}
			i_assert(body.have_success || !body.success);
		}
	} T_END;
	pool_unref(&pool);
	return 0;
}
