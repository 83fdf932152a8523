/* A record of the blocks and locks set recently, so `authbrake list` can
   say who is kept out now, on every node, without a name or an address in
   memcached in clear.

   A ring of AB_RECENT_SLOTS entries in memcached. A writer takes the next
   slot with one increment of an index key and writes the entry there as
   one item of bytes, sealed (crypto_secretbox: XSalsa20-Poly1305) under a
   subkey derived from the site secret. An entry expires with the block or
   lock it records; the ring keeps the most recent AB_RECENT_SLOTS. The
   record is a hint: what `list` shows is checked against the live block
   or lock. */
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
/* A version byte, the nonce (24), the MAC (16) and the largest
   plaintext: 16 bytes of header and an account of AB_ACCOUNT_MAX-1
   bytes, padded to 8. */
#define AB_RECENT_SEALED_MAX (1 + 24 + 16 + (16 + AB_ACCOUNT_MAX - 1 + 7) / 8 * 8)

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

/* Seal an entry into out; returns its length (at most
   AB_RECENT_SEALED_MAX). The version byte comes first and is not a
   digit, so the store never takes the value for a number. */
size_t ab_recent_seal(const uint8_t key[AB_RECENT_KEY_LEN],
		      const struct ab_recent_entry *entry,
		      uint8_t out[AB_RECENT_SEALED_MAX]);
/* Open what ab_recent_seal() wrote; -1 (error_r says why) when the bytes
   were not sealed under this key or were changed since: another secret,
   tampering, a value cut short. */
int ab_recent_open(const uint8_t key[AB_RECENT_KEY_LEN],
		   const uint8_t *sealed, size_t len,
		   struct ab_recent_entry *entry_r, const char **error_r);

/* The key of the ring's index, and how long it lives: a writer takes the
   next slot with one increment of it (the tracker takes one for every
   block and lock a batch of reports set, in one round trip). */
#define AB_RECENT_INDEX_TTL (8 * 24 * 3600)
void ab_recent_index_key(const struct ab_secret *secret, char key_r[AB_KEY_LEN]);

/* Write one entry into slot `index` (the index key's value after its
   increment; 0: increment it now, one round trip), as one posted write:
   a lost record costs the list an entry, never the block. */
int ab_recent_add(const struct ab_secret *secret, struct ab_store *store,
		  const struct ab_recent_entry *entry, uint64_t index,
		  const char **error_r);
/* The tracker's escalation hook: record the block or lock op set (other
   ops are ignored). A store error loses the record, not the block. */
void ab_recent_escalation(const struct ab_secret *secret,
			  struct ab_store *store,
			  const struct ab_attempt *attempt,
			  const struct ab_snapshot *after,
			  const struct ab_op *op, uint64_t index, time_t now);

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
	/* entries that did not open (another secret, or changed) */
	unsigned int unreadable;
};
/* Returns 0, -1 (error_r), or AB_ERR_STORE when memcached cannot answer. */
int ab_recent_list(struct ab_tracker *tracker, time_t now,
		   struct ab_recent_list *list_r, const char **error_r);

#endif
