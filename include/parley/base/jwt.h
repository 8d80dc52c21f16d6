/*
 * jwt: HS256 JSON Web Tokens, the only kind Parley accepts or mints.
 *
 * Owns nothing: every function works on caller-provided buffers and is
 * thread-safe (no shared state). Uses mbedTLS for HMAC-SHA256 and base64.
 */
#ifndef PARLEY_BASE_JWT_H
#define PARLEY_BASE_JWT_H

#include <stddef.h>
#include <stdint.h>

/** Longest user id (`sub`) accepted, in bytes. */
#define PL_JWT_SUB_MAX 128

/** Errors, all negative. */
enum {
    PL_JWT_EFORMAT = -1,  /**< not three base64url parts, or bad JSON */
    PL_JWT_EALG = -2,     /**< header alg is not HS256 */
    PL_JWT_ESIG = -3,     /**< signature does not match */
    PL_JWT_EEXPIRED = -4, /**< exp is in the past */
    PL_JWT_ESUB = -5,     /**< sub missing, not a string, empty, too long or has control chars */
    PL_JWT_ENOSPC = -6,   /**< output buffer too small */
};

/**
 * Mint a token for user `sub` expiring at `exp` (unix seconds; 0 = no exp).
 * Writes a NUL-terminated token to `out` and returns its length, or a
 * negative PL_JWT_E* code.
 */
int pl_jwt_sign(const char *secret, size_t secret_len, const char *sub, int64_t exp, char *out,
                size_t out_size);

/**
 * Verify `token` (length `len`, need not be NUL-terminated) against `secret`
 * at time `now` (unix seconds). On success copies the NUL-terminated `sub`
 * into `sub_out` (PL_JWT_SUB_MAX + 1 bytes) and returns 0; otherwise a
 * negative PL_JWT_E* code and `sub_out` is unspecified.
 */
int pl_jwt_verify(const char *secret, size_t secret_len, const char *token, size_t len, int64_t now,
                  char sub_out[PL_JWT_SUB_MAX + 1]);

/** A short static description of a PL_JWT_E* code, for logs and close reasons. */
const char *pl_jwt_strerror(int err);

#endif
