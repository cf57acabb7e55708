/* libFuzzer target: common/netguard.c classification, allow-list parsing, dial check and
 * localhost names. */
/* Leading bytes are a socket address to classify and check, the rest a CIDR allow-list;
 * cross-checks IPv6 forms embedding IPv4 and an allow-list format/parse round trip. */
#include "netguard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CIDRS 8

static socklen_t sa4(struct sockaddr_storage *ss, const uint8_t a[4])
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof *ss);
    in4->sin_family = AF_INET;
    memcpy(&in4->sin_addr, a, 4);
    return sizeof *in4;
}

static socklen_t sa6(struct sockaddr_storage *ss, const uint8_t a[16])
{
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, a, 16);
    return sizeof *in6;
}

static enum net_class classify6(const uint8_t a[16])
{
    struct sockaddr_storage ss;
    socklen_t len = sa6(&ss, a);
    return netguard_classify((const struct sockaddr *)&ss, len);
}

/* v4 and each IPv6 form embedding it must agree whenever v4 is not public. */
static void check_embeddings(const uint8_t v4[4])
{
    struct sockaddr_storage ss;
    socklen_t len = sa4(&ss, v4);
    enum net_class inner = netguard_classify((const struct sockaddr *)&ss, len);
    uint8_t a[16];
    struct {
        const char *form;
        uint8_t prefix[12];
        int at;      /* where v4 goes */
        bool invert; /* Teredo */
        enum net_class outer;
    } forms[] = {
        {"mapped", {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 12, false, NET_PUBLIC},
        {"nat64", {0, 0x64, 0xff, 0x9b}, 12, false, NET_PUBLIC},
        {"local nat64", {0, 0x64, 0xff, 0x9b, 0, 1, 0xab, 0xcd}, 12, false, NET_PRIVATE},
        {"6to4", {0x20, 0x02}, 2, false, NET_PUBLIC},
        {"teredo",
         {0x20, 0x01, 0, 0, 0x41, 0x36, 0xe3, 0x78, 0x80, 0, 0x63, 0xbf},
         12,
         true,
         NET_PUBLIC},
    };
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
        memset(a, 0, sizeof a);
        memcpy(a, forms[f].prefix, 12);
        if (forms[f].at == 2)
            memset(a + 6, 0x5a, 10); /* 6to4 subnet and interface id */
        for (int k = 0; k < 4; k++)
            a[forms[f].at + k] = forms[f].invert ? (uint8_t)~v4[k] : v4[k];
        enum net_class want = inner == NET_PUBLIC ? forms[f].outer : inner;
        enum net_class got = classify6(a);
        if (got != want) {
            fprintf(stderr, "fuzz_netguard: %u.%u.%u.%u is %s but its %s form is %s\n", v4[0],
                    v4[1], v4[2], v4[3], netguard_class_name(inner), forms[f].form,
                    netguard_class_name(got));
            abort();
        }
    }
}

/* Parsed entries are in range with clear host bits, and survive a format/parse round trip. */
static void check_cidrs(const struct net_cidr *c, size_t n)
{
    char text[MAX_CIDRS * (INET6_ADDRSTRLEN + 8)];
    size_t used = 0;
    text[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int bits = c[i].family == AF_INET ? 32 : 128;
        if ((c[i].family != AF_INET && c[i].family != AF_INET6) || c[i].prefix < 0 ||
            c[i].prefix > bits)
            abort();
        for (int b = c[i].prefix; b < 128; b++)
            if (c[i].addr[b / 8] & (0x80 >> (b % 8)))
                abort();
        char addr[INET6_ADDRSTRLEN];
        if (!inet_ntop(c[i].family, c[i].addr, addr, sizeof addr))
            abort();
        used += (size_t)snprintf(text + used, sizeof text - used, "%s%s/%d", i ? ", " : "", addr,
                                 c[i].prefix);
    }
    struct net_cidr again[MAX_CIDRS];
    size_t n2;
    char err[200];
    if (netguard_parse_cidrs(text, again, MAX_CIDRS, &n2, err, sizeof err) != 0 || n2 != n) {
        fprintf(stderr, "fuzz_netguard: \"%s\" does not parse back: %s\n", text, err);
        abort();
    }
    for (size_t i = 0; i < n; i++)
        if (again[i].family != c[i].family || again[i].prefix != c[i].prefix ||
            memcmp(again[i].addr, c[i].addr, 16) != 0)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    bool allow_private = flags & 4;
    data++;
    size--;

    struct sockaddr_storage ss;
    socklen_t len;
    size_t take;
    switch (flags & 3) {
    case 0: /* IPv4 */
    case 3: /* IPv4, cross-checked against its IPv6 embeddings */
        if (size < 4)
            return 0;
        len = sa4(&ss, data);
        if ((flags & 3) == 3)
            check_embeddings(data);
        take = 4;
        break;
    case 1: /* IPv6 */
        if (size < 16)
            return 0;
        len = sa6(&ss, data);
        take = 16;
        break;
    default: /* raw bytes (up to a sockaddr_in6), any family, any length up to sizeof ss */
        if (size < 1)
            return 0;
        memset(&ss, 0, sizeof ss);
        take = size - 1 < sizeof(struct sockaddr_in6) ? size - 1 : sizeof(struct sockaddr_in6);
        memcpy(&ss, data + 1, take);
        len = data[0] <= sizeof ss ? data[0] : sizeof ss;
        take += 1;
        break;
    }
    data += take;
    size -= take;
    const struct sockaddr *sa = (const struct sockaddr *)&ss;

    enum net_class cls = netguard_classify(sa, len);
    if ((unsigned)cls >= NET_CLASS_COUNT || !netguard_class_name(cls))
        abort();

    char *list = malloc(size + 1);
    if (!list)
        abort();
    memcpy(list, data, size);
    list[size] = '\0';
    struct net_cidr allow[MAX_CIDRS];
    size_t nallow = 99;
    char err[200];
    err[0] = '\0';
    if (netguard_parse_cidrs(list, allow, MAX_CIDRS, &nallow, err, sizeof err) != 0) {
        if (nallow != 0 || err[0] == '\0')
            abort();
    } else {
        check_cidrs(allow, nallow);
    }
    /* The same bytes as a host name: "localhost" names are told apart as libcurl does. */
    const char *dot_end = list + strlen(list);
    if (dot_end > list && dot_end[-1] == '.')
        dot_end--;
    size_t nl = (size_t)(dot_end - list);
    bool want_local = nl >= 9 && strncasecmp(dot_end - 9, "localhost", 9) == 0 &&
                      (nl == 9 || dot_end[-10] == '.');
    if (netguard_is_localhost_name(list) != want_local)
        abort();
    free(list);

    bool match = netguard_cidr_match(allow, nallow, sa, len);
    char why[200];
    why[0] = '\0';
    int rc = netguard_check(sa, len, allow_private, allow, nallow, why, sizeof why);
    bool want_ok = cls == NET_PUBLIC || (allow_private && cls != NET_INVALID) || match;
    if ((rc == 0) != want_ok || (rc != 0 && why[0] == '\0'))
        abort();
    char tiny[3];
    if (netguard_check(sa, len, allow_private, allow, nallow, tiny, sizeof tiny) != rc)
        abort();
    return 0;
}
