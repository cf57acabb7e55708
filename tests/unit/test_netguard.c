/* Unit tests for common/netguard.c (SSRF address classes, CIDR allow-list, dial decision). */
/* Every range with its edges, hostile spellings as getaddrinfo parses them, allow-list parsing
 * and matching, and the refusal messages. */
#include "netguard.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>

/* A sockaddr for the canonical numeric address s (inet_pton, IPv4 first). */
static socklen_t make_sa(const char *s, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(443);
        return sizeof *in4;
    }
    if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(443);
        return sizeof *in6;
    }
    fprintf(stderr, "test bug: inet_pton cannot parse %s\n", s);
    abort();
}

static enum net_class cls(const char *s)
{
    struct sockaddr_storage ss;
    socklen_t len = make_sa(s, &ss);
    return netguard_classify((const struct sockaddr *)&ss, len);
}

struct cls_case {
    const char *addr;
    enum net_class want;
};

static void run_cases(const struct cls_case *c, size_t n, int line)
{
    for (size_t i = 0; i < n; i++) {
        enum net_class got = cls(c[i].addr);
        if (!unit_check(got == c[i].want, __FILE__, line, c[i].addr))
            fprintf(stderr, "    %s: got %s, want %s\n", c[i].addr, netguard_class_name(got),
                    netguard_class_name(c[i].want));
    }
}

#define RUN(cases) run_cases(cases, sizeof cases / sizeof cases[0], __LINE__)

/* Each range: the address before it, its first and last address, the address after it. */
static void test_ipv4_ranges(void)
{
    static const struct cls_case cases[] = {
        {"0.0.0.0", NET_UNSPECIFIED},
        {"0.255.255.255", NET_UNSPECIFIED},
        {"1.0.0.0", NET_PUBLIC},

        {"9.255.255.255", NET_PUBLIC},
        {"10.0.0.0", NET_PRIVATE},
        {"10.255.255.255", NET_PRIVATE},
        {"11.0.0.0", NET_PUBLIC},

        {"100.63.255.255", NET_PUBLIC},
        {"100.64.0.0", NET_CGNAT},
        {"100.100.100.200", NET_CGNAT}, /* Alibaba Cloud metadata */
        {"100.127.255.255", NET_CGNAT},
        {"100.128.0.0", NET_PUBLIC},

        {"126.255.255.255", NET_PUBLIC},
        {"127.0.0.0", NET_LOOPBACK},
        {"127.0.0.1", NET_LOOPBACK},
        {"127.255.255.255", NET_LOOPBACK},
        {"128.0.0.0", NET_PUBLIC},

        {"169.253.255.255", NET_PUBLIC},
        {"169.254.0.0", NET_LINK_LOCAL},
        {"169.254.169.254", NET_LINK_LOCAL}, /* AWS, GCP, Azure, ... metadata */
        {"169.254.255.255", NET_LINK_LOCAL},
        {"169.255.0.0", NET_PUBLIC},

        {"172.15.255.255", NET_PUBLIC},
        {"172.16.0.0", NET_PRIVATE},
        {"172.31.255.255", NET_PRIVATE},
        {"172.32.0.0", NET_PUBLIC},

        {"191.255.255.255", NET_PUBLIC},
        {"192.0.0.0", NET_RESERVED},
        {"192.0.0.255", NET_RESERVED},
        {"192.0.1.0", NET_PUBLIC},
        {"192.0.0.192", NET_RESERVED}, /* Oracle Cloud metadata */

        {"192.0.1.255", NET_PUBLIC},
        {"192.0.2.0", NET_DOCUMENTATION},
        {"192.0.2.255", NET_DOCUMENTATION},
        {"192.0.3.0", NET_PUBLIC},

        {"192.88.98.255", NET_PUBLIC},
        {"192.88.99.0", NET_RESERVED},
        {"192.88.99.255", NET_RESERVED},
        {"192.88.100.0", NET_PUBLIC},

        {"192.167.255.255", NET_PUBLIC},
        {"192.168.0.0", NET_PRIVATE},
        {"192.168.255.255", NET_PRIVATE},
        {"192.169.0.0", NET_PUBLIC},

        {"198.17.255.255", NET_PUBLIC},
        {"198.18.0.0", NET_BENCHMARK},
        {"198.19.255.255", NET_BENCHMARK},
        {"198.20.0.0", NET_PUBLIC},

        {"198.51.99.255", NET_PUBLIC},
        {"198.51.100.0", NET_DOCUMENTATION},
        {"198.51.100.255", NET_DOCUMENTATION},
        {"198.51.101.0", NET_PUBLIC},

        {"203.0.112.255", NET_PUBLIC},
        {"203.0.113.0", NET_DOCUMENTATION},
        {"203.0.113.255", NET_DOCUMENTATION},
        {"203.0.114.0", NET_PUBLIC},

        {"223.255.255.255", NET_PUBLIC},
        {"224.0.0.0", NET_MULTICAST},
        {"239.255.255.255", NET_MULTICAST},
        {"240.0.0.0", NET_RESERVED},
        {"255.255.255.254", NET_RESERVED},
        {"255.255.255.255", NET_BROADCAST},

        {"8.8.8.8", NET_PUBLIC},
        {"1.1.1.1", NET_PUBLIC},
        {"93.184.215.14", NET_PUBLIC},
    };
    RUN(cases);
}

static void test_ipv6_ranges(void)
{
    static const struct cls_case cases[] = {
        {"::", NET_UNSPECIFIED},
        {"::1", NET_LOOPBACK},
        /* ::/96 IPv4-compatible (deprecated): the embedded class, else reserved */
        {"::2", NET_UNSPECIFIED}, /* 0.0.0.2 */
        {"::127.0.0.1", NET_LOOPBACK},
        {"::10.1.2.3", NET_PRIVATE},
        {"::8.8.8.8", NET_RESERVED},
        {"::255.255.255.255", NET_BROADCAST},
        {"::1:0:0", NET_RESERVED}, /* first after ::/96 */

        /* ::ffff:0:0/96 IPv4-mapped */
        {"::fffe:ffff:ffff", NET_RESERVED},
        {"::ffff:0.0.0.0", NET_UNSPECIFIED},
        {"::ffff:127.0.0.1", NET_LOOPBACK},
        {"::ffff:10.0.0.1", NET_PRIVATE},
        {"::ffff:169.254.169.254", NET_LINK_LOCAL},
        {"::ffff:100.100.100.200", NET_CGNAT},
        {"::ffff:192.0.2.1", NET_DOCUMENTATION},
        {"::ffff:8.8.8.8", NET_PUBLIC},
        {"::ffff:255.255.255.255", NET_BROADCAST},
        {"::1:0:0:0", NET_RESERVED},

        /* 64:ff9b::/96 NAT64 */
        {"64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"64:ff9b::", NET_UNSPECIFIED},
        {"64:ff9b::8.8.8.8", NET_PUBLIC},
        {"64:ff9b::127.0.0.1", NET_LOOPBACK},
        {"64:ff9b::a9fe:a9fe", NET_LINK_LOCAL},
        {"64:ff9b::255.255.255.255", NET_BROADCAST},
        {"64:ff9b::1:0:0", NET_RESERVED},
        /* 64:ff9b:1::/48 local-use NAT64: private unless the embedded address is not public */
        {"64:ff9b:0:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"64:ff9b:1::", NET_UNSPECIFIED},
        {"64:ff9b:1::808:808", NET_PRIVATE},
        {"64:ff9b:1::7f00:1", NET_LOOPBACK},
        {"64:ff9b:1:ffff:ffff:ffff:ffff:ffff", NET_BROADCAST},
        {"64:ff9b:2::", NET_RESERVED},

        /* 100::/64 discard-only */
        {"ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"100::", NET_RESERVED},
        {"100::ffff:ffff:ffff:ffff", NET_RESERVED},
        {"100:0:0:1::", NET_RESERVED}, /* outside 2000::/3 too */

        /* 2000::/3 global unicast */
        {"1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"2000::", NET_PUBLIC},
        {"2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PUBLIC},
        {"3fff:1000::", NET_PUBLIC},
        {"3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PUBLIC},
        {"4000::", NET_RESERVED},
        {"5f00::1", NET_RESERVED}, /* SRv6 SIDs */

        /* 2001::/32 Teredo: client IPv4 = last 32 bits inverted */
        {"2001::", NET_BROADCAST},                                   /* client 255.255.255.255 */
        {"2001:0:ffff:ffff:ffff:ffff:ffff:ffff", NET_UNSPECIFIED},   /* client 0.0.0.0 */
        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", NET_DOCUMENTATION}, /* RFC 4380: 192.0.2.45 */
        {"2001:0:4136:e378:8000:63bf:80ff:fffe", NET_LOOPBACK},      /* client 127.0.0.1 */
        {"2001:0:4136:e378:8000:63bf:5601:5601", NET_LINK_LOCAL},    /* 169.254.169.254 */
        {"2001:0:4136:e378:8000:63bf:f7f7:f7f7", NET_PUBLIC},        /* client 8.8.8.8 */
        /* 2001:2::/48 benchmarking inside 2001::/23 */
        {"2001:1:ffff:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"2001:2::", NET_BENCHMARK},
        {"2001:2:0:ffff:ffff:ffff:ffff:ffff", NET_BENCHMARK},
        {"2001:2:1::", NET_RESERVED},
        /* 2001::/23 IETF protocol assignments */
        {"2001:1::", NET_RESERVED},
        {"2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"2001:200::", NET_PUBLIC},

        /* 2001:db8::/32 and 3fff::/20 documentation */
        {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", NET_PUBLIC},
        {"2001:db8::", NET_DOCUMENTATION},
        {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", NET_DOCUMENTATION},
        {"2001:db9::", NET_PUBLIC},
        {"3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PUBLIC},
        {"3fff::", NET_DOCUMENTATION},
        {"3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", NET_DOCUMENTATION},

        /* 2002::/16 6to4: embedded IPv4 in bits 16..47 */
        {"2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PUBLIC},
        {"2002::", NET_UNSPECIFIED},
        {"2002:808:808::1", NET_PUBLIC},
        {"2002:7f00:1::", NET_LOOPBACK},
        {"2002:a9fe:a9fe::1", NET_LINK_LOCAL},
        {"2002:c0a8:101::", NET_PRIVATE},
        {"2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_BROADCAST},
        {"2003::", NET_PUBLIC},

        /* fc00::/7 unique local */
        {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"fc00::", NET_PRIVATE},
        {"fd00::1", NET_PRIVATE},
        {"fd00:ec2::254", NET_PRIVATE}, /* AWS metadata over IPv6 */
        {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PRIVATE},
        {"fe00::", NET_RESERVED},
        /* fe80::/10 link-local, fec0::/10 site-local */
        {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_RESERVED},
        {"fe80::", NET_LINK_LOCAL},
        {"fe80::1", NET_LINK_LOCAL},
        {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_LINK_LOCAL},
        {"fec0::", NET_PRIVATE},
        {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PRIVATE},
        /* ff00::/8 multicast */
        {"ff00::", NET_MULTICAST},
        {"ff02::1", NET_MULTICAST},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_MULTICAST},

        {"2606:4700:4700::1111", NET_PUBLIC},
        {"2a00:1450::1", NET_PUBLIC},
        {"2001:4860:4860::8888", NET_PUBLIC},
    };
    RUN(cases);
}

static void test_class_names(void)
{
    CHECK_STR(netguard_class_name(NET_PUBLIC), "public");
    CHECK_STR(netguard_class_name(NET_LOOPBACK), "loopback");
    CHECK_STR(netguard_class_name(NET_PRIVATE), "private");
    CHECK_STR(netguard_class_name(NET_LINK_LOCAL),
              "link-local (includes cloud metadata 169.254.169.254)");
    CHECK_STR(netguard_class_name((enum net_class)NET_CLASS_COUNT), "unknown");
    CHECK_STR(netguard_class_name((enum net_class) - 1), "unknown");
    for (int c = 0; c < NET_CLASS_COUNT; c++) {
        const char *name = netguard_class_name((enum net_class)c);
        CHECK(name && name[0] && strcmp(name, "unknown") != 0);
    }
}

/* Class of s as getaddrinfo(AI_NUMERICHOST) reads it, or -1 when getaddrinfo refuses it.
 * The normalized address goes to norm. */
static int gai_class(const char *s, char *norm, size_t normlen)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    norm[0] = '\0';
    if (getaddrinfo(s, "443", &hints, &res) != 0)
        return -1;
    const void *a = res->ai_family == AF_INET
                        ? (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
                        : (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
    if (!inet_ntop(res->ai_family, a, norm, (socklen_t)normlen))
        norm[0] = '\0';
    int c = (int)netguard_classify(res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return c;
}

/* RELIABILITY.md's hostile spellings. glibc 2.36's getaddrinfo(AI_NUMERICHOST) parses IPv4 with
 * inet_aton rules (shortened "127.1", a single 32-bit number "2130706433", hex "0x7f000001",
 * octal parts "0177.0.0.1") but, since glibc 2.32, refuses trailing garbage or whitespace.
 * It does not take URL syntax: "[::1]" and "%25" zone escapes are the URL parser's business,
 * and names such as "localhost." are refused outright (no DNS with AI_NUMERICHOST). A scope
 * "%lo" is resolved to an interface index. */
static void test_spellings(void)
{
    static const struct {
        const char *spelling;
        const char *normalized; /* NULL: getaddrinfo refuses it */
        enum net_class want;
    } cases[] = {
        {"127.1", "127.0.0.1", NET_LOOPBACK},
        {"2130706433", "127.0.0.1", NET_LOOPBACK},
        {"0x7f000001", "127.0.0.1", NET_LOOPBACK},
        {"0177.0.0.1", "127.0.0.1", NET_LOOPBACK},
        {"017700000001", "127.0.0.1", NET_LOOPBACK},
        {"0x7f.1", "127.0.0.1", NET_LOOPBACK},
        {"127.0.1", "127.0.0.1", NET_LOOPBACK},
        {"0.0.0.0", "0.0.0.0", NET_UNSPECIFIED},
        {"0", "0.0.0.0", NET_UNSPECIFIED},
        {"0xffffffff", "255.255.255.255", NET_BROADCAST},
        {"169.254.169.254", "169.254.169.254", NET_LINK_LOCAL},
        {"0xa9fea9fe", "169.254.169.254", NET_LINK_LOCAL},
        {"2852039166", "169.254.169.254", NET_LINK_LOCAL},
        {"100.100.100.200", "100.100.100.200", NET_CGNAT},
        {"::", "::", NET_UNSPECIFIED},
        {"::1", "::1", NET_LOOPBACK},
        {"0:0:0:0:0:0:0:1", "::1", NET_LOOPBACK},
        {"::ffff:127.0.0.1", "::ffff:127.0.0.1", NET_LOOPBACK},
        {"::FFFF:7f00:1", "::ffff:127.0.0.1", NET_LOOPBACK},
        {"::ffff:a9fe:a9fe", "::ffff:169.254.169.254", NET_LINK_LOCAL},
        {"::127.0.0.1", "::127.0.0.1", NET_LOOPBACK},
        {"64:ff9b::127.0.0.1", "64:ff9b::7f00:1", NET_LOOPBACK},
        {"fe80::1%lo", "fe80::1", NET_LINK_LOCAL},
        {"fe80::1%1", "fe80::1", NET_LINK_LOCAL},
        {"[::1]", NULL, NET_INVALID},
        {"fe80::1%25lo", NULL, NET_INVALID},
        {"localhost.", NULL, NET_INVALID},
        {"127.0.0.1 ", NULL, NET_INVALID},
        {"127.0.0.1.", NULL, NET_INVALID},
        {"08.0.0.1", NULL, NET_INVALID},
        {"4294967296", NULL, NET_INVALID},
        {"::ffff:127.1", NULL, NET_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char norm[INET6_ADDRSTRLEN];
        int got = gai_class(cases[i].spelling, norm, sizeof norm);
        if (!cases[i].normalized) {
            if (!unit_check(got == -1, __FILE__, __LINE__, cases[i].spelling))
                fprintf(stderr, "    getaddrinfo accepted \"%s\" as %s\n", cases[i].spelling, norm);
            continue;
        }
        if (!unit_check(got == (int)cases[i].want, __FILE__, __LINE__, cases[i].spelling))
            fprintf(stderr, "    \"%s\": got %s, want %s\n", cases[i].spelling,
                    got < 0 ? "(getaddrinfo refused)" : netguard_class_name((enum net_class)got),
                    netguard_class_name(cases[i].want));
        if (!unit_check(strcmp(norm, cases[i].normalized) == 0, __FILE__, __LINE__,
                        cases[i].spelling))
            fprintf(stderr, "    \"%s\" normalized to \"%s\", want \"%s\"\n", cases[i].spelling,
                    norm, cases[i].normalized);
    }
}

static void test_invalid_sockaddr(void)
{
    struct sockaddr_storage ss;
    socklen_t len = make_sa("8.8.8.8", &ss);
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    CHECK_EQ_INT(netguard_classify(sa, len), NET_PUBLIC);
    CHECK_EQ_INT(netguard_classify(sa, len - 1), NET_INVALID);
    CHECK_EQ_INT(netguard_classify(sa, 0), NET_INVALID);
    CHECK_EQ_INT(netguard_classify(NULL, len), NET_INVALID);
    len = make_sa("2606:4700:4700::1111", &ss);
    CHECK_EQ_INT(netguard_classify(sa, len), NET_PUBLIC);
    CHECK_EQ_INT(netguard_classify(sa, (socklen_t)sizeof(struct sockaddr_in)), NET_INVALID);
    ss.ss_family = AF_UNIX;
    CHECK_EQ_INT(netguard_classify(sa, sizeof ss), NET_INVALID);
    ss.ss_family = AF_UNSPEC;
    CHECK_EQ_INT(netguard_classify(sa, sizeof ss), NET_INVALID);
}

static char cidr_err[256];

static int parse(const char *list, struct net_cidr *out, size_t max, size_t *n)
{
    cidr_err[0] = '\0';
    return netguard_parse_cidrs(list, out, max, n, cidr_err, sizeof cidr_err);
}

static void test_parse_cidrs(void)
{
    struct net_cidr c[8];
    size_t n = 99;
    unsigned char want[16];

    CHECK_EQ_INT(parse("10.0.0.0/8, 192.168.1.5, fd00::/8", c, 8, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(c[0].family, AF_INET);
    CHECK_EQ_INT(c[0].prefix, 8);
    CHECK(memcmp(c[0].addr, "\x0a\0\0\0", 4) == 0);
    CHECK_EQ_INT(c[1].family, AF_INET);
    CHECK_EQ_INT(c[1].prefix, 32);
    CHECK(memcmp(c[1].addr, "\xc0\xa8\x01\x05", 4) == 0);
    CHECK_EQ_INT(c[2].family, AF_INET6);
    CHECK_EQ_INT(c[2].prefix, 8);
    memset(want, 0, sizeof want);
    want[0] = 0xfd;
    CHECK(memcmp(c[2].addr, want, 16) == 0);

    CHECK_EQ_INT(parse(" \t10.0.0.0/8 ,192.168.1.5\t,  ::1 ", c, 8, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(c[2].prefix, 128);

    n = 99;
    CHECK_EQ_INT(parse("", c, 8, &n), 0);
    CHECK_EQ_INT(n, 0);
    n = 99;
    CHECK_EQ_INT(parse("  \t ", c, 8, &n), 0);
    CHECK_EQ_INT(n, 0);
    n = 99;
    CHECK_EQ_INT(parse("", NULL, 0, &n), 0);
    CHECK_EQ_INT(n, 0);

    /* host bits are cleared */
    CHECK_EQ_INT(parse("10.1.2.3/8", c, 8, &n), 0);
    CHECK(memcmp(c[0].addr, "\x0a\0\0\0", 4) == 0);
    CHECK_EQ_INT(parse("172.31.255.255/12", c, 8, &n), 0);
    CHECK(memcmp(c[0].addr, "\xac\x10\0\0", 4) == 0);
    CHECK_EQ_INT(parse("fe80::1234:5678/10", c, 8, &n), 0);
    memset(want, 0, sizeof want);
    want[0] = 0xfe;
    want[1] = 0x80;
    CHECK(memcmp(c[0].addr, want, 16) == 0);
    CHECK_EQ_INT(parse("1.2.3.4/0", c, 8, &n), 0);
    CHECK_EQ_INT(c[0].prefix, 0);
    CHECK(memcmp(c[0].addr, "\0\0\0\0", 4) == 0);
    CHECK_EQ_INT(parse("0.0.0.0/32, 255.255.255.255/32, ::/0, ::/128", c, 8, &n), 0);
    CHECK_EQ_INT(n, 4);

    /* an IPv4-mapped IPv6 entry becomes the IPv4 entry */
    CHECK_EQ_INT(parse("::ffff:10.0.0.0/104", c, 8, &n), 0);
    CHECK_EQ_INT(c[0].family, AF_INET);
    CHECK_EQ_INT(c[0].prefix, 8);
    CHECK(memcmp(c[0].addr, "\x0a\0\0\0", 4) == 0);
    CHECK_EQ_INT(parse("::ffff:127.0.0.1", c, 8, &n), 0);
    CHECK_EQ_INT(c[0].family, AF_INET);
    CHECK_EQ_INT(c[0].prefix, 32);
    CHECK_EQ_INT(parse("::ffff:0:0/95", c, 8, &n), 0);
    CHECK_EQ_INT(c[0].family, AF_INET6);

    /* max entries */
    CHECK_EQ_INT(parse("1.1.1.1, 2.2.2.2", c, 2, &n), 0);
    CHECK_EQ_INT(n, 2);
    n = 99;
    CHECK_EQ_INT(parse("1.1.1.1, 2.2.2.2, 3.3.3.3", c, 2, &n), -1);
    CHECK_EQ_INT(n, 0);
    CHECK(strstr(cidr_err, "more than 2") != NULL);

    static const char *const bad[] = {
        "garbage",
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/08",
        "10.0.0.0/8a",
        "10.0.0.0/1000",
        "10.0.0.0/8/8",
        "/8",
        "10.0.0.0/8,",
        ",10.0.0.0/8",
        "10.0.0.0/8,,1.2.3.4",
        "10.0.0.0/8, ,1.2.3.4",
        "10.0.0.0 /8",
        "10.0.0.0/ 8",
        "1.2.3.4 5.6.7.8",
        "1.2.3.4;5.6.7.8",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "256.0.0.1",
        "1.2.3.4.5",
        "fe80::1%lo",
        "[::1]",
        "::1::2",
        "localhost",
        "10.0.0.0/8\n",
        "1.2.3.4\r\n",
        "1111:2222:3333:4444:5555:6666:7777:8888:9999/128",
        "0000000000000000000000000000000000000000000000000000000000000001",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 99;
        int rc = parse(bad[i], c, 8, &n);
        if (!unit_check(rc == -1 && n == 0 && cidr_err[0] != '\0', __FILE__, __LINE__, bad[i]))
            fprintf(stderr, "    \"%s\" was accepted (n=%zu)\n", bad[i], n);
    }
    CHECK_EQ_INT(parse("10.0.0.0/33", c, 8, &n), -1);
    CHECK_STR(cidr_err, "allow-list entry \"10.0.0.0/33\": the prefix length must be 0 to 32");
    CHECK_EQ_INT(parse("1.2.3.4, nope", c, 8, &n), -1);
    CHECK_STR(cidr_err, "allow-list entry \"nope\" is not an IPv4 or IPv6 address");
    CHECK_EQ_INT(netguard_parse_cidrs(NULL, c, 8, &n, cidr_err, sizeof cidr_err), -1);
    CHECK_EQ_INT(netguard_parse_cidrs("nope", c, 8, &n, NULL, 0), -1);
    char tiny[4];
    CHECK_EQ_INT(netguard_parse_cidrs("nope", c, 8, &n, tiny, sizeof tiny), -1);
    CHECK_STR(tiny, "all");
}

static bool matches(const struct net_cidr *c, size_t n, const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len = make_sa(addr, &ss);
    return netguard_cidr_match(c, n, (const struct sockaddr *)&ss, len);
}

static void test_cidr_match(void)
{
    struct net_cidr c[8];
    size_t n;
    CHECK_EQ_INT(parse("10.0.0.0/8, 192.168.1.5, fd00::/8", c, 8, &n), 0);
    CHECK(matches(c, n, "10.0.0.0"));
    CHECK(matches(c, n, "10.255.255.255"));
    CHECK(!matches(c, n, "9.255.255.255"));
    CHECK(!matches(c, n, "11.0.0.0"));
    CHECK(matches(c, n, "192.168.1.5"));
    CHECK(!matches(c, n, "192.168.1.4"));
    CHECK(!matches(c, n, "192.168.1.6"));
    CHECK(matches(c, n, "fd00::"));
    CHECK(matches(c, n, "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    CHECK(!matches(c, n, "fc00::1"));
    CHECK(!matches(c, n, "fe00::"));
    /* IPv4-mapped IPv6 addresses match the IPv4 entries */
    CHECK(matches(c, n, "::ffff:10.1.2.3"));
    CHECK(matches(c, n, "::ffff:192.168.1.5"));
    CHECK(!matches(c, n, "::ffff:192.168.1.6"));
    CHECK(!matches(c, n, "::ffff:11.0.0.0"));
    /* ... but not the other embedding forms, nor IPv4 the IPv6 entries */
    CHECK(!matches(c, n, "::10.1.2.3"));
    CHECK(!matches(c, n, "64:ff9b::10.1.2.3"));
    CHECK(!matches(c, n, "2002:a01:203::"));
    CHECK(!matches(c, n, "8.8.8.8"));

    CHECK_EQ_INT(parse("0.0.0.0/0", c, 8, &n), 0);
    CHECK(matches(c, n, "0.0.0.0"));
    CHECK(matches(c, n, "255.255.255.255"));
    CHECK(matches(c, n, "::ffff:1.2.3.4"));
    CHECK(!matches(c, n, "::1"));
    CHECK_EQ_INT(parse("::/0", c, 8, &n), 0);
    CHECK(matches(c, n, "::1"));
    CHECK(matches(c, n, "ffff::1"));
    CHECK(!matches(c, n, "127.0.0.1"));
    CHECK_EQ_INT(parse("::ffff:127.0.0.0/104", c, 8, &n), 0);
    CHECK(matches(c, n, "127.0.0.1"));
    CHECK(matches(c, n, "::ffff:127.9.9.9"));
    CHECK(!matches(c, n, "128.0.0.1"));
    CHECK_EQ_INT(parse("172.16.0.0/12", c, 8, &n), 0);
    CHECK(matches(c, n, "172.16.0.0"));
    CHECK(matches(c, n, "172.31.255.255"));
    CHECK(!matches(c, n, "172.15.255.255"));
    CHECK(!matches(c, n, "172.32.0.0"));
    CHECK_EQ_INT(parse("2001:db8::1/127", c, 8, &n), 0);
    CHECK(matches(c, n, "2001:db8::"));
    CHECK(matches(c, n, "2001:db8::1"));
    CHECK(!matches(c, n, "2001:db8::2"));

    CHECK(!matches(c, 0, "2001:db8::1"));
    CHECK(!matches(NULL, 0, "127.0.0.1"));
    struct sockaddr_storage ss;
    socklen_t len = make_sa("2001:db8::1", &ss);
    CHECK(!netguard_cidr_match(c, n, (const struct sockaddr *)&ss, len - 1));
    CHECK(!netguard_cidr_match(c, n, NULL, len));
}

static char why[256];

static int check(const char *addr, bool allow_private, const struct net_cidr *allow, size_t nallow)
{
    struct sockaddr_storage ss;
    socklen_t len = make_sa(addr, &ss);
    why[0] = '\0';
    return netguard_check((const struct sockaddr *)&ss, len, allow_private, allow, nallow, why,
                          sizeof why);
}

static void test_check(void)
{
    CHECK_EQ_INT(check("8.8.8.8", false, NULL, 0), 0);
    CHECK_EQ_INT(check("2606:4700:4700::1111", false, NULL, 0), 0);
    CHECK_EQ_INT(check("::ffff:1.1.1.1", false, NULL, 0), 0);

    CHECK_EQ_INT(check("127.0.0.1", false, NULL, 0), -1);
    CHECK_STR(why, "refusing to connect to 127.0.0.1: loopback address");
    CHECK_EQ_INT(check("169.254.169.254", false, NULL, 0), -1);
    CHECK_STR(why, "refusing to connect to 169.254.169.254: link-local address (includes cloud "
                   "metadata 169.254.169.254)");
    CHECK_EQ_INT(check("100.100.100.200", false, NULL, 0), -1);
    CHECK(strstr(why, "carrier-grade NAT") != NULL);
    CHECK_EQ_INT(check("::ffff:127.0.0.1", false, NULL, 0), -1);
    CHECK_STR(why, "refusing to connect to ::ffff:127.0.0.1: loopback address "
                   "(embedded IPv4 127.0.0.1)");
    CHECK_EQ_INT(check("2002:a9fe:a9fe::", false, NULL, 0), -1);
    CHECK(strstr(why, "(embedded IPv4 169.254.169.254)") != NULL);
    CHECK_EQ_INT(check("2001:0:4136:e378:8000:63bf:80ff:fffe", false, NULL, 0), -1);
    CHECK(strstr(why, "loopback address (embedded IPv4 127.0.0.1)") != NULL);
    CHECK_EQ_INT(check("::", false, NULL, 0), -1);
    CHECK_STR(why, "refusing to connect to ::: unspecified (\"this network\") address");
    CHECK_EQ_INT(check("fd00::1", false, NULL, 0), -1);
    CHECK_STR(why, "refusing to connect to fd00::1: private address");
    CHECK_EQ_INT(check("2001:db8::1", false, NULL, 0), -1);
    CHECK_STR(why, "refusing to connect to 2001:db8::1: documentation address");

    /* the scope id is shown */
    struct sockaddr_storage ss;
    socklen_t len = make_sa("fe80::1", &ss);
    ((struct sockaddr_in6 *)&ss)->sin6_scope_id = 3;
    CHECK_EQ_INT(netguard_check((const struct sockaddr *)&ss, len, false, NULL, 0, why, sizeof why),
                 -1);
    CHECK_STR(why, "refusing to connect to fe80::1%3: link-local address (includes cloud metadata "
                   "169.254.169.254)");

    /* allow_private lets every valid address through */
    CHECK_EQ_INT(check("127.0.0.1", true, NULL, 0), 0);
    CHECK_EQ_INT(check("169.254.169.254", true, NULL, 0), 0);
    CHECK_EQ_INT(check("::1", true, NULL, 0), 0);
    CHECK_EQ_INT(check("10.0.0.1", true, NULL, 0), 0);

    /* the allow-list lets its own ranges through, and only those */
    struct net_cidr allow[4];
    size_t nallow;
    CHECK_EQ_INT(parse("10.0.0.0/8, 127.0.0.1, fd00::/8", allow, 4, &nallow), 0);
    CHECK_EQ_INT(check("10.1.2.3", false, allow, nallow), 0);
    CHECK_EQ_INT(check("127.0.0.1", false, allow, nallow), 0);
    CHECK_EQ_INT(check("::ffff:127.0.0.1", false, allow, nallow), 0);
    CHECK_EQ_INT(check("fd12::1", false, allow, nallow), 0);
    CHECK_EQ_INT(check("127.0.0.2", false, allow, nallow), -1);
    CHECK_STR(why, "refusing to connect to 127.0.0.2: loopback address");
    CHECK_EQ_INT(check("192.168.0.1", false, allow, nallow), -1);
    CHECK_EQ_INT(check("64:ff9b::10.1.2.3", false, allow, nallow), -1);
    CHECK_EQ_INT(check("8.8.8.8", false, allow, nallow), 0);

    /* invalid addresses are refused whatever the settings */
    len = make_sa("8.8.8.8", &ss);
    CHECK_EQ_INT(
        netguard_check((const struct sockaddr *)&ss, len - 1, true, NULL, 0, why, sizeof why), -1);
    CHECK_STR(why, "refusing to connect: not an IPv4 or IPv6 address");
    ss.ss_family = AF_UNIX;
    CHECK_EQ_INT(
        netguard_check((const struct sockaddr *)&ss, sizeof ss, true, NULL, 0, why, sizeof why),
        -1);
    CHECK_EQ_INT(netguard_check(NULL, 0, true, NULL, 0, why, sizeof why), -1);

    /* why may be absent or small */
    len = make_sa("127.0.0.1", &ss);
    CHECK_EQ_INT(netguard_check((const struct sockaddr *)&ss, len, false, NULL, 0, NULL, 0), -1);
    char tiny[10];
    CHECK_EQ_INT(
        netguard_check((const struct sockaddr *)&ss, len, false, NULL, 0, tiny, sizeof tiny), -1);
    CHECK_STR(tiny, "refusing ");
}

static void test_localhost_names(void)
{
    static const char *const yes[] = {"localhost", "localhost.", "LOCALHOST", "LocalHost.",
                                      "a.localhost", "x.y.localhost.", "foo.LOCALHOST"};
    static const char *const no[] = {"", ".", "localhost..", "notlocalhost", "localhost.com",
                                     "localhostx", "xlocalhost.", "local", "127.0.0.1",
                                     "localhost.localdomain"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!CHECK(netguard_is_localhost_name(yes[i])))
            fprintf(stderr, "    for \"%s\"\n", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (!CHECK(!netguard_is_localhost_name(no[i])))
            fprintf(stderr, "    for \"%s\"\n", no[i]);
}

static void test_guard_settings(void)
{
    struct netguard g;
    char err[128], desc[256];
    struct sockaddr_storage ss;
    socklen_t len;

    CHECK_EQ_INT(netguard_init(&g, false, false, "", err, sizeof err), 0);
    netguard_describe(&g, desc, sizeof desc);
    CHECK_STR(desc, "on: public addresses only; http and https");
    len = make_sa("10.1.2.3", &ss);
    CHECK_EQ_INT(netguard_allows(&g, (struct sockaddr *)&ss, len, why, sizeof why), -1);
    CHECK_STR(why, "refusing to connect to 10.1.2.3: private address");
    len = make_sa("93.184.215.14", &ss);
    CHECK_EQ_INT(netguard_allows(&g, (struct sockaddr *)&ss, len, why, sizeof why), 0);

    CHECK_EQ_INT(netguard_init(&g, false, true, "10.0.0.0/8, fd00::/8", err, sizeof err), 0);
    netguard_describe(&g, desc, sizeof desc);
    CHECK_STR(desc, "on: public addresses only, and 10.0.0.0/8, fd00::/8; https only");
    len = make_sa("10.1.2.3", &ss);
    CHECK_EQ_INT(netguard_allows(&g, (struct sockaddr *)&ss, len, why, sizeof why), 0);
    len = make_sa("127.0.0.1", &ss);
    CHECK_EQ_INT(netguard_allows(&g, (struct sockaddr *)&ss, len, why, sizeof why), -1);

    CHECK_EQ_INT(netguard_init(&g, true, false, "", err, sizeof err), 0);
    netguard_describe(&g, desc, sizeof desc);
    CHECK(strncmp(desc, "off: ", 5) == 0);
    CHECK_EQ_INT(netguard_allows(&g, (struct sockaddr *)&ss, len, why, sizeof why), 0);

    CHECK_EQ_INT(netguard_init(&g, false, false, "10.0.0.0/33", err, sizeof err), -1);
    CHECK(err[0] != '\0');

    char tiny[12];
    CHECK_EQ_INT(netguard_init(&g, false, false, "10.0.0.0/8", err, sizeof err), 0);
    netguard_describe(&g, tiny, sizeof tiny);
    CHECK_STR(tiny, "on: public ");
}

int main(int argc, char **argv)
{
    (void)argc;
    test_ipv4_ranges();
    test_ipv6_ranges();
    test_class_names();
    test_spellings();
    test_invalid_sockaddr();
    test_parse_cidrs();
    test_cidr_match();
    test_check();
    test_localhost_names();
    test_guard_settings();
    return unit_done(argv[0]);
}
