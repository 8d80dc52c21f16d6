/*
 * jwt: HS256 JSON Web Tokens, the only kind Parley accepts or mints.
 *
 * A key set (pl_jwt_keyset_t) holds the secrets accepted at once, each
 * with an optional key id (`kid`), for rotation: a token naming a kid is
 * checked against that secret only, a token without one against each; the
 * first secret signs. It also holds the optional issuer and audience
 * checks and the leeway applied to `exp` and `nbf`.
 *
 * Ownership: a key set owns its secrets and strings (pl_jwt_keyset_free);
 * once built it is only read, by any thread. The functions work on
 * caller-provided buffers and keep no state. Uses mbedTLS for HMAC-SHA256
 * and base64.
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
    PL_JWT_ENOTYET = -7,  /**< nbf is in the future */
    PL_JWT_EISS = -8,     /**< iss is not the configured issuer */
    PL_JWT_EAUD = -9,     /**< aud does not name the configured audience */
    PL_JWT_EKID = -10,    /**< kid names no configured key */
};

/** Number of PL_JWT_E* codes (the most negative is -(PL_JWT_NERR - 1)). */
#define PL_JWT_NERR 11

/** Most secrets accepted at once, and the longest key id. */
#define PL_JWT_KEYS_MAX 8
#define PL_JWT_KID_MAX 64

struct pl_jwt_hmac;

/** One accepted secret. */
typedef struct {
    char kid[PL_JWT_KID_MAX + 1]; /**< "" when it has none */
    char *secret;                 /**< owned */
    size_t secret_len;
    struct pl_jwt_hmac *hmac; /**< owned: the secret's HMAC pad states (NULL: made per call) */
} pl_jwt_key_t;

/** What tokens are accepted, and what minted ones carry. Zero-initialise before use. */
typedef struct {
    pl_jwt_key_t key[PL_JWT_KEYS_MAX]; /**< key[0] signs */
    int nkeys;
    char *issuer;   /**< owned; NULL: iss not checked (nor minted) */
    char *audience; /**< owned; NULL: aud not checked (nor minted) */
    int leeway;     /**< seconds of clock skew allowed on exp and nbf */
} pl_jwt_keyset_t;

/** A verified token's claims. */
typedef struct {
    char sub[PL_JWT_SUB_MAX + 1];
    int64_t exp; /**< 0 when the token has none */
    int64_t iat; /**< 0 when the token has none (a disconnect's revocation refuses it) */
} pl_jwt_claims_t;

/** Add a secret with key id `kid` ("" for none). 0, or -1 if the set is full or out of memory. */
int pl_jwt_keyset_add(pl_jwt_keyset_t *ks, const char *kid, const char *secret, size_t len);

/**
 * Parse "kid1:secret1,kid2:secret2" (PARLEY_JWT_SECRETS) into `ks`: a kid is 1-64 bytes of
 * [A-Za-z0-9_.-], unique; a secret is non-empty and holds no comma. 0, or -1 with a message in
 * `err` that never quotes a secret.
 */
int pl_jwt_keyset_parse(pl_jwt_keyset_t *ks, const char *spec, char *err, size_t n);

/** Free what the set owns and zero it. */
void pl_jwt_keyset_free(pl_jwt_keyset_t *ks);

/**
 * Verify `token` (length `len`, need not be NUL-terminated) at time `now` (unix seconds): the
 * signature against the key its kid names (or each key, without a kid), then exp and nbf
 * (each with the leeway), iss and aud when the set asks for them, and sub. 0 with `out` filled,
 * or a negative PL_JWT_E* code.
 */
int pl_jwt_check(const pl_jwt_keyset_t *ks, const char *token, size_t len, int64_t now,
                 pl_jwt_claims_t *out);

/**
 * Mint a token for `sub` with the set's first key (its kid in the header), iat `now`, `exp`
 * (0: none), and the set's issuer and audience. Writes a NUL-terminated token into `out` and
 * returns its length, or a negative PL_JWT_E* code.
 */
int pl_jwt_mint(const pl_jwt_keyset_t *ks, const char *sub, int64_t now, int64_t exp, char *out,
                size_t out_size);

/**
 * The single-secret forms (no kid, no leeway, no iss/aud), for tools and tests.
 *
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
