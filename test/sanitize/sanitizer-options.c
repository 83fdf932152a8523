/* Linked only into the sanitizer builds (make check-sanitize): makes UBSan
 * follow the UBSAN_OPTIONS this process (or the host that dlopen()s the PAM
 * module) was started with, log_path included. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

const char *__ubsan_default_options(void);

static char ubsan_options[1024];

/* Two things go wrong without this, both seen with GCC 12:
 * - UBSan may read UBSAN_OPTIONS late, from /proc/self/environ, which
 *   libdovecot has overwritten with its process title by then: a copy
 *   taken before main() is handed over as UBSan's defaults.
 * - Beside ASan, UBSan runs as ASan's plugin and never applies log_path:
 *   its reports go to stderr (Dovecot's log, pamtester's output), where
 *   nothing fails a test. libubsan has its own copy of the report file, so
 *   its own __sanitizer_set_report_path() is called with the log_path. */
__attribute__((constructor))
static void sanitizer_options_apply(void)
{
	const char *value = getenv("UBSAN_OPTIONS"), *path;
	void (*set_report_path)(const char *);
	char *end;
	void *ubsan;

	if (value == NULL || strlen(value) >= sizeof(ubsan_options))
		return;
	memcpy(ubsan_options, value, strlen(value) + 1);

	path = strstr(value, "log_path=");
	ubsan = dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (path == NULL || ubsan == NULL)
		return;
	*(void **)&set_report_path = dlsym(ubsan, "__sanitizer_set_report_path");
	if (set_report_path != NULL) {
		static char log_path[1024];

		memcpy(log_path, path + strlen("log_path="),
		       strlen(path + strlen("log_path=")) + 1);
		end = strchr(log_path, ':');
		if (end != NULL)
			*end = '\0';
		set_report_path(log_path);
	}
}

const char *__ubsan_default_options(void)
{
	return ubsan_options;
}
