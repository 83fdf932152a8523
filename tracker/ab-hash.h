/* Keyed hashing with the site secret (libsodium BLAKE2b): memcached keys
   and password fingerprints never hold a name, address or password. */
#ifndef AB_HASH_H
#define AB_HASH_H

#include <stddef.h>
#include <stdint.h>

#define AB_SECRET_LEN 32
/* "ab1:" + 2-letter kind + ":" + 32 hex digits + NUL */
#define AB_KEY_LEN 40

struct ab_secret {
	uint8_t key[AB_SECRET_LEN];
};

/* Refuse a file that is group- or world-writable or world-readable;
   the message says which. */
int ab_file_check_private(int fd, const char *path, const char **error_r);
/* Load the 32-byte secret (raw, or 64 hex digits with optional newline). */
int ab_secret_load(const char *path, struct ab_secret *secret_r,
		   const char **error_r);
/* Write a fresh random secret, mode 0640, as
   64 hex digits. Refuses to overwrite an existing file. */
int ab_secret_generate(const char *path, const char **error_r);
/* Read a one-line token (the policy API key) from a private file. */
int ab_token_load(const char *path, char *buf, size_t size,
		  const char **error_r);

/* Key for memcached: kind is two letters; parts are hashed together with
   a length prefix each, so no two inputs collide by concatenation. */
void ab_hash_key(const struct ab_secret *secret, const char kind[2],
		 const void *part1, size_t len1,
		 const void *part2, size_t len2, char key_r[AB_KEY_LEN]);
/* Password fingerprint: keyed hash of (account, password material),
   truncated to 16 bits — enough to tell a repeated password, not to
   recover it. */
uint16_t ab_pw_fingerprint(const struct ab_secret *secret,
			   const char *account,
			   const void *pw, size_t pw_len);

#endif
