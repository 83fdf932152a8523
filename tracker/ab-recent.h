/* A record of the blocks and locks set recently, so `authbrake list` can
   say who is kept out now, on every node, without a name or an address in
   memcached in clear.

   A ring of AB_RECENT_SLOTS entries in memcached. A writer takes the next
   slot with one increment of an index key; each entry is sealed
   (crypto_secretbox: XSalsa20-Poly1305) under a subkey derived from the
   site secret and spread over numeric words, one memcached key each (the
   store keeps numbers only). An entry expires with the block or lock it
   records; the ring keeps the most recent AB_RECENT_SLOTS. The record is
   a hint: what `list` shows is checked against the live block or lock. */
#ifndef AB_RECENT_H
#define AB_RECENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ab-engine.h"
#include "ab-hash.h"
#include "ab-identity.h"

struct ab_store;
struct ab_tracker;

#define AB_RECENT_SLOTS 128
#define AB_RECENT_KEY_LEN 32
/* one header word (nonce and length) + MAC + the largest plaintext (an
   account of AB_ACCOUNT_MAX-1 bytes), in 8-byte words */
#define AB_RECENT_HEADER_LEN 16
#define AB_RECENT_PLAIN_MAX (AB_RECENT_HEADER_LEN + AB_ACCOUNT_MAX)
#define AB_RECENT_WORDS_MAX (1 + (16 + AB_RECENT_PLAIN_MAX + 7) / 8)

enum ab_recent_kind {
	AB_RECENT_ADDRESS = 1,
	AB_RECENT_SUBNET,
	AB_RECENT_ACCOUNT,
};

struct ab_recent_entry {
	enum ab_recent_kind kind;
	bool admin;			/* `authbrake block`, not an attack */
	struct ab_cidr net;		/* ADDRESS (its /64 for IPv6), SUBNET */
	char account[AB_ACCOUNT_MAX];	/* ACCOUNT */
	time_t set_at;
	unsigned int duration_s;
	unsigned int failures, accounts;	/* what set it (0 for admin) */
};

/* The ring's own key, derived from the site secret (crypto_kdf, context
   "abrecent"): the memcached key names stay keyed hashes of the secret
   itself, as every other key. */
void ab_recent_derive_key(const struct ab_secret *secret,
			  uint8_t key_r[AB_RECENT_KEY_LEN]);

/* Seal an entry into words[0..n) (n returned, at most
   AB_RECENT_WORDS_MAX); words[0] is the header: a random nonce and n. */
size_t ab_recent_seal(const uint8_t key[AB_RECENT_KEY_LEN],
		      const struct ab_recent_entry *entry,
		      uint64_t words_r[AB_RECENT_WORDS_MAX]);
/* Open what ab_recent_seal() wrote; -1 (error_r says why) when the words
   were not sealed under this key or were changed since: a torn write,
   another secret, tampering. */
int ab_recent_open(const uint8_t key[AB_RECENT_KEY_LEN],
		   const uint64_t *words, size_t n,
		   struct ab_recent_entry *entry_r, const char **error_r);

/* Write one entry into the next slot: one increment, then one set per
   word (the header last, so a reader never takes a half-written entry
   for a whole one; a torn one fails to open and is skipped). */
int ab_recent_add(const struct ab_secret *secret, struct ab_store *store,
		  const struct ab_recent_entry *entry, const char **error_r);
/* The tracker's escalation hook: record the block or lock op set (other
   ops are ignored). A store error loses the record, not the block. */
void ab_recent_escalation(const struct ab_secret *secret,
			  struct ab_store *store,
			  const struct ab_attempt *attempt,
			  const struct ab_snapshot *after,
			  const struct ab_op *op, time_t now);

/* The same for a block an administrator set (`authbrake block`). */
void ab_recent_admin_block(const struct ab_secret *secret,
			   struct ab_store *store, const struct ab_addr *addr,
			   bool subnet, unsigned int duration_s, time_t now);

/* Who is blocked or locked now: the ring's entries whose block or lock is
   in force (asked of the tracker), one per identity, newest first. */
struct ab_recent_item {
	struct ab_recent_entry entry;
	unsigned long long left_s;	/* time left of the live block/lock */
};
struct ab_recent_list {
	struct ab_recent_item items[AB_RECENT_SLOTS];
	size_t count;
	/* entries written since the index key was created: over
	   AB_RECENT_SLOTS, older ones were overwritten */
	uint64_t written;
	/* entries that did not open (torn, or another secret) */
	unsigned int unreadable;
};
/* Returns 0, -1 (error_r), or AB_ERR_STORE when memcached cannot answer. */
int ab_recent_list(struct ab_tracker *tracker, time_t now,
		   struct ab_recent_list *list_r, const char **error_r);

#endif
