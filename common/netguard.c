/* SSRF guard: address classes, CIDR allow-list, and the dial-or-refuse decision. */
/* Ranges follow the IANA IPv4 and IPv6 special-purpose address registries. */
#include "netguard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name; /* netguard_class_name() */
    const char *why;  /* end of netguard_check()'s refusal */
} class_text[NET_CLASS_COUNT] = {
    [NET_PUBLIC] = {"public", "public address"},
    [NET_UNSPECIFIED] = {"unspecified (\"this network\", 0.0.0.0/8 or ::)",
                         "unspecified (\"this network\") address"},
    [NET_LOOPBACK] = {"loopback", "loopback address"},
    [NET_PRIVATE] = {"private", "private address"},
    [NET_LINK_LOCAL] = {"link-local (includes cloud metadata 169.254.169.254)",
                        "link-local address (includes cloud metadata 169.254.169.254)"},
    [NET_CGNAT] = {"carrier-grade NAT (includes Alibaba Cloud metadata 100.100.100.200)",
                   "carrier-grade NAT address (includes Alibaba Cloud metadata 100.100.100.200)"},
    [NET_DOCUMENTATION] = {"documentation", "documentation address"},
    [NET_BENCHMARK] = {"benchmarking", "benchmarking address"},
    [NET_MULTICAST] = {"multicast", "multicast address"},
    [NET_BROADCAST] = {"broadcast", "broadcast address"},
    [NET_RESERVED] = {"reserved", "reserved address"},
    [NET_INVALID] = {"not an IPv4 or IPv6 address", "not an IPv4 or IPv6 address"},
};

const char *netguard_class_name(enum net_class c)
{
    if ((unsigned)c >= NET_CLASS_COUNT)
        return "unknown";
    return class_text[c].name;
}

/* ::ffff:0:0/96, the IPv4-mapped prefix. */
static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* True when the first prefix bits of a and net are equal. */
static bool prefix_match(const unsigned char *a, const unsigned char *net, int prefix)
{
    size_t full = (size_t)prefix / 8;
    int rest = prefix % 8;
    if (memcmp(a, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xFF << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

/* First match wins, so a range must come before any range containing it. */
static const struct {
    unsigned char net[4];
    int prefix;
    enum net_class cls;
} v4_ranges[] = {
    {{0, 0, 0, 0}, 8, NET_UNSPECIFIED},
    {{10, 0, 0, 0}, 8, NET_PRIVATE},
    {{100, 64, 0, 0}, 10, NET_CGNAT},
    {{127, 0, 0, 0}, 8, NET_LOOPBACK},
    {{169, 254, 0, 0}, 16, NET_LINK_LOCAL},
    {{172, 16, 0, 0}, 12, NET_PRIVATE},
    {{192, 0, 0, 0}, 24, NET_RESERVED}, /* IETF protocol assignments */
    {{192, 0, 2, 0}, 24, NET_DOCUMENTATION},
    {{192, 88, 99, 0}, 24, NET_RESERVED}, /* deprecated 6to4 relay anycast (RFC 7526) */
    {{192, 168, 0, 0}, 16, NET_PRIVATE},
    {{198, 18, 0, 0}, 15, NET_BENCHMARK},
    {{198, 51, 100, 0}, 24, NET_DOCUMENTATION},
    {{203, 0, 113, 0}, 24, NET_DOCUMENTATION},
    {{224, 0, 0, 0}, 4, NET_MULTICAST},
    {{255, 255, 255, 255}, 32, NET_BROADCAST},
    {{240, 0, 0, 0}, 4, NET_RESERVED},
};

static enum net_class classify4(const unsigned char a[4])
{
    for (size_t i = 0; i < sizeof v4_ranges / sizeof v4_ranges[0]; i++)
        if (prefix_match(a, v4_ranges[i].net, v4_ranges[i].prefix))
            return v4_ranges[i].cls;
    return NET_PUBLIC;
}

/* Where an IPv6 prefix carries an IPv4 address. */
enum embed {
    EMBED_NONE,
    EMBED_LOW32,  /* bytes 12..15 */
    EMBED_6TO4,   /* bytes 2..5 */
    EMBED_TEREDO, /* bytes 12..15, inverted */
};

/* First match wins; nothing matched means NET_RESERVED (outside 2000::/3, unallocated). For an
 * embedding prefix, cls is the class when the embedded IPv4 address is public. */
static const struct {
    unsigned char net[16];
    int prefix;
    enum net_class cls;
    enum embed embed;
} v6_ranges[] = {
    {{0}, 128, NET_UNSPECIFIED, EMBED_NONE},                                           /* :: */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, NET_LOOPBACK, EMBED_NONE}, /* ::1 */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96, NET_PUBLIC, EMBED_LOW32}, /* ::ffff:0:0/96 */
    {{0}, 96, NET_RESERVED, EMBED_LOW32},                          /* ::/96 IPv4-compatible */
    {{0, 0x64, 0xff, 0x9b}, 96, NET_PUBLIC, EMBED_LOW32},          /* 64:ff9b::/96 NAT64 */
    {{0, 0x64, 0xff, 0x9b, 0, 1}, 48, NET_PRIVATE, EMBED_LOW32},   /* 64:ff9b:1::/48 local NAT64 */
    {{0x01, 0x00}, 64, NET_RESERVED, EMBED_NONE},                  /* 100::/64 discard-only */
    {{0x20, 0x01, 0, 0}, 32, NET_PUBLIC, EMBED_TEREDO},            /* 2001::/32 Teredo */
    {{0x20, 0x01, 0, 2, 0, 0}, 48, NET_BENCHMARK, EMBED_NONE},     /* 2001:2::/48 */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, NET_DOCUMENTATION, EMBED_NONE}, /* 2001:db8::/32 */
    {{0x20, 0x01}, 23, NET_RESERVED, EMBED_NONE},                  /* 2001::/23 IETF protocols */
    {{0x20, 0x02}, 16, NET_PUBLIC, EMBED_6TO4},                    /* 2002::/16 6to4 */
    {{0x3f, 0xff}, 20, NET_DOCUMENTATION, EMBED_NONE},             /* 3fff::/20 (RFC 9637) */
    {{0x20, 0x00}, 3, NET_PUBLIC, EMBED_NONE},                     /* 2000::/3 global unicast */
    {{0xfc}, 7, NET_PRIVATE, EMBED_NONE},                          /* fc00::/7 unique local */
    {{0xfe, 0x80}, 10, NET_LINK_LOCAL, EMBED_NONE},                /* fe80::/10 */
    {{0xfe, 0xc0}, 10, NET_PRIVATE, EMBED_NONE},                   /* fec0::/10 site-local */
    {{0xff}, 8, NET_MULTICAST, EMBED_NONE},                        /* ff00::/8 */
};

/* Class of the IPv6 address a; when the class comes from an embedded IPv4 address, that
 * address is copied to emb (4 bytes) and *from_emb is set. */
static enum net_class classify6(const unsigned char a[16], unsigned char emb[4], bool *from_emb)
{
    *from_emb = false;
    for (size_t i = 0; i < sizeof v6_ranges / sizeof v6_ranges[0]; i++) {
        if (!prefix_match(a, v6_ranges[i].net, v6_ranges[i].prefix))
            continue;
        switch (v6_ranges[i].embed) {
        case EMBED_NONE:
            return v6_ranges[i].cls;
        case EMBED_LOW32:
            memcpy(emb, a + 12, 4);
            break;
        case EMBED_6TO4:
            memcpy(emb, a + 2, 4);
            break;
        case EMBED_TEREDO:
            for (int k = 0; k < 4; k++)
                emb[k] = (unsigned char)~a[12 + k];
            break;
        }
        enum net_class inner = classify4(emb);
        if (inner == NET_PUBLIC)
            return v6_ranges[i].cls;
        *from_emb = true;
        return inner;
    }
    return NET_RESERVED;
}

/* Copies the address bytes of sa into a (4 or 16 bytes) and returns the family, or 0 when sa
 * is not a complete AF_INET/AF_INET6 address. memcpy, so sa needs no particular alignment. */
static int sa_bytes(const struct sockaddr *sa, socklen_t len, unsigned char a[16])
{
    sa_family_t family;
    if (!sa || len < (socklen_t)sizeof family)
        return 0;
    memcpy(&family, (const char *)sa + offsetof(struct sockaddr, sa_family), sizeof family);
    if (family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(a, (const char *)sa + offsetof(struct sockaddr_in, sin_addr), 4);
        return AF_INET;
    }
    if (family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(a, (const char *)sa + offsetof(struct sockaddr_in6, sin6_addr), 16);
        return AF_INET6;
    }
    return 0;
}

enum net_class netguard_classify(const struct sockaddr *sa, socklen_t len)
{
    unsigned char a[16], emb[4];
    bool from_emb;
    switch (sa_bytes(sa, len, a)) {
    case AF_INET:
        return classify4(a);
    case AF_INET6:
        return classify6(a, emb, &from_emb);
    default:
        return NET_INVALID;
    }
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Longest entry we try to parse: a full IPv6 address with an embedded IPv4 part and "/128". */
#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4)

/* Parses one entry s[0..len) (no surrounding blanks) into *c. */
static int parse_one(const char *s, size_t len, struct net_cidr *c, char *err, size_t errlen)
{
    char text[CIDR_TEXT_MAX + 1];
    if (len > CIDR_TEXT_MAX) {
        set_err(err, errlen, "allow-list entry \"%.*s...\" is too long", 20, s);
        return -1;
    }
    memcpy(text, s, len);
    text[len] = '\0';

    int prefix = -1;
    char *slash = strchr(text, '/');
    if (slash) {
        *slash = '\0';
        const char *p = slash + 1;
        size_t plen = strlen(p);
        bool digits = plen >= 1 && plen <= 3 && !(plen > 1 && p[0] == '0');
        for (size_t i = 0; digits && i < plen; i++)
            digits = p[i] >= '0' && p[i] <= '9';
        if (!digits) {
            set_err(err, errlen, "allow-list entry \"%s/%s\": the prefix length must be a number",
                    text, p);
            return -1;
        }
        prefix = 0;
        for (size_t i = 0; i < plen; i++)
            prefix = prefix * 10 + (p[i] - '0');
    }

    memset(c, 0, sizeof *c);
    if (inet_pton(AF_INET, text, c->addr) == 1) {
        c->family = AF_INET;
    } else if (inet_pton(AF_INET6, text, c->addr) == 1) {
        c->family = AF_INET6;
    } else {
        set_err(err, errlen, "allow-list entry \"%.*s\" is not an IPv4 or IPv6 address", (int)len,
                s);
        return -1;
    }
    int bits = c->family == AF_INET ? 32 : 128;
    if (prefix < 0)
        prefix = bits;
    if (prefix > bits) {
        set_err(err, errlen, "allow-list entry \"%.*s\": the prefix length must be 0 to %d",
                (int)len, s, bits);
        return -1;
    }
    c->prefix = prefix;
    for (int i = 0; i < 16; i++) {
        int keep = prefix - i * 8; /* bits of this byte inside the prefix */
        if (keep <= 0)
            c->addr[i] = 0;
        else if (keep < 8)
            c->addr[i] &= (unsigned char)(0xFF << (8 - keep));
    }
    if (c->family == AF_INET6 && prefix >= 96 && memcmp(c->addr, v4_mapped, 12) == 0) {
        memmove(c->addr, c->addr + 12, 4);
        memset(c->addr + 4, 0, 12);
        c->family = AF_INET;
        c->prefix = prefix - 96;
    }
    return 0;
}

int netguard_parse_cidrs(const char *list, struct net_cidr *out, size_t max, size_t *n, char *err,
                         size_t errlen)
{
    *n = 0;
    if (!list) {
        set_err(err, errlen, "allow-list is missing");
        return -1;
    }
    const char *p = list;
    while (is_blank(*p))
        p++;
    if (*p == '\0')
        return 0;

    size_t count = 0;
    for (;;) {
        while (is_blank(*p))
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',' && !is_blank(*p))
            p++;
        size_t len = (size_t)(p - start);
        while (is_blank(*p))
            p++;
        if (*p != '\0' && *p != ',') {
            set_err(err, errlen, "allow-list entries must be separated by commas (at \"%.*s\")", 20,
                    start);
            return -1;
        }
        if (len == 0) {
            set_err(err, errlen, "allow-list has an empty entry");
            return -1;
        }
        if (count == max) {
            set_err(err, errlen, "allow-list has more than %zu entries", max);
            return -1;
        }
        if (parse_one(start, len, &out[count], err, errlen) < 0)
            return -1;
        count++;
        if (*p == '\0')
            break;
        p++; /* ',' */
    }
    *n = count;
    return 0;
}

bool netguard_cidr_match(const struct net_cidr *c, size_t n, const struct sockaddr *sa,
                         socklen_t len)
{
    unsigned char a[16];
    int family = sa_bytes(sa, len, a);
    if (family == 0)
        return false;
    bool is_mapped = family == AF_INET6 && memcmp(a, v4_mapped, 12) == 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].family == family && prefix_match(a, c[i].addr, c[i].prefix))
            return true;
        if (is_mapped && c[i].family == AF_INET && prefix_match(a + 12, c[i].addr, c[i].prefix))
            return true;
    }
    return false;
}

/* "a.b.c.d" or "v6[%scope]" into buf. */
static void format_addr(int family, const unsigned char a[16], const struct sockaddr *sa, char *buf,
                        size_t buflen)
{
    if (!inet_ntop(family, a, buf, (socklen_t)buflen)) {
        snprintf(buf, buflen, "?");
        return;
    }
    if (family == AF_INET6) {
        uint32_t scope;
        memcpy(&scope, (const char *)sa + offsetof(struct sockaddr_in6, sin6_scope_id),
               sizeof scope);
        size_t used = strlen(buf);
        if (scope != 0 && used < buflen)
            snprintf(buf + used, buflen - used, "%%%u", (unsigned)scope);
    }
}

int netguard_check(const struct sockaddr *sa, socklen_t len, bool allow_private,
                   const struct net_cidr *allow, size_t nallow, char *why, size_t whylen)
{
    unsigned char a[16], emb[4];
    bool from_emb = false;
    enum net_class cls;
    int family = sa_bytes(sa, len, a);
    if (family == AF_INET) {
        cls = classify4(a);
    } else if (family == AF_INET6) {
        cls = classify6(a, emb, &from_emb);
    } else {
        set_err(why, whylen, "refusing to connect: not an IPv4 or IPv6 address");
        return -1;
    }
    if (cls == NET_PUBLIC || allow_private || netguard_cidr_match(allow, nallow, sa, len))
        return 0;

    char text[INET6_ADDRSTRLEN + 16];
    format_addr(family, a, sa, text, sizeof text);
    if (from_emb) {
        char inner[INET_ADDRSTRLEN];
        if (!inet_ntop(AF_INET, emb, inner, sizeof inner))
            snprintf(inner, sizeof inner, "?");
        set_err(why, whylen, "refusing to connect to %s: %s (embedded IPv4 %s)", text,
                class_text[cls].why, inner);
    } else {
        set_err(why, whylen, "refusing to connect to %s: %s", text, class_text[cls].why);
    }
    return -1;
}

int netguard_init(struct netguard *g, bool allow_private, bool https_only, const char *cidrs,
                  char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    g->allow_private = allow_private;
    g->https_only = https_only;
    return netguard_parse_cidrs(cidrs ? cidrs : "", g->allow, NETGUARD_CIDRS_MAX, &g->nallow, err,
                                errlen);
}

int netguard_allows(const struct netguard *g, const struct sockaddr *sa, socklen_t len, char *why,
                    size_t whylen)
{
    return netguard_check(sa, len, g->allow_private, g->allow, g->nallow, why, whylen);
}

void netguard_describe(const struct netguard *g, char *out, size_t outlen)
{
    size_t used = 0;
    int n;
    if (g->allow_private)
        n = snprintf(out, outlen, "off: every address may be dialled "
                                  "(WEBHOOK_ALLOW_PRIVATE_NETWORKS=1, development only)");
    else
        n = snprintf(out, outlen, "on: public addresses only");
    used = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; !g->allow_private && i < g->nallow && used < outlen; i++) {
        char text[INET6_ADDRSTRLEN];
        if (!inet_ntop(g->allow[i].family, g->allow[i].addr, text, sizeof text))
            snprintf(text, sizeof text, "?");
        n = snprintf(out + used, outlen - used, "%s%s/%d", i == 0 ? ", and " : ", ", text,
                     g->allow[i].prefix);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < outlen)
        snprintf(out + used, outlen - used, "%s",
                 g->https_only ? "; https only" : "; http and https");
}

bool netguard_is_localhost_name(const char *host)
{
    static const char name[] = "localhost";
    size_t n = strlen(host), k = sizeof name - 1;
    if (n > 0 && host[n - 1] == '.')
        n--;
    if (n < k || strncasecmp(host + n - k, name, k) != 0)
        return false;
    return n == k || host[n - k - 1] == '.';
}
