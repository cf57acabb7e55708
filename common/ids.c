/* Identifiers: UUIDv7 (time-ordered, for B-tree locality) as lowercase text, and partitioning. */
#include "ids.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Random bytes are drawn from OpenSSL in blocks. Not thread-safe (the daemons are
 * single-threaded). A fork empties the buffer and drops id_rand32's seed in the child
 * (pthread_atfork), so a child never hands out its parent's bytes, and making an id makes no
 * system call (a getpid() per id used to: two per trigger). */
#define RAND_BUF_SIZE 4096

static unsigned char rand_buf[RAND_BUF_SIZE];
static size_t rand_pos = RAND_BUF_SIZE;
static bool rand32_seeded; /* id_rand32's state was drawn in this process */

static void forked_child(void)
{
    rand_pos = RAND_BUF_SIZE;
    rand32_seeded = false;
}

static void watch_fork(void)
{
    (void)pthread_atfork(NULL, NULL, forked_child);
}

static void rand_take(unsigned char *out, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, watch_fork);
    if (RAND_BUF_SIZE - rand_pos < n) {
        if (RAND_bytes(rand_buf, RAND_BUF_SIZE) != 1) {
            fprintf(stderr, "fatal: RAND_bytes failed\n");
            abort();
        }
        rand_pos = 0;
    }
    memcpy(out, rand_buf + rand_pos, n);
    OPENSSL_cleanse(rand_buf + rand_pos, n);
    rand_pos += n;
}

static uint64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Strictly increasing within the process (RFC 9562 6.2, method 1): the 12 bits after the
 * version count within a millisecond, from a random start below 2048 (so about 2000 ids a
 * millisecond before the counter overflows into the next millisecond, borrowed from the
 * future). An ordered subscription is delivered in job id order (docs/decisions.md 33), so two
 * triggers accepted one after the other in the same millisecond must not get ids the other
 * way round. */
void id_new(char *out)
{
    static uint64_t last_ms;
    static unsigned counter;
    uint64_t ms = now_unix_ms();
    unsigned char b[16];
    rand_take(b + 6, 10);
    if (ms > last_ms) {
        counter = ((unsigned)b[6] << 8 | b[7]) & 0x7FF;
    } else if (++counter > 0xFFF) { /* the same ms, or the wall clock stepped back */
        ms = last_ms + 1;
        counter = ((unsigned)b[6] << 8 | b[7]) & 0x7FF;
    } else {
        ms = last_ms;
    }
    last_ms = ms;

    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (counter >> 8)); /* version 7 */
    b[7] = (unsigned char)(counter & 0xFF);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3F)); /* variant 10 */

    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool id_valid(const char *s, size_t n)
{
    if (!s || n != ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!is_hex(s[i])) {
            return false;
        }
    }
    return true;
}

void id_normalize(const char *s, char *out)
{
    for (size_t i = 0; i < ID_LEN; i++)
        out[i] = s[i] >= 'A' && s[i] <= 'F' ? (char)(s[i] - 'A' + 'a') : s[i];
    out[ID_LEN] = '\0';
}

void id_at(int64_t us, char *out)
{
    uint64_t ms = (uint64_t)(us / 1000 + (us % 1000 != 0));
    snprintf(out, ID_LEN + 1, "%08x-%04x-0000-0000-000000000000", (unsigned)(ms >> 16),
             (unsigned)(ms & 0xffff));
}

int64_t id_time_ms(const char *s)
{
    int64_t ms = 0;
    for (int i = 0; i < 13; i++) {
        char c = s[i];
        if (i == 8) {
            if (c != '-')
                return -1;
            continue;
        }
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return -1;
        ms = ms << 4 | v;
    }
    return ms;
}

uint32_t id_partition(const char *id, uint32_t nparts)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < ID_LEN; i++) {
        h ^= (unsigned char)id[i];
        h *= 16777619u;
    }
    return nparts ? h % nparts : 0;
}

/* splitmix64 (Steele, Lea, Flood): one 64-bit state, a full period, good enough for jitter. */
uint32_t id_rand32(void)
{
    static uint64_t state;
    if (!rand32_seeded) {
        unsigned char seed[8];
        rand_take(seed, sizeof seed);
        memcpy(&state, seed, sizeof state);
        rand32_seeded = true;
    }
    uint64_t z = (state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    z ^= z >> 31;
    return (uint32_t)(z >> 32);
}
