/*
 * b64: base64 (RFC 4648 section 4, padded) and base64url (section 5, unpadded)
 * for what the server encodes and decodes per connection: JWT parts and the
 * WebSocket handshake key. Not constant-time: nothing passed here is secret
 * (a token's signature is compared elsewhere, in constant time). Pure functions.
 */
#ifndef PARLEY_BASE_B64_H
#define PARLEY_BASE_B64_H

#include <stddef.h>

/** Alphabets. */
typedef enum {
    PL_B64_STD, /**< A-Z a-z 0-9 + /, padded with '=' to a multiple of 4 */
    PL_B64_URL, /**< A-Z a-z 0-9 - _, no padding */
} pl_b64_alpha_t;

/** Room pl_b64_encode needs for n bytes, NUL included. */
#define PL_B64_ENCODED_SIZE(n) (((n) + 2) / 3 * 4 + 1)

/**
 * Encode n bytes into out, NUL-terminated; returns the length written (without the NUL), or -1
 * if out_size is below PL_B64_ENCODED_SIZE(n).
 */
int pl_b64_encode(const unsigned char *in, size_t n, char *out, size_t out_size,
                  pl_b64_alpha_t alpha);

/**
 * Decode n characters of `alpha` without padding (a padded input: pass the length before the
 * '='). Refuses any other character, a length that leaves a single character over, and leftover
 * bits that are not zero (only canonical encodings). 0 and *out_len set, or -1 (also when
 * out_size is too small; nothing useful is left in out then).
 */
int pl_b64_decode(const char *in, size_t n, unsigned char *out, size_t out_size, size_t *out_len,
                  pl_b64_alpha_t alpha);

#endif
