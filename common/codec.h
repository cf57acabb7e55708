/* Byte encodings: base64, hex, UTF-8 validation and JSON string escaping. Pure functions. */
#ifndef WH_CODEC_H
#define WH_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include "mem.h"

/* Standard alphabet with '=' padding. Writes a NUL-terminated string; out must hold
 * b64_encoded_len(n) + 1 bytes. Returns the length written (without the NUL). */
size_t b64_encoded_len(size_t n);
size_t b64_encode(const unsigned char *in, size_t n, char *out);
/* Strict decode (standard alphabet, padding required, no whitespace). Returns the number of
 * bytes written or -1 on invalid input or if the result would exceed outcap. */
long b64_decode(const char *in, size_t n, unsigned char *out, size_t outcap);

/* Lowercase hex; out must hold 2n+1 bytes; NUL-terminated. */
void hex_encode(const unsigned char *in, size_t n, char *out);
/* Value of one hex digit (either case), or -1. */
int hex_value(char c);
/* Decodes len hex digits (len even) into len / 2 bytes at out (capacity outcap). Returns the
 * number of bytes, or -1 on an odd length, a non-hex digit or too small an output. */
long hex_decode(const char *in, size_t len, unsigned char *out, size_t outcap);

/* True when p[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool utf8_valid(const char *p, size_t n);

/* Appends s[0..n) to b as a quoted JSON string: escapes ", \ and control characters (\u00XX),
 * keeps valid UTF-8, and replaces each invalid byte with U+FFFD. */
void json_escape(struct buf *b, const char *s, size_t n);
/* Appends the API's error body {"error":{"code":"<code>","message":"<msg escaped>"}}; code is
 * a plain identifier (not escaped). */
void json_error_body(struct buf *b, const char *code, const char *msg);

#endif
