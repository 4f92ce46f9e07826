/*  dq_util.h - small shared helpers: clocks, random ids, strict number
    parsing for command lines and config. */
#ifndef DQ_UTIL_H_INCLUDED
#define DQ_UTIL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Wall clock, unix ms (timestamps that are stored and shown).
uint64_t
    dq_now_ms (void);
//  Monotonic ms (intervals that must not jump with the wall clock).
uint64_t
    dq_mono_ms (void);

//  Fill buf with 2*nbytes random lowercase hex digits and a NUL
//  (getrandom). Returns 0 or -1.
int
    dq_random_hex (char *buf, size_t nbytes);

//  Parse all of s as an unsigned integer in [min, max]. Returns 0 or -1.
int
    dq_parse_u64 (const char *s, uint64_t min, uint64_t max, uint64_t *out);
int
    dq_parse_i64 (const char *s, int64_t min, int64_t max, int64_t *out);
//  Parse all of s as a decimal number of seconds (fractions allowed, e.g.
//  "0.5"; no sign, exponent or hex), in [0, max_s], into ms. Returns 0 or -1.
int
    dq_parse_seconds_ms (const char *s, double max_s, uint64_t *out_ms);
//  Parse a size with an optional K/M/G suffix (powers of 1024).
int
    dq_parse_size (const char *s, uint64_t *out);

//  Whether the NUL-terminated s is valid UTF-8 (no overlong forms, no
//  surrogates, nothing past U+10FFFF). Text on the wire must be.
bool
    dq_utf8_valid (const char *s);
//  Replace in place every byte of s that does not belong to a valid UTF-8
//  sequence with '?'.
void
    dq_utf8_clean (char *s);

#endif
