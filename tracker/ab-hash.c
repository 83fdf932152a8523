/* Keyed hashing (BLAKE2b with the site secret) and the secret files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ab-error.h"
#include "ab-hash.h"

int ab_file_check_private(int fd, const char *path, const char **error_r)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return ab_error(error_r, "%s: cannot stat: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return ab_error(error_r, "%s: not a regular file", path);
	if ((st.st_mode & S_IWOTH) != 0)
		return ab_error(error_r, "%s is world-writable (mode %04o): refusing it; "
				"chmod 0640 %s", path, st.st_mode & 07777, path);
	if ((st.st_mode & S_IWGRP) != 0)
		return ab_error(error_r, "%s is group-writable (mode %04o): refusing it; "
				"chmod 0640 %s", path, st.st_mode & 07777, path);
	if ((st.st_mode & S_IROTH) != 0)
		return ab_error(error_r, "%s is world-readable (mode %04o): refusing it; "
				"chmod 0640 %s", path, st.st_mode & 07777, path);
	return 0;
}

static int read_private(const char *path, char *buf, size_t size,
			size_t *len_r, const char **error_r)
{
	ssize_t ret;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return ab_error(error_r, "%s: cannot open: %s", path, strerror(errno));
	if (ab_file_check_private(fd, path, error_r) < 0) {
		close(fd);
		return -1;
	}
	while (len < size && (ret = read(fd, buf + len, size - len)) != 0) {
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return ab_error(error_r, "%s: read error: %s", path, strerror(errno));
		}
		len += (size_t)ret;
	}
	close(fd);
	*len_r = len;
	return 0;
}

int ab_secret_load(const char *path, struct ab_secret *secret_r,
		   const char **error_r)
{
	char buf[AB_SECRET_LEN * 2 + 4];
	size_t len, bin_len;
	int ret;

	if (sodium_init() < 0)
		return ab_error(error_r, "libsodium failed to initialise");
	if (read_private(path, buf, sizeof(buf), &len, error_r) < 0)
		return -1;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len == AB_SECRET_LEN) {
		memcpy(secret_r->key, buf, AB_SECRET_LEN);
		ret = 0;
	} else if (len == AB_SECRET_LEN * 2 &&
		   sodium_hex2bin(secret_r->key, AB_SECRET_LEN, buf, len,
				  NULL, &bin_len, NULL) == 0 &&
		   bin_len == AB_SECRET_LEN) {
		ret = 0;
	} else {
		ret = ab_error(error_r, "%s: expected 32 bytes or 64 hex digits "
			       "(make one with 'authbrake genkey')", path);
	}
	sodium_memzero(buf, sizeof(buf));
	return ret;
}

int ab_secret_generate(const char *path, const char **error_r)
{
	uint8_t key[AB_SECRET_LEN];
	char hex[AB_SECRET_LEN * 2 + 2];
	size_t len;
	int fd;

	if (sodium_init() < 0)
		return ab_error(error_r, "libsodium failed to initialise");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return ab_error(error_r, "%s: cannot create: %s%s", path, strerror(errno),
				errno == EEXIST ? " (refusing to replace a secret in use)" : "");
	/* umask may have widened nothing, but a chmod makes the mode certain */
	if (fchmod(fd, 0640) < 0) {
		close(fd);
		unlink(path);
		return ab_error(error_r, "%s: chmod: %s", path, strerror(errno));
	}
	randombytes_buf(key, sizeof(key));
	sodium_bin2hex(hex, sizeof(hex), key, sizeof(key));
	len = strlen(hex);
	hex[len++] = '\n';
	if (write(fd, hex, len) != (ssize_t)len || fsync(fd) < 0) {
		int err = errno;
		close(fd);
		unlink(path);
		return ab_error(error_r, "%s: write: %s", path, strerror(err));
	}
	sodium_memzero(key, sizeof(key));
	sodium_memzero(hex, sizeof(hex));
	if (close(fd) < 0)
		return ab_error(error_r, "%s: close: %s", path, strerror(errno));
	return 0;
}

int ab_token_load(const char *path, char *buf, size_t size,
		  const char **error_r)
{
	size_t len, i;

	if (size < 2)
		return ab_error(error_r, "%s: buffer too small", path);
	if (read_private(path, buf, size - 1, &len, error_r) < 0)
		return -1;
	buf[len] = '\0';
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
			   buf[len - 1] == ' '))
		buf[--len] = '\0';
	if (len == 0)
		return ab_error(error_r, "%s: is empty", path);
	if (len == size - 1)
		return ab_error(error_r, "%s: longer than %zu bytes", path, size - 2);
	for (i = 0; i < len; i++) {
		if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e)
			return ab_error(error_r, "%s: must be one line of printable characters without spaces",
					path);
	}
	return 0;
}

static void hash_part(crypto_generichash_state *st, const void *data, size_t len)
{
	uint8_t lenbuf[4] = {
		(uint8_t)(len >> 24), (uint8_t)(len >> 16),
		(uint8_t)(len >> 8), (uint8_t)len
	};

	crypto_generichash_update(st, lenbuf, sizeof(lenbuf));
	if (len > 0)
		crypto_generichash_update(st, data, len);
}

void ab_hash_key(const struct ab_secret *secret, const char kind[2],
		 const void *part1, size_t len1,
		 const void *part2, size_t len2, char key_r[AB_KEY_LEN])
{
	crypto_generichash_state st;
	uint8_t out[16];

	crypto_generichash_init(&st, secret->key, AB_SECRET_LEN, sizeof(out));
	hash_part(&st, kind, 2);
	hash_part(&st, part1, len1);
	hash_part(&st, part2, len2);
	crypto_generichash_final(&st, out, sizeof(out));
	memcpy(key_r, "ab1:", 4);
	key_r[4] = kind[0];
	key_r[5] = kind[1];
	key_r[6] = ':';
	sodium_bin2hex(key_r + 7, AB_KEY_LEN - 7, out, sizeof(out));
}

uint16_t ab_pw_fingerprint(const struct ab_secret *secret,
			   const char *account,
			   const void *pw, size_t pw_len)
{
	crypto_generichash_state st;
	uint8_t out[16];

	crypto_generichash_init(&st, secret->key, AB_SECRET_LEN, sizeof(out));
	hash_part(&st, "pw", 2);
	hash_part(&st, account, strlen(account));
	hash_part(&st, pw, pw_len);
	crypto_generichash_final(&st, out, sizeof(out));
	return (uint16_t)((out[0] << 8) | out[1]);
}
