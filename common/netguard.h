/* SSRF guard: address classes, CIDR allow-list, and the dial-or-refuse decision. */
/* Pure functions (no DNS, no sockets): common/dialguard.c calls them from
 * CURLOPT_OPENSOCKETFUNCTION (the worker's deliveries, the broker's endpoint verification) so
 * the check applies to the address actually dialled, the broker also on the addresses a
 * webhook URL's host resolves to at registration. */
#ifndef WH_NETGUARD_H
#define WH_NETGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* What kind of destination an address is. Only NET_PUBLIC may be dialled by default. */
enum net_class {
    NET_PUBLIC = 0,    /* IPv4 not listed below; IPv6 global unicast 2000::/3 not listed */
    NET_UNSPECIFIED,   /* 0.0.0.0/8 ("this network"; 0.0.0.0 reaches the local host), ::/128 */
    NET_LOOPBACK,      /* 127.0.0.0/8, ::1/128 */
    NET_PRIVATE,       /* 10/8, 172.16/12, 192.168/16, fc00::/7 ULA, fec0::/10 site-local,
                        * 64:ff9b:1::/48 local-use NAT64 */
    NET_LINK_LOCAL,    /* 169.254.0.0/16 (cloud metadata 169.254.169.254), fe80::/10 */
    NET_CGNAT,         /* 100.64.0.0/10 shared address space (Alibaba metadata 100.100.100.200) */
    NET_DOCUMENTATION, /* 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20 */
    NET_BENCHMARK,     /* 198.18.0.0/15, 2001:2::/48 */
    NET_MULTICAST,     /* 224.0.0.0/4, ff00::/8 */
    NET_BROADCAST,     /* 255.255.255.255 */
    NET_RESERVED,      /* 192.0.0.0/24 and 2001::/23 (IETF protocol assignments), 192.88.99.0/24
                        * (deprecated 6to4 relay anycast), 240.0.0.0/4, 100::/64 (discard),
                        * deprecated IPv4-compatible ::a.b.c.d, and all IPv6 outside 2000::/3
                        * that is not listed above (unallocated) */
    NET_INVALID,       /* not an AF_INET/AF_INET6 address, or a too-short socklen */
    NET_CLASS_COUNT
};

/* Human-readable name of a class ("loopback", "link-local (includes cloud metadata
 * 169.254.169.254)"); a static string, never NULL (out-of-range values give "unknown"). */
const char *netguard_class_name(enum net_class c);

/* Classifies sa (AF_INET needs len >= sizeof(struct sockaddr_in), AF_INET6 needs
 * len >= sizeof(struct sockaddr_in6); anything else is NET_INVALID). IPv6 forms that carry an
 * IPv4 address take the class of that address when it is not public: IPv4-mapped
 * ::ffff:0:0/96, IPv4-compatible ::/96, NAT64 64:ff9b::/96 and 64:ff9b:1::/48 (last 32 bits),
 * 6to4 2002::/16 (bits 16..47) and Teredo 2001::/32 (client = last 32 bits inverted). When the
 * embedded address is public the outer prefix decides: mapped, NAT64, 6to4 and Teredo are
 * public, local-use NAT64 is private and IPv4-compatible is reserved. The scope id and port
 * are ignored. */
enum net_class netguard_classify(const struct sockaddr *sa, socklen_t len);

/* One allow-list entry. family is AF_INET (addr[0..4)) or AF_INET6 (addr[0..16)); the bits
 * past prefix are zero. */
struct net_cidr {
    int family;
    unsigned char addr[16];
    int prefix;
};

/* Parses a comma-separated list such as "10.0.0.0/8, 192.168.1.5, fd00::/8" into out[0..max).
 * Addresses use the canonical numeric forms of inet_pton (no "127.1", no "%scope"); a bare
 * address is a /32 or /128; the prefix is decimal without sign or leading zero, 0..32 for IPv4
 * and 0..128 for IPv6; host bits are accepted and cleared. An IPv6 entry inside ::ffff:0:0/96
 * with a prefix of at least 96 is stored as the equivalent IPv4 entry. Spaces and tabs are
 * allowed around entries; an empty or all-blank list yields *n = 0. Empty entries ("a,,b",
 * a trailing comma) and more than max entries are errors. Returns 0 with the count in *n, or
 * -1 with *n = 0 and a reason in err. */
int netguard_parse_cidrs(const char *list, struct net_cidr *out, size_t max, size_t *n, char *err,
                         size_t errlen) __attribute__((warn_unused_result));

/* True when sa lies in one of c[0..n). An IPv4-mapped IPv6 address (::ffff:a.b.c.d) also
 * matches the IPv4 entries. An invalid sa matches nothing. */
bool netguard_cidr_match(const struct net_cidr *c, size_t n, const struct sockaddr *sa,
                         socklen_t len);

/* 0 when sa may be dialled: its class is NET_PUBLIC, or allow_private is set (every class but
 * NET_INVALID is then allowed, loopback and link-local included), or it matches allow[0..nallow).
 * Otherwise -1 with a reason in why ("refusing to connect to 127.0.0.1: loopback address"). */
int netguard_check(const struct sockaddr *sa, socklen_t len, bool allow_private,
                   const struct net_cidr *allow, size_t nallow, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* The guard's settings, the same in the broker and the worker (WEBHOOK_ALLOW_PRIVATE_NETWORKS,
 * WEBHOOK_ALLOWED_CIDRS, WEBHOOK_HTTPS_ONLY). */
#define NETGUARD_CIDRS_MAX 64
struct netguard {
    bool allow_private; /* every address but NET_INVALID may be dialled: the guard is off */
    bool https_only;    /* only https:// URLs are accepted and delivered to */
    struct net_cidr allow[NETGUARD_CIDRS_MAX];
    size_t nallow;
};

/* Fills g; cidrs is a netguard_parse_cidrs() list (may be empty). 0, or -1 with a reason. */
int netguard_init(struct netguard *g, bool allow_private, bool https_only, const char *cidrs,
                  char *err, size_t errlen) __attribute__((warn_unused_result));

/* netguard_check() with g's settings. */
int netguard_allows(const struct netguard *g, const struct sockaddr *sa, socklen_t len, char *why,
                    size_t whylen) __attribute__((warn_unused_result));

/* One line for the start-up log: "on (public addresses only; also 10.0.0.0/8), http and https". */
void netguard_describe(const struct netguard *g, char *out, size_t outlen);

/* True for the names that always mean the local host (RFC 6761, as libcurl treats them):
 * "localhost" and any name ending in ".localhost", with or without a final dot, any case. */
bool netguard_is_localhost_name(const char *host);

#endif
