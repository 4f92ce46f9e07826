/*  dq_util.c - small shared helpers. See dq_util.h. */
#include "dq_util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

uint64_t
dq_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

uint64_t
dq_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

int
dq_random_hex (char *buf, size_t nbytes)
{
    static const char digits [] = "0123456789abcdef";
    uint8_t raw [64];
    if (nbytes > sizeof raw)
        return -1;
    size_t got = 0;
    while (got < nbytes) {
        ssize_t n = getrandom (raw + got, nbytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t) n;
    }
    for (size_t i = 0; i < nbytes; i++) {
        buf [2 * i] = digits [raw [i] >> 4];
        buf [2 * i + 1] = digits [raw [i] & 15];
    }
    buf [2 * nbytes] = 0;
    return 0;
}

int
dq_parse_u64 (const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull (s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int
dq_parse_i64 (const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || *s == ' ')
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll (s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int
dq_parse_seconds_ms (const char *s, double max_s, uint64_t *out_ms)
{
    //  Plain decimal only: strtod alone also takes "0x10", "1e3" and "inf".
    if (!s || strspn (s, "0123456789.") != strlen (s) || !strpbrk (s, "0123456789"))
        return -1;
    errno = 0;
    char *end;
    double v = strtod (s, &end);
    if (errno || *end || !isfinite (v) || v < 0 || v > max_s)
        return -1;
    *out_ms = (uint64_t) llround (v * 1000.0);
    return 0;
}

int
dq_parse_size (const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == ' ')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull (s, &end, 10);
    if (errno || end == s)
        return -1;
    uint64_t mult = 1;
    if (*end == 'K' || *end == 'k') { mult = 1024; end++; }
    else if (*end == 'M' || *end == 'm') { mult = 1024 * 1024; end++; }
    else if (*end == 'G' || *end == 'g') { mult = 1024ull * 1024 * 1024; end++; }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || (mult > 1 && v > UINT64_MAX / mult))
        return -1;
    *out = v * mult;
    return 0;
}

//  Length of the valid UTF-8 sequence that starts at s (1 to 4), or 0.
//  Reads no further than a NUL, which is never a continuation byte.
static size_t
s_utf8_seq (const unsigned char *s)
{
    unsigned char c = s [0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s [1] & 0xc0) == 0x80? 2: 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0? 0xa0: 0x80;   //  overlong
        unsigned char hi = c == 0xed? 0x9f: 0xbf;   //  surrogates
        return s [1] >= lo && s [1] <= hi && (s [2] & 0xc0) == 0x80? 3: 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0? 0x90: 0x80;   //  overlong
        unsigned char hi = c == 0xf4? 0x8f: 0xbf;   //  past U+10FFFF
        return s [1] >= lo && s [1] <= hi && (s [2] & 0xc0) == 0x80
            && (s [3] & 0xc0) == 0x80? 4: 0;
    }
    return 0;
}

bool
dq_utf8_valid (const char *s)
{
    const unsigned char *p = (const unsigned char *) s;
    while (*p) {
        size_t n = s_utf8_seq (p);
        if (!n)
            return false;
        p += n;
    }
    return true;
}

void
dq_utf8_clean (char *s)
{
    unsigned char *p = (unsigned char *) s;
    while (*p) {
        size_t n = s_utf8_seq (p);
        if (n)
            p += n;
        else
            *p++ = '?';
    }
}
