/* Unit tests for common/ids.c: UUIDv7 format and order, validation, partitioning, jitter RNG. */
#include "ids.h"
#include "mem.h"
#include "unit.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_IDS 10000

static int cmp_ids(const void *a, const void *b)
{
    return memcmp(a, b, ID_LEN + 1);
}

static void test_format_and_order(void)
{
    char(*ids)[ID_LEN + 1] = xmalloc(N_IDS * sizeof *ids);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long before =
        (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000;
    int bad_format = 0, decreasing = 0;
    for (int i = 0; i < N_IDS; i++) {
        id_new(ids[i]);
        const char *s = ids[i];
        bool ok = strlen(s) == ID_LEN && id_valid(s, ID_LEN) && s[14] == '7' &&
                  strchr("89ab", s[19]) != NULL;
        for (size_t k = 0; k < ID_LEN; k++)
            ok = ok && !(s[k] >= 'A' && s[k] <= 'F'); /* lowercase */
        if (!ok && bad_format++ == 0)
            fprintf(stderr, "    bad id %s\n", s);
        /* First 12 hex digits: the 48-bit millisecond timestamp. */
        if (i > 0 && memcmp(ids[i - 1], s, 8) > 0)
            decreasing++;
        if (i > 0 && memcmp(ids[i - 1], s, 8) == 0 && memcmp(ids[i - 1] + 9, s + 9, 4) > 0)
            decreasing++;
        /* strictly increasing as a whole, within a millisecond too (ordered delivery) */
        if (i > 0 && memcmp(ids[i - 1], s, ID_LEN) >= 0 && decreasing++ == 0)
            fprintf(stderr, "    %s then %s\n", ids[i - 1], s);
    }
    CHECK_EQ_INT(bad_format, 0);
    CHECK_EQ_INT(decreasing, 0);

    /* The timestamp is the current time in ms. */
    char hex[13];
    memcpy(hex, ids[0], 8);
    memcpy(hex + 8, ids[0] + 9, 4);
    hex[12] = '\0';
    unsigned long long ms = strtoull(hex, NULL, 16);
    CHECK(ms >= before && ms < before + 10000);

    qsort(ids, N_IDS, sizeof *ids, cmp_ids);
    int dups = 0;
    for (int i = 1; i < N_IDS; i++)
        dups += memcmp(ids[i - 1], ids[i], ID_LEN) == 0;
    CHECK_EQ_INT(dups, 0);
    free(ids);
}

/* A forked child does not repeat ids from its parent's buffered randomness. */
static void test_fork(void)
{
    char parent_id[ID_LEN + 1], child_id[ID_LEN + 1];
    int fds[2];
    id_new(parent_id); /* fills the buffer in the parent */
    CHECK_EQ_INT(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        id_new(child_id);
        ssize_t w = write(fds[1], child_id, ID_LEN);
        _exit(w == ID_LEN ? 0 : 1);
    }
    CHECK(pid > 0);
    id_new(parent_id);
    memset(child_id, 0, sizeof child_id);
    CHECK_EQ_INT(read(fds[0], child_id, ID_LEN), ID_LEN);
    int status = -1;
    CHECK_EQ_INT(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(memcmp(parent_id + 14, child_id + 14, ID_LEN - 14) != 0);
    close(fds[0]);
    close(fds[1]);
}

#define ID_OK(lit) CHECK(id_valid(lit, sizeof(lit) - 1))
#define ID_BAD(lit) CHECK(!id_valid(lit, sizeof(lit) - 1))

static void test_valid_normalize(void)
{
    ID_OK("0190f3c2-7b1e-7a3d-8f00-0123456789ab");
    ID_OK("0190F3C2-7B1E-7A3D-8F00-0123456789AB");
    ID_OK("00000000-0000-0000-0000-000000000000");
    ID_BAD("");
    ID_BAD("0190f3c2-7b1e-7a3d-8f00-0123456789a");   /* 35 */
    ID_BAD("0190f3c2-7b1e-7a3d-8f00-0123456789abc"); /* 37 */
    ID_BAD("0190f3c27b1e7a3d8f000123456789ab");      /* no dashes */
    ID_BAD("0190f3c2-7b1e-7a3d-8f000-123456789ab");  /* dash misplaced */
    ID_BAD("0190f3c2_7b1e-7a3d-8f00-0123456789ab");
    ID_BAD("0190f3c2-7b1e-7a3d-8f00-0123456789ag"); /* non-hex */
    ID_BAD("{190f3c2-7b1e-7a3d-8f00-0123456789ab");
    ID_BAD("0190f3c2-7b1e-7a3d-8f00-0123456789a\0");
    ID_BAD("0190f3c2-7b1e-7a3d-8f00-0123456789\xc3\xa9");
    CHECK(!id_valid(NULL, ID_LEN));
    /* Only n bytes count. */
    CHECK(id_valid("0190f3c2-7b1e-7a3d-8f00-0123456789abXYZ", ID_LEN));

    char out[ID_LEN + 1];
    id_normalize("0190F3C2-7B1E-7A3D-8F00-0123456789AB", out);
    CHECK_STR(out, "0190f3c2-7b1e-7a3d-8f00-0123456789ab");
    id_normalize("0190f3c2-7b1e-7a3d-8f00-0123456789ab", out);
    CHECK_STR(out, "0190f3c2-7b1e-7a3d-8f00-0123456789ab");
}

static void test_partition(void)
{
    const char *id = "0190f3c2-7b1e-7a3d-8f00-0123456789ab";
    /* FNV-1a 32 of the 36 text bytes, computed independently. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < ID_LEN; i++)
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    CHECK_EQ_INT(id_partition(id, 16), h % 16);
    CHECK_EQ_INT(id_partition(id, 16), id_partition(id, 16));
    CHECK_EQ_INT(id_partition(id, 1), 0);
    CHECK_EQ_INT(id_partition(id, 0), 0);
    CHECK_EQ_INT(id_partition(id, UINT32_MAX), h % UINT32_MAX);
    CHECK_EQ_INT(h, 0x4be7ee61u); /* the same, computed by Python */
    CHECK_EQ_INT(id_partition(id, 1000), 41);

    int counts[8] = {0};
    int out_of_range = 0, n1 = 0;
    char fresh[ID_LEN + 1];
    for (int i = 0; i < 8000; i++) {
        id_new(fresh);
        uint32_t p = id_partition(fresh, 8);
        if (p >= 8)
            out_of_range++;
        else
            counts[p]++;
        n1 += id_partition(fresh, 1) != 0;
        if (id_partition(fresh, 8) != p)
            out_of_range++;
    }
    CHECK_EQ_INT(out_of_range, 0);
    CHECK_EQ_INT(n1, 0);
    for (int p = 0; p < 8; p++)
        CHECK(counts[p] > 700 && counts[p] < 1300); /* roughly even */
}

/* id_at: the smallest id of the first whole ms at or after a time, compared with made ids. */
static void test_at(void)
{
    char b[ID_LEN + 1];
    id_at(0, b);
    CHECK_STR(b, "00000000-0000-0000-0000-000000000000");
    id_at(1000, b);
    CHECK_STR(b, "00000000-0001-0000-0000-000000000000");
    id_at(1001, b); /* 1.001 ms: the next whole millisecond */
    CHECK_STR(b, "00000000-0002-0000-0000-000000000000");
    id_at(1764633600123000LL, b); /* 2025-12-02T00:00:00.123Z = 0x019adc5be07b ms */
    CHECK_STR(b, "019adc5b-e07b-0000-0000-000000000000");
    /* id_time_ms reads the millisecond back, either case; -1 on a malformed start */
    CHECK_EQ_INT(id_time_ms(b), 1764633600123LL);
    CHECK_EQ_INT(id_time_ms("019ADC5B-E07B-7000-8000-000000000000"), 1764633600123LL);
    CHECK_EQ_INT(id_time_ms("019adc5b-e07"), -1);
    CHECK_EQ_INT(id_time_ms("019adc5be07b"), -1);
    CHECK_EQ_INT(id_time_ms("x19adc5b-e07b-7000-8000-000000000000"), -1);
    id_at(253402300799999999LL, b); /* 9999-12-31T23:59:59.999999Z rounds up to 10000 */
    CHECK_STR(b, "e677d21f-dc00-0000-0000-000000000000");
    CHECK(id_valid(b, ID_LEN));

    /* Every id made now sorts between the bounds of the ms around it. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    char id[ID_LEN + 1], lo[ID_LEN + 1], hi[ID_LEN + 1];
    id_new(id);
    id_at(now_us - now_us % 1000 - 1000, lo);
    id_at(now_us + 10000000, hi);
    CHECK(strcmp(lo, id) < 0 && strcmp(id, hi) < 0);
}

static void test_rand32(void)
{
    uint32_t first = id_rand32();
    int same = 0, high = 0;
    uint32_t prev = first;
    for (int i = 0; i < 10000; i++) {
        uint32_t r = id_rand32();
        same += r == prev;
        high += r >= 0x80000000u;
        prev = r;
    }
    CHECK(same < 3);
    CHECK(high > 4500 && high < 5500);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_format_and_order();
    test_fork();
    test_valid_normalize();
    test_partition();
    test_at();
    test_rand32();
    return unit_done(argv[0]);
}
