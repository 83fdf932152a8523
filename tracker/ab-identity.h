/* Identities: accounts and addresses normalised before anything counts
   them, and CIDR lists for trusted and restricted networks. */
#ifndef AB_IDENTITY_H
#define AB_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AB_ACCOUNT_MAX 256
#define AB_ADDR_STRLEN 64

struct ab_addr {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t bytes[16];	/* network order; 4 used for AF_INET */
};

struct ab_cidr {
	struct ab_addr net;
	unsigned int prefix;
};

struct ab_cidr_list {
	struct ab_cidr *items;
	size_t count;
};

/* Lower-case (ASCII), trim surrounding white space, append
   @default_domain to a bare user when one is set. Rejects empty logins,
   logins that are not well-formed UTF-8 (overlong forms included),
   control bytes and logins over AB_ACCOUNT_MAX-1 bytes. */
int ab_account_normalize(const char *login, const char *default_domain,
			 char buf[AB_ACCOUNT_MAX], const char **error_r);

/* Parse IPv4 or IPv6; "::ffff:a.b.c.d" becomes a.b.c.d. */
int ab_addr_parse(const char *str, struct ab_addr *addr_r,
		  const char **error_r);
/* The address authbrake counts: IPv4 as is, IPv6 masked to its /64. */
void ab_addr_origin(const struct ab_addr *addr, struct ab_addr *origin_r);
/* The subnet: /24 for IPv4, /48 for IPv6. */
void ab_addr_subnet(const struct ab_addr *addr, struct ab_addr *subnet_r);
unsigned int ab_addr_origin_prefix(const struct ab_addr *addr);
unsigned int ab_addr_subnet_prefix(const struct ab_addr *addr);
void ab_addr_mask(const struct ab_addr *addr, unsigned int prefix,
		  struct ab_addr *masked_r);
bool ab_addr_equal(const struct ab_addr *a, const struct ab_addr *b);
size_t ab_addr_len(const struct ab_addr *addr);
/* Text form, with "/prefix" when prefix is below the full length. */
const char *ab_addr_str(const struct ab_addr *addr, unsigned int prefix,
			char buf[AB_ADDR_STRLEN]);

/* A server as a setting names it: "host:port", "host" (default_port),
   "[IPv6]:port" or a bare IPv6 address. The host (a name or an address,
   without brackets) goes to host_r; the error says what is wrong, for
   the caller to prefix with the setting's name. */
#define AB_HOST_MAX 100
int ab_host_port_parse(const char *str, unsigned int default_port,
		       char host_r[AB_HOST_MAX], unsigned int *port_r,
		       const char **error_r);

/* "a.b.c.d/nn" or "x::/nn" or a bare address. */
int ab_cidr_parse(const char *str, struct ab_cidr *cidr_r,
		  const char **error_r);
/* Comma- or space-separated list; an empty string gives an empty list. */
int ab_cidr_list_parse(const char *str, struct ab_cidr_list *list_r,
		       const char **error_r);
void ab_cidr_list_free(struct ab_cidr_list *list);
bool ab_cidr_list_match(const struct ab_cidr_list *list,
			const struct ab_addr *addr);

#endif
