/* The record of recent blocks and locks behind `authbrake list`: sealed
   entries in a ring in memcached (see ab-recent.h for the shape). */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "ab-error.h"
#include "ab-recent.h"
#include "ab-store.h"
#include "ab-tracker.h"

/* the sealed value's first byte: not a digit (see ab_recent_seal) */
#define RECENT_SEALED_VERSION 0x01
/* the plaintext's own */
#define RECENT_VERSION 1
#define RECENT_FLAG_ADMIN 0x01
#define RECENT_PLAIN_HEADER_LEN 16
/* the largest plaintext: an account of AB_ACCOUNT_MAX-1 bytes, padded */
#define RECENT_PLAIN_MAX ((RECENT_PLAIN_HEADER_LEN + AB_ACCOUNT_MAX - 1 + 7) / 8 * 8)
#define RECENT_SEALED_HEADER_LEN (1 + crypto_secretbox_NONCEBYTES)
#define RECENT_SEALED_MIN (RECENT_SEALED_HEADER_LEN + crypto_secretbox_MACBYTES + \
			   RECENT_PLAIN_HEADER_LEN)
/* entries outlive their block a little, so a block extended by a repeat
   is not lost from the list before the repeat's own entry is written */
#define RECENT_TTL_MARGIN 60
/* memcached reads a TTL over 30 days as an absolute time */
#define RECENT_TTL_MAX (29 * 24 * 3600)

_Static_assert(AB_RECENT_SEALED_MAX == RECENT_SEALED_HEADER_LEN +
	       crypto_secretbox_MACBYTES + RECENT_PLAIN_MAX,
	       "AB_RECENT_SEALED_MAX does not match the sealed format");
_Static_assert(AB_RECENT_SEALED_MAX <= AB_META_VALUE_MAX,
	       "a sealed entry must fit in one memcached value");

typedef char recent_key[AB_KEY_LEN];

void ab_recent_derive_key(const struct ab_secret *secret,
			  uint8_t key_r[AB_RECENT_KEY_LEN])
{
	crypto_kdf_derive_from_key(key_r, AB_RECENT_KEY_LEN, 1, "abrecent",
				   secret->key);
}

/* counts over 65535 are shown as 65535 */
static void put_u16_capped(uint8_t *p, unsigned int v)
{
	if (v > 0xffff)
		v = 0xffff;
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		(uint32_t)p[3] << 24;
}

/* The plaintext: version, kind, flags, identity length, set_at (u32),
   duration_s (u32), failures and accounts (u16 each), then the identity:
   the account's bytes, or family (4/6), 16 address bytes and the prefix.
   Little-endian throughout. */
static size_t plain_encode(const struct ab_recent_entry *entry,
			   uint8_t plain[RECENT_PLAIN_MAX])
{
	size_t id_len, len;

	memset(plain, 0, RECENT_PLAIN_MAX);
	plain[0] = RECENT_VERSION;
	plain[1] = (uint8_t)entry->kind;
	plain[2] = entry->admin ? RECENT_FLAG_ADMIN : 0;
	put_u32(plain + 4, (uint32_t)entry->set_at);
	put_u32(plain + 8, entry->duration_s);
	put_u16_capped(plain + 12, entry->failures);
	put_u16_capped(plain + 14, entry->accounts);
	if (entry->kind == AB_RECENT_ACCOUNT) {
		id_len = strnlen(entry->account, AB_ACCOUNT_MAX - 1);
		memcpy(plain + RECENT_PLAIN_HEADER_LEN, entry->account, id_len);
	} else {
		uint8_t *p = plain + RECENT_PLAIN_HEADER_LEN;

		p[0] = entry->net.net.family == AF_INET6 ? 6 : 4;
		memcpy(p + 1, entry->net.net.bytes, 16);
		p[17] = (uint8_t)entry->net.prefix;
		id_len = 18;
	}
	plain[3] = (uint8_t)id_len;
	len = RECENT_PLAIN_HEADER_LEN + id_len;
	/* the padding hides the name's length to 8 bytes */
	return (len + 7) / 8 * 8;
}

/* The sealed value: the version byte, a random nonce, then the
   plaintext in crypto_secretbox (its MAC first). */
size_t ab_recent_seal(const uint8_t key[AB_RECENT_KEY_LEN],
		      const struct ab_recent_entry *entry,
		      uint8_t out[AB_RECENT_SEALED_MAX])
{
	uint8_t plain[RECENT_PLAIN_MAX];
	size_t plain_len = plain_encode(entry, plain);

	out[0] = RECENT_SEALED_VERSION;
	randombytes_buf(out + 1, crypto_secretbox_NONCEBYTES);
	crypto_secretbox_easy(out + RECENT_SEALED_HEADER_LEN, plain, plain_len,
			      out + 1, key);
	sodium_memzero(plain, sizeof(plain));
	return RECENT_SEALED_HEADER_LEN + crypto_secretbox_MACBYTES + plain_len;
}

int ab_recent_open(const uint8_t key[AB_RECENT_KEY_LEN],
		   const uint8_t *sealed, size_t len,
		   struct ab_recent_entry *entry_r, const char **error_r)
{
	uint8_t plain[RECENT_PLAIN_MAX];
	size_t plain_len, id_len;
	const uint8_t *id;

	memset(entry_r, 0, sizeof(*entry_r));
	if (len == 0)
		return ab_error(error_r, "recent entry: empty");
	if (sealed[0] != RECENT_SEALED_VERSION)
		return ab_error(error_r, "recent entry: unknown version %u",
				sealed[0]);
	if (len < RECENT_SEALED_MIN)
		return ab_error(error_r, "recent entry: too short");
	if (len > AB_RECENT_SEALED_MAX || (len - RECENT_SEALED_MIN) % 8 != 0)
		return ab_error(error_r, "recent entry: bad length");
	plain_len = len - RECENT_SEALED_HEADER_LEN - crypto_secretbox_MACBYTES;
	if (crypto_secretbox_open_easy(plain, sealed + RECENT_SEALED_HEADER_LEN,
				       len - RECENT_SEALED_HEADER_LEN,
				       sealed + 1, key) != 0)
		return ab_error(error_r, "recent entry: does not open "
				"(changed, or sealed under another secret)");
	id_len = plain[3];
	id = plain + RECENT_PLAIN_HEADER_LEN;
	if (plain[0] != RECENT_VERSION ||
	    RECENT_PLAIN_HEADER_LEN + id_len > plain_len)
		return ab_error(error_r, "recent entry: unknown format");
	entry_r->kind = (enum ab_recent_kind)plain[1];
	entry_r->admin = (plain[2] & RECENT_FLAG_ADMIN) != 0;
	entry_r->set_at = (time_t)get_u32(plain + 4);
	entry_r->duration_s = get_u32(plain + 8);
	entry_r->failures = (unsigned int)plain[12] | (unsigned int)plain[13] << 8;
	entry_r->accounts = (unsigned int)plain[14] | (unsigned int)plain[15] << 8;
	switch (entry_r->kind) {
	case AB_RECENT_ACCOUNT:
		if (id_len == 0 || memchr(id, '\0', id_len) != NULL)
			return ab_error(error_r, "recent entry: bad account");
		memcpy(entry_r->account, id, id_len);
		entry_r->account[id_len] = '\0';
		return 0;
	case AB_RECENT_ADDRESS:
	case AB_RECENT_SUBNET:
		if (id_len != 18 || (id[0] != 4 && id[0] != 6) ||
		    id[17] > (id[0] == 4 ? 32 : 128))
			return ab_error(error_r, "recent entry: bad address");
		entry_r->net.net.family = id[0] == 4 ? AF_INET : AF_INET6;
		memcpy(entry_r->net.net.bytes, id + 1, 16);
		entry_r->net.prefix = id[17];
		return 0;
	}
	return ab_error(error_r, "recent entry: unknown kind %u", plain[1]);
}

void ab_recent_index_key(const struct ab_secret *secret, recent_key key_r)
{
	ab_hash_key(secret, "ri", "index", 5, NULL, 0, key_r);
}

static void slot_key(const struct ab_secret *secret, unsigned int slot,
		     recent_key key_r)
{
	uint8_t s[2] = { (uint8_t)(slot >> 8), (uint8_t)slot };

	ab_hash_key(secret, "re", s, sizeof(s), NULL, 0, key_r);
}

int ab_recent_add(const struct ab_secret *secret, struct ab_store *store,
		  const struct ab_recent_entry *entry, uint64_t index,
		  const char **error_r)
{
	uint8_t key[AB_RECENT_KEY_LEN], sealed[AB_RECENT_SEALED_MAX];
	struct ab_store_op op;
	recent_key k;
	unsigned int ttl = entry->duration_s + RECENT_TTL_MARGIN;

	if (ttl > RECENT_TTL_MAX)
		ttl = RECENT_TTL_MAX;
	ab_recent_index_key(secret, k);
	if (index == 0 &&
	    ab_store_incr(store, k, 1, AB_RECENT_INDEX_TTL, &index, error_r) < 0)
		return -1;
	ab_recent_derive_key(secret, key);
	memset(&op, 0, sizeof(op));
	op.cmd = AB_STORE_SET;
	op.bytes = sealed;
	op.bytes_len = ab_recent_seal(key, entry, sealed);
	op.ttl_s = ttl;
	sodium_memzero(key, sizeof(key));
	slot_key(secret, (unsigned int)((index - 1) % AB_RECENT_SLOTS), k);
	op.key = k;
	ab_store_post(store, &op, 1);
	return 0;
}

void ab_recent_escalation(const struct ab_secret *secret,
			  struct ab_store *store,
			  const struct ab_attempt *attempt,
			  const struct ab_snapshot *after,
			  const struct ab_op *op, uint64_t index, time_t now)
{
	struct ab_recent_entry entry;
	const char *error;

	memset(&entry, 0, sizeof(entry));
	switch (op->slot) {
	case AB_SLOT_IP_BLOCK:
		entry.kind = AB_RECENT_ADDRESS;
		ab_addr_origin(&attempt->addr, &entry.net.net);
		entry.net.prefix = ab_addr_origin_prefix(&entry.net.net);
		entry.failures = (unsigned int)ab_window_count(after, AB_SLOT_IP_FAIL);
		entry.accounts = (unsigned int)ab_window_count(after, AB_SLOT_IP_ACCTS);
		break;
	case AB_SLOT_NET_BLOCK:
		entry.kind = AB_RECENT_SUBNET;
		ab_addr_subnet(&attempt->addr, &entry.net.net);
		entry.net.prefix = ab_addr_subnet_prefix(&entry.net.net);
		entry.failures = (unsigned int)ab_window_count(after, AB_SLOT_NET_FAIL);
		entry.accounts = (unsigned int)ab_window_count(after, AB_SLOT_NET_ACCTS);
		break;
	case AB_SLOT_ACCT_LOCK:
		entry.kind = AB_RECENT_ACCOUNT;
		memcpy(entry.account, attempt->account, sizeof(entry.account));
		entry.failures = (unsigned int)ab_window_count(after, AB_SLOT_ACCT_FAIL);
		break;
	default:
		return;
	}
	entry.set_at = now;
	entry.duration_s = op->value > (uint64_t)now ?
		(unsigned int)(op->value - (uint64_t)now) : 0;
	(void)ab_recent_add(secret, store, &entry, index, &error);
}

void ab_recent_admin_block(const struct ab_secret *secret,
			   struct ab_store *store, const struct ab_addr *addr,
			   bool subnet, unsigned int duration_s, time_t now)
{
	struct ab_recent_entry entry;
	const char *error;

	memset(&entry, 0, sizeof(entry));
	entry.admin = true;
	if (subnet) {
		entry.kind = AB_RECENT_SUBNET;
		ab_addr_subnet(addr, &entry.net.net);
		entry.net.prefix = ab_addr_subnet_prefix(&entry.net.net);
	} else {
		entry.kind = AB_RECENT_ADDRESS;
		ab_addr_origin(addr, &entry.net.net);
		entry.net.prefix = ab_addr_origin_prefix(&entry.net.net);
	}
	entry.set_at = now;
	entry.duration_s = duration_s;
	(void)ab_recent_add(secret, store, &entry, 0, &error);
}

static bool same_identity(const struct ab_recent_entry *a,
			  const struct ab_recent_entry *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == AB_RECENT_ACCOUNT)
		return strcmp(a->account, b->account) == 0;
	return a->net.net.family == b->net.net.family &&
		a->net.prefix == b->net.prefix &&
		memcmp(a->net.net.bytes, b->net.net.bytes, 16) == 0;
}

/* Is it in force now, and for how long? 1 yes, 0 no, AB_ERR_STORE. */
static int live_left(struct ab_tracker *tracker,
		     const struct ab_recent_entry *entry, time_t now,
		     unsigned long long *left_r, const char **error_r)
{
	char addr[AB_ADDR_STRLEN];
	int ret;

	if (entry->kind == AB_RECENT_ACCOUNT) {
		struct ab_account_status st;

		ret = ab_tracker_account_status(tracker, entry->account, now,
						&st, error_r);
		if (ret < 0)
			return ret == -1 ? 0 : ret;
		*left_r = st.lock_left_s;
		return st.locked ? 1 : 0;
	} else {
		struct ab_address_status st;

		ret = ab_tracker_address_status(tracker,
			ab_addr_str(&entry->net.net, 8 * (unsigned int)ab_addr_len(&entry->net.net), addr),
			now, &st, error_r);
		if (ret < 0)
			return ret == -1 ? 0 : ret;
		if (entry->kind == AB_RECENT_SUBNET) {
			*left_r = st.net_block_left_s;
			return st.net_blocked ? 1 : 0;
		}
		*left_r = st.block_left_s;
		return st.blocked ? 1 : 0;
	}
}

static int item_cmp(const void *a, const void *b)
{
	const struct ab_recent_item *x = a, *y = b;

	return x->entry.set_at < y->entry.set_at ? 1 :
		x->entry.set_at > y->entry.set_at ? -1 : 0;
}

/* the index and every slot, read in one batch */
#define RECENT_READ_OPS (1 + AB_RECENT_SLOTS)
struct recent_read {
	recent_key keys[RECENT_READ_OPS];
	struct ab_store_op ops[RECENT_READ_OPS];
	uint8_t sealed[AB_RECENT_SLOTS][AB_RECENT_SEALED_MAX];
};

int ab_recent_list(struct ab_tracker *tracker, time_t now,
		   struct ab_recent_list *list_r, const char **error_r)
{
	struct recent_read *rd = calloc(1, sizeof(*rd));
	size_t i, j, k;
	struct ab_store *store = ab_tracker_store(tracker);
	struct ab_secret secret;
	struct ab_recent_entry entry;
	uint8_t key[AB_RECENT_KEY_LEN];
	const char *error;
	int ret = 0;

	memset(list_r, 0, sizeof(*list_r));
	if (rd == NULL)
		return ab_error(error_r, "out of memory");
	if (ab_secret_load(ab_tracker_config(tracker)->secret_file, &secret,
			   error_r) < 0) {
		free(rd);
		return -1;
	}
	ab_recent_index_key(&secret, rd->keys[0]);
	for (i = 0; i < AB_RECENT_SLOTS; i++) {
		struct ab_store_op *op = &rd->ops[1 + i];

		slot_key(&secret, (unsigned int)i, rd->keys[1 + i]);
		op->out_bytes = rd->sealed[i];
		op->out_bytes_cap = sizeof(rd->sealed[i]);
	}
	for (i = 0; i < RECENT_READ_OPS; i++) {
		rd->ops[i].cmd = AB_STORE_GET;
		rd->ops[i].key = rd->keys[i];
	}
	if (ab_store_run(store, rd->ops, RECENT_READ_OPS, error_r) != 0) {
		ret = AB_ERR_STORE;
		goto out;
	}
	list_r->written = rd->ops[0].result == AB_STORE_DONE ? rd->ops[0].out : 0;

	ab_recent_derive_key(&secret, key);
	for (i = 0; i < AB_RECENT_SLOTS; i++) {
		const struct ab_store_op *op = &rd->ops[1 + i];

		if (op->result == AB_STORE_MISS)
			continue;
		/* a number, or a value too long, is none of ours: unreadable */
		if (op->result != AB_STORE_DONE ||
		    ab_recent_open(key, rd->sealed[i], op->out_bytes_len,
				   &entry, &error) < 0) {
			list_r->unreadable++;
			continue;
		}
		/* one line per identity: the newest entry says how it was set */
		for (k = 0; k < list_r->count; k++) {
			if (same_identity(&list_r->items[k].entry, &entry))
				break;
		}
		if (k < list_r->count) {
			if (entry.set_at > list_r->items[k].entry.set_at)
				list_r->items[k].entry = entry;
			continue;
		}
		list_r->items[list_r->count++].entry = entry;
	}
	sodium_memzero(key, sizeof(key));

	/* only what is in force now */
	for (i = j = 0; i < list_r->count; i++) {
		unsigned long long left = 0;
		int live = live_left(tracker, &list_r->items[i].entry, now,
				     &left, error_r);

		if (live < 0) {
			ret = AB_ERR_STORE;
			goto out;
		}
		if (live == 0)
			continue;
		list_r->items[j] = list_r->items[i];
		list_r->items[j++].left_s = left;
	}
	list_r->count = j;
	qsort(list_r->items, list_r->count, sizeof(list_r->items[0]), item_cmp);
out:
	sodium_memzero(&secret, sizeof(secret));
	free(rd);
	return ret;
}
