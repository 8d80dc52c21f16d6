/*
 * fuzz_jwt: HS256 verification (base/jwt.c), with what a client may put in a token.
 *
 * Input: a mode byte, then
 *   0: a token as the client sends it (the signature check stops nearly all of these);
 *   1: a header and a claims JSON separated by a NUL byte, which the target encodes and
 *      signs with the server's secret, so the claims parsing behind the signature is fuzzed
 *      too (a token the server itself could have minted but with any content);
 *   2: a user id and an expiry, minted by pl_jwt_sign and verified back.
 *
 * Oracles: the sanitizers; a verified token's subject is NUL-terminated, 1-128 bytes, free of
 * control characters; a correctly signed token never fails on its signature; what
 * pl_jwt_sign mints verifies to the same subject.
 */
#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <string.h>

#include "fuzz.h"
#include "parley/base/jwt.h"

static const char SECRET[] = "fuzz-secret";
#define NOW 1700000000

static void check_sub(const char *sub)
{
    size_t n = strnlen(sub, PL_JWT_SUB_MAX + 1);
    FUZZ_ASSERT(n >= 1 && n <= PL_JWT_SUB_MAX);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT((unsigned char)sub[i] >= 0x20 && sub[i] != 0x7f);
}

/* base64url without padding of p[0..n) appended at out[*o]; returns 0 or -1 (no room). */
static int b64url(const uint8_t *p, size_t n, char *out, size_t size, size_t *o)
{
    size_t w = 0;
    if (mbedtls_base64_encode((unsigned char *)out + *o, size - *o, &w, p, n) != 0) return -1;
    while (w && out[*o + w - 1] == '=')
        w--;
    for (size_t i = 0; i < w; i++) {
        char *c = out + *o + i;
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    }
    *o += w;
    return 0;
}

static void signed_claims(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    const uint8_t *hdr = data, *claims = nul ? nul + 1 : data;
    size_t hlen = nul ? (size_t)(nul - data) : 0, clen = size - (size_t)(claims - data);
    if (!nul) hdr = (const uint8_t *)"{\"alg\":\"HS256\"}", hlen = 15;
    char tok[8192];
    size_t o = 0;
    if (b64url(hdr, hlen, tok, sizeof tok, &o) || o + 1 >= sizeof tok) return;
    tok[o++] = '.';
    if (b64url(claims, clen, tok, sizeof tok, &o) || o + 1 >= sizeof tok) return;
    unsigned char mac[32];
    FUZZ_ASSERT(mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                                (const unsigned char *)SECRET, sizeof SECRET - 1,
                                (const unsigned char *)tok, o, mac) == 0);
    tok[o++] = '.';
    if (b64url(mac, sizeof mac, tok, sizeof tok, &o)) return;
    char sub[PL_JWT_SUB_MAX + 1];
    int rc = pl_jwt_verify(SECRET, sizeof SECRET - 1, tok, o, NOW, sub);
    FUZZ_ASSERT(rc != PL_JWT_ESIG);
    if (rc == 0) check_sub(sub);
}

static void minted(const uint8_t *data, size_t size)
{
    if (size < 1) return;
    char user[256];
    size_t n = size - 1 < sizeof user - 1 ? size - 1 : sizeof user - 1;
    memcpy(user, data + 1, n);
    user[n] = '\0';
    int64_t exp = data[0] & 1 ? NOW + 60 : 0;
    char tok[1024], sub[PL_JWT_SUB_MAX + 1];
    int len = pl_jwt_sign(SECRET, sizeof SECRET - 1, user, exp, tok, sizeof tok);
    if (len < 0) {
        FUZZ_ASSERT(len == PL_JWT_ESUB || len == PL_JWT_ENOSPC);
        return;
    }
    FUZZ_ASSERT((size_t)len == strlen(tok));
    FUZZ_ASSERT(pl_jwt_verify(SECRET, sizeof SECRET - 1, tok, (size_t)len, NOW, sub) == 0);
    FUZZ_ASSERT(strcmp(sub, user) == 0);
    /* Another secret, or a later time than exp, fails. */
    FUZZ_ASSERT(pl_jwt_verify("other", 5, tok, (size_t)len, NOW, sub) == PL_JWT_ESIG);
    if (exp)
        FUZZ_ASSERT(pl_jwt_verify(SECRET, sizeof SECRET - 1, tok, (size_t)len, exp, sub) ==
                    PL_JWT_EEXPIRED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        /* Exactly the token's bytes, so a read past its end is caught. */
        char *tok = malloc(n ? n : 1);
        FUZZ_ASSERT(tok);
        memcpy(tok, p, n);
        char sub[PL_JWT_SUB_MAX + 1];
        if (pl_jwt_verify(SECRET, sizeof SECRET - 1, tok, n, NOW, sub) == 0) check_sub(sub);
        free(tok);
        break;
    }
    case 1:
        signed_claims(p, n);
        break;
    case 2:
        minted(p, n);
        break;
    }
    return 0;
}
