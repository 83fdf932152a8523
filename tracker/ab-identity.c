/* Identities: account normalisation, address parsing, subnets, CIDR lists. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ab-error.h"
#include "ab-identity.h"

/* Offset of the first byte that does not start a well-formed UTF-8
   sequence (RFC 3629: no overlong forms, no surrogates, at most
   U+10FFFF), or len when all of it is well formed. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
	size_t i = 0, n, k;
	uint32_t cp, min;

	while (i < len) {
		unsigned char c = s[i];

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1; cp = c & 0x1f; min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2; cp = c & 0x0f; min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3; cp = c & 0x07; min = 0x10000;
		} else {
			return i;	/* a continuation byte, C0/C1, F5..FF */
		}
		if (len - i <= n)
			return i;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n + 1;
	}
	return len;
}

int ab_account_normalize(const char *login, const char *default_domain,
			 char buf[AB_ACCOUNT_MAX], const char **error_r)
{
	size_t start = 0, end, i;

	if (login == NULL)
		return ab_error(error_r, "login is missing");
	end = strlen(login);
	while (start < end && (login[start] == ' ' || login[start] == '\t'))
		start++;
	while (end > start && (login[end - 1] == ' ' || login[end - 1] == '\t'))
		end--;
	if (start == end)
		return ab_error(error_r, "login is empty");
	for (i = start; i < end; i++) {
		unsigned char c = (unsigned char)login[i];
		if (c < 0x20 || c == 0x7f)
			return ab_error(error_r,
				"login contains a control byte (0x%02x) at offset %zu",
				c, i);
	}
	if (end - start >= AB_ACCOUNT_MAX)
		return ab_error(error_r, "login is longer than %d bytes",
				AB_ACCOUNT_MAX - 1);
	i = utf8_invalid_at((const unsigned char *)login + start, end - start);
	if (i < end - start)
		return ab_error(error_r, "login is not valid UTF-8 (byte 0x%02x at offset %zu)",
				(unsigned char)login[start + i], start + i);
	/* ASCII only, whatever locale a PAM host runs in: the passdb decides
	   what other letters mean */
	for (i = start; i < end; i++) {
		unsigned char c = (unsigned char)login[i];
		buf[i - start] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	buf[end - start] = '\0';

	if (default_domain != NULL && default_domain[0] != '\0' &&
	    strchr(buf, '@') == NULL) {
		size_t len = strlen(buf), dlen = strlen(default_domain);
		if (len + 1 + dlen >= AB_ACCOUNT_MAX)
			return ab_error(error_r, "login with default domain is longer than %d bytes",
					AB_ACCOUNT_MAX - 1);
		buf[len] = '@';
		for (i = 0; i <= dlen; i++) {
			unsigned char c = (unsigned char)default_domain[i];
			buf[len + 1 + i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
	}
	return 0;
}

static const uint8_t v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

int ab_addr_parse(const char *str, struct ab_addr *addr_r,
		  const char **error_r)
{
	char tmp[INET6_ADDRSTRLEN + 2];
	size_t len;

	memset(addr_r, 0, sizeof(*addr_r));
	if (str == NULL || str[0] == '\0')
		return ab_error(error_r, "address is empty");
	len = strlen(str);
	/* "[v6]" as some logs write it */
	if (str[0] == '[' && len > 2 && str[len - 1] == ']') {
		str++;
		len -= 2;
	}
	if (len >= sizeof(tmp))
		return ab_error(error_r, "address is too long to be an IP address");
	memcpy(tmp, str, len);
	tmp[len] = '\0';

	if (inet_pton(AF_INET, tmp, addr_r->bytes) == 1) {
		addr_r->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, tmp, addr_r->bytes) == 1) {
		addr_r->family = AF_INET6;
		if (memcmp(addr_r->bytes, v4mapped_prefix, 12) == 0) {
			memmove(addr_r->bytes, addr_r->bytes + 12, 4);
			memset(addr_r->bytes + 4, 0, 12);
			addr_r->family = AF_INET;
		}
		return 0;
	}
	return ab_error(error_r, "'%.*s' is not an IPv4 or IPv6 address",
			(int)(len > 64 ? 64 : len), tmp);
}

size_t ab_addr_len(const struct ab_addr *addr)
{
	return addr->family == AF_INET ? 4 : 16;
}

void ab_addr_mask(const struct ab_addr *addr, unsigned int prefix,
		  struct ab_addr *masked_r)
{
	size_t len = ab_addr_len(addr), i;

	*masked_r = *addr;
	for (i = 0; i < len; i++) {
		unsigned int bit = (unsigned int)i * 8;
		if (bit >= prefix)
			masked_r->bytes[i] = 0;
		else if (bit + 8 > prefix)
			masked_r->bytes[i] &= (uint8_t)(0xff << (8 - (prefix - bit)));
	}
	memset(masked_r->bytes + len, 0, sizeof(masked_r->bytes) - len);
}

unsigned int ab_addr_origin_prefix(const struct ab_addr *addr)
{
	return addr->family == AF_INET ? 32 : 64;
}

unsigned int ab_addr_subnet_prefix(const struct ab_addr *addr)
{
	return addr->family == AF_INET ? 24 : 48;
}

void ab_addr_origin(const struct ab_addr *addr, struct ab_addr *origin_r)
{
	ab_addr_mask(addr, ab_addr_origin_prefix(addr), origin_r);
}

void ab_addr_subnet(const struct ab_addr *addr, struct ab_addr *subnet_r)
{
	ab_addr_mask(addr, ab_addr_subnet_prefix(addr), subnet_r);
}

bool ab_addr_equal(const struct ab_addr *a, const struct ab_addr *b)
{
	return a->family == b->family &&
		memcmp(a->bytes, b->bytes, ab_addr_len(a)) == 0;
}

const char *ab_addr_str(const struct ab_addr *addr, unsigned int prefix,
			char buf[AB_ADDR_STRLEN])
{
	char tmp[INET6_ADDRSTRLEN];

	if (inet_ntop(addr->family, addr->bytes, tmp, sizeof(tmp)) == NULL)
		snprintf(tmp, sizeof(tmp), "?");
	if (prefix < ab_addr_len(addr) * 8)
		snprintf(buf, AB_ADDR_STRLEN, "%s/%u", tmp, prefix);
	else
		snprintf(buf, AB_ADDR_STRLEN, "%s", tmp);
	return buf;
}

int ab_cidr_parse(const char *str, struct ab_cidr *cidr_r,
		  const char **error_r)
{
	char tmp[AB_ADDR_STRLEN];
	const char *slash = strchr(str, '/');
	const char *error;
	size_t len = slash != NULL ? (size_t)(slash - str) : strlen(str);
	unsigned int max;

	if (len >= sizeof(tmp))
		return ab_error(error_r, "'%s' is not a network", str);
	memcpy(tmp, str, len);
	tmp[len] = '\0';
	if (ab_addr_parse(tmp, &cidr_r->net, &error) < 0)
		return ab_error(error_r, "'%s' is not a network: %s", str, error);
	max = (unsigned int)ab_addr_len(&cidr_r->net) * 8;
	if (slash == NULL) {
		cidr_r->prefix = max;
	} else {
		char *end;
		unsigned long prefix;

		if (slash[1] < '0' || slash[1] > '9')
			return ab_error(error_r, "'%s': prefix length is not a number", str);
		prefix = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || prefix > 128)
			return ab_error(error_r, "'%s': prefix length is not a number up to %u",
					str, max);
		/* ::ffff:a.b.c.d/120 is a.b.c.d/24 */
		if (strchr(tmp, ':') != NULL && cidr_r->net.family == AF_INET) {
			if (prefix < 96)
				return ab_error(error_r, "'%s': an IPv4-mapped network needs a prefix of at least 96", str);
			prefix -= 96;
		}
		if (prefix > max)
			return ab_error(error_r, "'%s': prefix length over %u", str, max);
		cidr_r->prefix = (unsigned int)prefix;
	}
	ab_addr_mask(&cidr_r->net, cidr_r->prefix, &cidr_r->net);
	return 0;
}

int ab_cidr_list_parse(const char *str, struct ab_cidr_list *list_r,
		       const char **error_r)
{
	struct ab_cidr_list list = { NULL, 0 };
	const char *p = str;

	while (*p != '\0') {
		char item[AB_ADDR_STRLEN + 8];
		size_t len;
		struct ab_cidr *items;

		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		len = strcspn(p, ", \t");
		if (len >= sizeof(item)) {
			ab_cidr_list_free(&list);
			return ab_error(error_r, "'%.*s…' is not a network", 40, p);
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p += len;
		items = realloc(list.items, (list.count + 1) * sizeof(*items));
		if (items == NULL) {
			ab_cidr_list_free(&list);
			return ab_error(error_r, "out of memory");
		}
		list.items = items;
		if (ab_cidr_parse(item, &list.items[list.count], error_r) < 0) {
			ab_cidr_list_free(&list);
			return -1;
		}
		list.count++;
	}
	ab_cidr_list_free(list_r);
	*list_r = list;
	return 0;
}

void ab_cidr_list_free(struct ab_cidr_list *list)
{
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

bool ab_cidr_list_match(const struct ab_cidr_list *list,
			const struct ab_addr *addr)
{
	size_t i;

	for (i = 0; i < list->count; i++) {
		struct ab_addr masked;

		if (list->items[i].net.family != addr->family)
			continue;
		ab_addr_mask(addr, list->items[i].prefix, &masked);
		if (ab_addr_equal(&masked, &list->items[i].net))
			return true;
	}
	return false;
}

int ab_host_port_parse(const char *str, unsigned int default_port,
		       char host_r[AB_HOST_MAX], unsigned int *port_r,
		       const char **error_r)
{
	const char *port = NULL, *colon = strchr(str, ':');
	const char *host = str;
	struct in6_addr a6;
	size_t len;

	if (str[0] == '[') {
		const char *end = strchr(str, ']');

		if (end == NULL || (end[1] != '\0' && end[1] != ':'))
			return ab_error(error_r, "'%s': use [IPv6]:port", str);
		len = (size_t)(end - str - 1);
		if (end[1] == ':')
			port = end + 2;
		host = str + 1;
	} else if (colon != NULL && strchr(colon + 1, ':') != NULL) {
		len = strlen(str);	/* a bare IPv6 address */
		if (len >= AB_HOST_MAX || inet_pton(AF_INET6, str, &a6) != 1)
			return ab_error(error_r, "'%s' is not host:port", str);
	} else {
		len = colon != NULL ? (size_t)(colon - str) : strlen(str);
		if (colon != NULL)
			port = colon + 1;
	}
	if (len == 0 || len >= AB_HOST_MAX)
		return ab_error(error_r, "'%s': the host is %s", str,
				len == 0 ? "missing" : "too long");
	memcpy(host_r, host, len);
	host_r[len] = '\0';
	if (strspn(host_r, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "0123456789.-_:%") != len)
		return ab_error(error_r, "'%s' is not a host name or address",
				host_r);
	*port_r = default_port;
	if (port != NULL) {
		if (port[0] == '\0' || strlen(port) > 5 ||
		    strspn(port, "0123456789") != strlen(port) ||
		    atoi(port) < 1 || atoi(port) > 65535)
			return ab_error(error_r, "'%s' is not a port (1 to 65535)",
					port);
		*port_r = (unsigned int)atoi(port);
	}
	return 0;
}
