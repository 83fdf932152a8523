/* Feeds raw client bytes to authbrake-policy's request handler through a real lib-http http_server over a socketpair; reads the answer. */

/* plugin/authbrake-policy.c as it is, compiled in (its main() renamed by
   -Dmain=policy_main) so its static handler can be reached. Only its
   master-service glue (policy_client_connected/_connection_destroy) is
   left out: the harness hands the fd to lib-http itself. memcached is
   not there (127.0.0.1:1): every decision is fail_mode's, and the breaker
   and libmemcached's dead-server state carry over between inputs. */
int policy_main(int argc, char *argv[]);
#include "../../plugin/authbrake-policy.c"

#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_API_KEY "fuzz-api-key-0123456789"
#define FUZZ_RUN_MSECS 2000

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_client {
	int fd;
	struct io *io;
	buffer_t *answer;
	bool conn_destroyed, eof;
};

static struct ioloop *fuzz_ioloop;

static void ATTR_FORMAT(2, 0)
fuzz_log_quiet(const struct failure_context *ctx ATTR_UNUSED,
	       const char *format ATTR_UNUSED, va_list args ATTR_UNUSED)
{
}

static void fuzz_write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0 ||
	    chmod(path, mode) < 0)
		i_fatal("%s: %m", path);
}

static void fuzz_setup_config(void)
{
	char dir[] = "/tmp/ab-fuzz-http-XXXXXX";
	const char *secret, *api_key, *conf, *error;

	if (mkdtemp(dir) == NULL)
		i_fatal("mkdtemp: %m");
	secret = t_strconcat(dir, "/secret", NULL);
	api_key = t_strconcat(dir, "/api-key", NULL);
	conf = t_strconcat(dir, "/authbrake.conf", NULL);
	if (ab_secret_generate(secret, &error) < 0)
		i_fatal("%s", error);
	fuzz_write_file(api_key, FUZZ_API_KEY "\n", 0600);
	fuzz_write_file(conf, t_strdup_printf(
		"secret_file = %s\n"
		"api_key_file = %s\n"
		"memcached_servers = 127.0.0.1:1\n"
		"connect_timeout = 50ms\n"
		"poll_timeout = 50ms\n"
		"trusted_proxies = 127.0.0.0/8, ::1\n"
		"trusted_networks = 10.9.0.0/16\n"
		"default_domain = example.org\n", secret, api_key), 0644);
	policy_init(conf);
	/* the files were read; nothing in the loop needs them */
	(void)unlink(secret);
	(void)unlink(api_key);
	(void)unlink(conf);
	(void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{

	lib_init();
	if (getenv("FUZZ_VERBOSE") == NULL) {
		i_set_info_handler(fuzz_log_quiet);
		i_set_debug_handler(fuzz_log_quiet);
		i_set_error_handler(fuzz_log_quiet);
	}
	fuzz_ioloop = io_loop_create();
	T_BEGIN {
		fuzz_setup_config();
	} T_END;

	policy_http_server = policy_http_server_init();
	return 0;
}

static void fuzz_connection_destroy(void *context,
				    const char *reason ATTR_UNUSED)
{
	struct fuzz_client *client = context;

	client->conn_destroyed = TRUE;
	if (client->eof)
		io_loop_stop(current_ioloop);
}

static const struct http_server_callbacks fuzz_http_callbacks = {
	.handle_request = policy_handle_request,
	.connection_destroy = fuzz_connection_destroy,
};

static void fuzz_client_input(struct fuzz_client *client)
{
	unsigned char buf[4096];
	ssize_t ret;

	while ((ret = read(client->fd, buf, sizeof(buf))) > 0)
		buffer_append(client->answer, buf, (size_t)ret);
	if (ret == 0 || (errno != EAGAIN && errno != EINTR)) {
		io_remove(&client->io);
		client->eof = TRUE;
		if (client->conn_destroyed)
			io_loop_stop(current_ioloop);
	}
}

static void fuzz_timeout(struct fuzz_client *client ATTR_UNUSED)
{
	io_loop_stop(current_ioloop);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_client client;
	struct http_server_connection *conn;
	struct timeout *to;
	int fds[2];
	size_t pos = 0;

	/* which branch of the decision runs: the input's length decides,
	   so that an input replays the same way */
	policy_config.fail_mode = size % 2 == 0 ? AB_FAIL_CLOSED : AB_FAIL_OPEN;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
		i_fatal("socketpair: %m");
	i_zero(&client);
	client.fd = fds[1];
	client.answer = buffer_create_dynamic(default_pool, 1024);

	/* the whole request is sent, then the client's side is closed for
	   writing: lib-http sees it all and then its end */
	while (pos < size) {
		ssize_t ret = write(client.fd, data + pos, size - pos);

		if (ret <= 0)
			i_fatal("write to socketpair: %m");
		pos += (size_t)ret;
	}
	if (shutdown(client.fd, SHUT_WR) < 0)
		i_fatal("shutdown: %m");
	net_set_nonblock(client.fd, TRUE);

	/* a frame of our own, as an ioloop callback has in Dovecot: what
	   lib-http allocates from the data stack here is freed per input */
	T_BEGIN {
		conn = http_server_connection_create(policy_http_server,
						     fds[0], fds[0], FALSE,
						     &fuzz_http_callbacks,
						     &client);
		client.io = io_add(client.fd, IO_READ, fuzz_client_input,
				   &client);
		to = timeout_add(FUZZ_RUN_MSECS, fuzz_timeout, &client);
		io_loop_run(fuzz_ioloop);
		timeout_remove(&to);
		if (!client.conn_destroyed)
			http_server_connection_close(&conn, "fuzz input done");
	} T_END;
	i_assert(client.conn_destroyed);
	io_remove(&client.io);
	i_close_fd(&client.fd);

	/* an answer, when there is one, is HTTP */
	if (client.answer->used > 0 &&
	    (client.answer->used < 9 ||
	     memcmp(client.answer->data, "HTTP/1.1 ", 9) != 0)) {
		i_panic("answer is not HTTP: %s",
			str_sanitize(t_strndup(client.answer->data,
					       client.answer->used), 80));
	}
	buffer_free(&client.answer);
	return 0;
}
