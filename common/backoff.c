/* Retry schedule: parsing RETRY_SCHEDULE, delays with jitter, and the Retry-After header. */
#include "backoff.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define BACKOFF_STEP_MAX_MS (7L * 24 * 3600 * 1000)
/* Retry-After values are capped here (about 23 days, fits a 32-bit long); the caller bounds
 * them much more tightly with backoff_apply_retry_after anyway. */
#define RETRY_AFTER_CAP_MS 2000000000L

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Seconds as "D+" or "D+.D+" in s[0..n) to milliseconds (rounded to the nearest ms), or -1
 * when malformed or above the 7-day limit (too large values saturate, then fail the check). */
static long parse_seconds_ms(const char *s, size_t n)
{
    size_t i = 0;
    long ms = 0;
    if (n == 0 || !is_digit(s[0]))
        return -1;
    for (; i < n && is_digit(s[i]); i++) {
        ms = ms * 10 + (s[i] - '0') * 1000L;
        if (ms > BACKOFF_STEP_MAX_MS)
            return -1;
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i == n || !is_digit(s[i]))
            return -1;
        long scale = 100;
        for (; i < n && is_digit(s[i]); i++) {
            if (scale > 0)
                ms += (s[i] - '0') * scale;
            else if (scale == 0 && s[i] >= '5')
                ms += 1; /* round on the first digit below a millisecond */
            scale = scale > 0 ? scale / 10 : -1;
        }
    }
    if (i != n || ms > BACKOFF_STEP_MAX_MS)
        return -1;
    return ms;
}

int backoff_parse(const char *s, struct backoff *out, char *err, size_t errlen)
{
    size_t count = 0;
    const char *p = s;
    if (!s) {
        snprintf(err, errlen, "retry schedule must not be empty");
        return -1;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && is_blank(*a))
            a++;
        while (b > a && is_blank(b[-1]))
            b--;
        if (count == BACKOFF_MAX_STEPS) {
            snprintf(err, errlen, "retry schedule has more than %d entries", BACKOFF_MAX_STEPS);
            return -1;
        }
        if (a == b) {
            snprintf(err, errlen, "retry schedule entry %zu is empty", count + 1);
            return -1;
        }
        long ms = parse_seconds_ms(a, (size_t)(b - a));
        if (ms <= 0) {
            snprintf(err, errlen,
                     "retry schedule entry %zu (\"%.*s\") must be a number of seconds above 0 "
                     "and at most 604800 (7 days)",
                     count + 1, (int)(b - a > 32 ? 32 : b - a), a);
            return -1;
        }
        out->delay_ms[count++] = ms;
        if (!comma)
            break;
        p = comma + 1;
    }
    out->n = count;
    return 0;
}

long backoff_next_ms(const struct backoff *b, int attempt, uint32_t rnd)
{
    if (attempt < 1 || (size_t)attempt >= b->n + 1)
        return -1;
    double base = (double)b->delay_ms[attempt - 1];
    double factor = 1.0 - BACKOFF_JITTER + 2.0 * BACKOFF_JITTER * ((double)rnd / UINT32_MAX);
    long ms = lround(base * factor);
    return ms < 1 ? 1 : ms;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static long days_from_civil(long y, long m, long d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* n decimal digits at s into *v. */
static bool digits(const char *s, size_t n, long *v)
{
    long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return true;
}

/* IMF-fixdate, RFC 9110 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT" (exactly 29 bytes). */
static bool parse_imf_fixdate(const char *s, size_t n, time_t *out)
{
    static const char days[] = "MonTueWedThuFriSatSun";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
        s[19] != ':' || s[22] != ':' || s[25] != ' ' || memcmp(s + 26, "GMT", 3) != 0)
        return false;
    bool day_ok = false;
    for (size_t i = 0; i < 7; i++)
        day_ok |= memcmp(s, days + 3 * i, 3) == 0;
    long mon = 0;
    for (long i = 0; i < 12; i++)
        if (memcmp(s + 8, months + 3 * i, 3) == 0)
            mon = i + 1;
    long day, year, hh, mm, ss;
    if (!day_ok || mon == 0 || !digits(s + 5, 2, &day) || !digits(s + 12, 4, &year) ||
        !digits(s + 17, 2, &hh) || !digits(s + 20, 2, &mm) || !digits(s + 23, 2, &ss))
        return false;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day < 1 || day > mdays[mon - 1] || (mon == 2 && day == 29 && !leap) || hh > 23 || mm > 59 ||
        ss > 60)
        return false;
    long long t = (long long)days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
    *out = (time_t)t;
    return true;
}

int backoff_parse_retry_after(const char *value, time_t now, long *ms)
{
    if (!value)
        return -1;
    const char *a = value, *b = value + strlen(value);
    while (a < b && is_blank(*a))
        a++;
    while (b > a && (is_blank(b[-1]) || b[-1] == '\r' || b[-1] == '\n'))
        b--;
    size_t n = (size_t)(b - a);
    if (n == 0)
        return -1;
    if (is_digit(a[0])) {
        long long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (!is_digit(a[i]))
                return -1;
            if (v < RETRY_AFTER_CAP_MS)
                v = v * 10 + (a[i] - '0');
        }
        v *= 1000;
        *ms = v > RETRY_AFTER_CAP_MS ? RETRY_AFTER_CAP_MS : (long)v;
        return 0;
    }
    time_t when;
    if (!parse_imf_fixdate(a, n, &when))
        return -1;
    double delta = difftime(when, now) * 1000.0;
    *ms = delta <= 0 ? 0 : delta > RETRY_AFTER_CAP_MS ? RETRY_AFTER_CAP_MS : (long)delta;
    return 0;
}

long backoff_apply_retry_after(long scheduled_ms, long retry_after_ms)
{
    if (retry_after_ms <= scheduled_ms)
        return scheduled_ms;
    long cap = scheduled_ms > RETRY_AFTER_CAP_MS / 2 ? RETRY_AFTER_CAP_MS : 2 * scheduled_ms;
    return retry_after_ms < cap ? retry_after_ms : cap;
}
