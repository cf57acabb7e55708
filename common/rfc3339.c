/* RFC 3339 timestamps: strict parsing, and PostgreSQL timestamptz input. */
#include "rfc3339.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's days_from_civil). */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Strict RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM), 'T'/'Z' in either
 * case, no leap second. 0 with *us (µs since 1970, UTC), or -1. */
int rfc3339_parse(const char *s, int64_t *us)
{
    size_t n = strlen(s);
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return -1;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 ||
        se > 59)
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return -1;
    size_t i = 19;
    long long frac = 0;
    if (s[i] == '.') {
        size_t k = 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, k++) {
            if (k == 6)
                return -1; /* finer than PostgreSQL keeps: refused rather than rounded */
            frac = frac * 10 + (s[i] - '0');
        }
        if (k == 0)
            return -1;
        for (; k < 6; k++)
            frac *= 10;
    }
    long long off = 0;
    if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z')) {
        off = 0;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        off = (oh * 60LL + om) * 60 * (s[i] == '+' ? 1 : -1);
    } else {
        return -1;
    }
    long long secs = days_from_civil(y, mo, d) * 86400 + h * 3600LL + mi * 60LL + se - off;
    *us = secs * 1000000 + frac;
    return *us < RFC3339_MIN_US || *us > RFC3339_MAX_US ? -1 : 0;
}

/* µs since 1970 as PostgreSQL timestamptz input, UTC, microseconds. out: 64 bytes. */
void rfc3339_pg(int64_t us, char out[RFC3339_PG_MAX])
{
    long long secs = us / 1000000, frac = us % 1000000;
    long long days = secs / 86400, rem = secs % 86400;
    /* civil_from_days */
    long long z = days + 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long y = yoe + era * 400;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    long long d = doy - (153 * mp + 2) / 5 + 1;
    long long m = mp + (mp < 10 ? 3 : -9);
    y += m <= 2;
    snprintf(out, RFC3339_PG_MAX, "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", (int)y, (int)m, (int)d,
             (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)frac);
}
