/*
 * jwt: HS256 only. The header must say alg HS256 (no "none", no RS*: a token
 * signed any other way is rejected before its signature is looked at). Keys
 * are chosen by kid for rotation; claims are read only after the signature
 * matched.
 */
#include "parley/base/jwt.h"

#include "parley/base/b64.h"
#include "parley/base/buf.h"

#include <cjson/cJSON.h>
#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Payloads above this are not tokens we minted or expect. */
#define JWT_MAX 4096

/* base64url without padding, into out (NUL-terminated); returns length or -1. */
static int b64url_encode(const unsigned char *in, size_t n, char *out, size_t out_size)
{
    return pl_b64_encode(in, n, out, out_size, PL_B64_URL);
}

static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t out_size,
                         size_t *out_len)
{
    return pl_b64_decode(in, n, out, out_size, out_len, PL_B64_URL);
}

/*
 * HMAC-SHA256 states after the key's inner and outer pad blocks (RFC 2104). Every token
 * verified with a key starts from these: two SHA-256 blocks of the four to six a token costs,
 * saved per connection. Read-only once made, so any thread may start from them.
 */
struct pl_jwt_hmac {
    mbedtls_sha256_context in, out;
};

static struct pl_jwt_hmac *hmac_pads_new(const char *key, size_t len)
{
    unsigned char k[64] = {0}, pad[64];
    struct pl_jwt_hmac *h = malloc(sizeof *h);
    if (!h) return NULL;
    int rc = 0;
    if (len > sizeof k)
        rc = mbedtls_sha256_ret((const unsigned char *)key, len, k, 0);
    else
        memcpy(k, key, len);
    mbedtls_sha256_init(&h->in);
    mbedtls_sha256_init(&h->out);
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k[i] ^ 0x36;
    rc = rc || mbedtls_sha256_starts_ret(&h->in, 0) || mbedtls_sha256_update_ret(&h->in, pad, 64);
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k[i] ^ 0x5c;
    rc = rc || mbedtls_sha256_starts_ret(&h->out, 0) || mbedtls_sha256_update_ret(&h->out, pad, 64);
    mbedtls_platform_zeroize(k, sizeof k);
    mbedtls_platform_zeroize(pad, sizeof pad);
    if (rc) {
        mbedtls_sha256_free(&h->in);
        mbedtls_sha256_free(&h->out);
        free(h);
        return NULL;
    }
    return h;
}

static void hmac_pads_free(struct pl_jwt_hmac *h)
{
    if (!h) return;
    mbedtls_sha256_free(&h->in);
    mbedtls_sha256_free(&h->out);
    free(h);
}

static int hmac256(const char *key, size_t key_len, const char *msg, size_t n,
                   unsigned char out[32])
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    return mbedtls_md_hmac(md, (const unsigned char *)key, key_len, (const unsigned char *)msg, n,
                           out) == 0
               ? 0
               : -1;
}

/* The MAC of msg under k: from its precomputed pads when it has them (a keyset's keys). */
static int key_mac(const pl_jwt_key_t *k, const char *msg, size_t n, unsigned char out[32])
{
    if (!k->hmac) return hmac256(k->secret, k->secret_len, msg, n, out);
    mbedtls_sha256_context c;
    unsigned char inner[32];
    mbedtls_sha256_init(&c);
    mbedtls_sha256_clone(&c, &k->hmac->in);
    int rc = mbedtls_sha256_update_ret(&c, (const unsigned char *)msg, n) ||
             mbedtls_sha256_finish_ret(&c, inner);
    mbedtls_sha256_clone(&c, &k->hmac->out);
    rc = rc || mbedtls_sha256_update_ret(&c, inner, sizeof inner) ||
         mbedtls_sha256_finish_ret(&c, out);
    mbedtls_sha256_free(&c);
    return rc ? -1 : 0;
}

static int sub_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PL_JWT_SUB_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

/* header.payload.signature for `sub` with `key`; iat, exp 0: left out; iss, aud NULL: too. */
static int sign_core(const pl_jwt_key_t *key, const char *sub, int64_t iat, int64_t exp,
                     const char *iss, const char *aud, char *out, size_t out_size)
{
    if (!sub_ok(sub)) return PL_JWT_ESUB;

    cJSON *hdr = cJSON_CreateObject(), *claims = cJSON_CreateObject();
    char *header = NULL, *payload = NULL;
    if (hdr && claims) {
        cJSON_AddStringToObject(hdr, "alg", "HS256");
        cJSON_AddStringToObject(hdr, "typ", "JWT");
        if (key->kid[0]) cJSON_AddStringToObject(hdr, "kid", key->kid);
        cJSON_AddStringToObject(claims, "sub", sub);
        if (iat) cJSON_AddNumberToObject(claims, "iat", (double)iat);
        if (exp) cJSON_AddNumberToObject(claims, "exp", (double)exp);
        if (iss) cJSON_AddStringToObject(claims, "iss", iss);
        if (aud) cJSON_AddStringToObject(claims, "aud", aud);
        header = cJSON_PrintUnformatted(hdr);
        payload = cJSON_PrintUnformatted(claims);
    }
    cJSON_Delete(hdr);
    cJSON_Delete(claims);
    int rc = PL_JWT_ENOSPC;
    char buf[JWT_MAX];
    if (!header || !payload) goto out;
    int h = b64url_encode((const unsigned char *)header, strlen(header), buf, sizeof buf);
    int p = h < 0 ? -1
                  : b64url_encode((const unsigned char *)payload, strlen(payload), buf + h + 1,
                                  sizeof buf - (size_t)h - 1);
    if (p < 0) goto out;
    buf[h] = '.';
    size_t signing_len = (size_t)h + 1 + (size_t)p;

    unsigned char mac[32];
    if (key_mac(key, buf, signing_len, mac) != 0) goto out;
    if (signing_len + 2 >= sizeof buf) goto out;
    buf[signing_len] = '.';
    int sg = b64url_encode(mac, sizeof mac, buf + signing_len + 1, sizeof buf - signing_len - 1);
    if (sg < 0) goto out;
    size_t total = signing_len + 1 + (size_t)sg;
    if (total + 1 > out_size) goto out;
    memcpy(out, buf, total + 1);
    rc = (int)total;
out:
    cJSON_free(header);
    cJSON_free(payload);
    return rc;
}

int pl_jwt_sign(const char *secret, size_t secret_len, const char *sub, int64_t exp, char *out,
                size_t out_size)
{
    pl_jwt_key_t k = {.secret = (char *)secret, .secret_len = secret_len};
    return sign_core(&k, sub, 0, exp, NULL, NULL, out, out_size);
}

int pl_jwt_mint(const pl_jwt_keyset_t *ks, const char *sub, int64_t now, int64_t exp, char *out,
                size_t out_size)
{
    if (ks->nkeys < 1) return PL_JWT_ESIG;
    return sign_core(&ks->key[0], sub, now, exp, ks->issuer, ks->audience, out, out_size);
}

/* Does the MAC of `signing` under `k` equal `sig`? In constant time for the comparison. */
static int sig_matches(const pl_jwt_key_t *k, const char *signing, size_t n,
                       const unsigned char *sig, size_t sig_len)
{
    unsigned char mac[32];
    if (key_mac(k, signing, n, mac) != 0) return 0;
    unsigned char diff = sig_len != sizeof mac;
    for (size_t i = 0; i < sizeof mac; i++)
        diff |= (unsigned char)(mac[i] ^ sig[i % 64]);
    return diff == 0;
}

/* aud is the audience, or an array holding it (RFC 7519 4.1.3). */
static int aud_ok(const cJSON *aud, const char *want)
{
    if (cJSON_IsString(aud)) return strcmp(aud->valuestring, want) == 0;
    const cJSON *e;
    if (!cJSON_IsArray(aud)) return 0;
    cJSON_ArrayForEach(e, aud) if (cJSON_IsString(e) && strcmp(e->valuestring, want) == 0) return 1;
    return 0;
}

/*
 * The one verifier: keys[0..nkeys) are the candidates. A token naming a kid is checked against
 * that key only (or, if no key has that kid, against the keys without a kid: a single
 * PARLEY_JWT_SECRET accepts tokens whose library added a kid of its own); a token without a kid
 * against each key. Nothing about the claims is believed before the signature matched.
 */
static int verify_core(const pl_jwt_key_t *keys, int nkeys, const char *issuer,
                       const char *audience, int leeway, const char *token, size_t len, int64_t now,
                       pl_jwt_claims_t *out)
{
    if (len == 0 || len > JWT_MAX) return PL_JWT_EFORMAT;
    const char *dot1 = memchr(token, '.', len);
    if (!dot1) return PL_JWT_EFORMAT;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) return PL_JWT_EFORMAT;

    unsigned char json[JWT_MAX];
    size_t jlen;
    /* Header: must be HS256; kid, if any, a string. */
    if (b64url_decode(token, (size_t)(dot1 - token), json, sizeof json - 1, &jlen) != 0)
        return PL_JWT_EFORMAT;
    cJSON *hdr = cJSON_ParseWithLength((const char *)json, jlen);
    if (!hdr) return PL_JWT_EFORMAT;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
    int alg_ok = cJSON_IsString(alg) && strcmp(alg->valuestring, "HS256") == 0;
    int kid_bad = kid && !cJSON_IsString(kid);
    /* Which keys to try: bit i for keys[i]. */
    unsigned want = 0, named = 0;
    for (int i = 0; i < nkeys; i++) {
        if (kid && !kid_bad && strcmp(keys[i].kid, kid->valuestring) == 0) named |= 1u << i;
        if (!kid || !keys[i].kid[0]) want |= 1u << i;
    }
    if (named) want = named;
    cJSON_Delete(hdr);
    if (!alg_ok) return PL_JWT_EALG;
    if (kid_bad) return PL_JWT_EFORMAT;
    if (!want) return PL_JWT_EKID;

    /* Signature, compared in constant time. */
    unsigned char sig[64];
    size_t sig_len;
    if (b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig, sizeof sig, &sig_len) != 0)
        return PL_JWT_EFORMAT;
    int ok = 0;
    for (int i = 0; i < nkeys && !ok; i++)
        if (want & (1u << i))
            ok = sig_matches(&keys[i], token, (size_t)(dot2 - token), sig, sig_len);
    if (!ok) return PL_JWT_ESIG;

    /* Claims. */
    if (b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), json, sizeof json - 1, &jlen) != 0)
        return PL_JWT_EFORMAT;
    if (pl_json_has_nul((const char *)json, jlen))
        return PL_JWT_ESUB; /* cJSON would cut sub short */
    cJSON *claims = cJSON_ParseWithLength((const char *)json, jlen);
    if (!claims || !cJSON_IsObject(claims)) {
        cJSON_Delete(claims);
        return PL_JWT_EFORMAT;
    }
    int rc = 0;
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
    const cJSON *nbf = cJSON_GetObjectItemCaseSensitive(claims, "nbf");
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(claims, "iss");
    if (exp && (!cJSON_IsNumber(exp) || exp->valuedouble + leeway <= (double)now))
        rc = PL_JWT_EEXPIRED;
    else if (nbf && (!cJSON_IsNumber(nbf) || nbf->valuedouble > (double)(now + leeway)))
        rc = PL_JWT_ENOTYET;
    else if (issuer && (!cJSON_IsString(iss) || strcmp(iss->valuestring, issuer) != 0))
        rc = PL_JWT_EISS;
    else if (audience && !aud_ok(cJSON_GetObjectItemCaseSensitive(claims, "aud"), audience))
        rc = PL_JWT_EAUD;
    else if (!cJSON_IsString(sub) || !sub_ok(sub->valuestring))
        rc = PL_JWT_ESUB;
    else {
        snprintf(out->sub, sizeof out->sub, "%s", sub->valuestring);
        /* Past 2^32 (year 2106) is as good as never for a connection. */
        double e = exp ? exp->valuedouble : 0;
        out->exp = e <= 0 ? 0 : e >= 4294967295.0 ? 4294967295LL : (int64_t)e;
        const cJSON *iat = cJSON_GetObjectItemCaseSensitive(claims, "iat");
        double i = cJSON_IsNumber(iat) ? iat->valuedouble : 0;
        out->iat = i <= 0 ? 0 : i >= 4294967295.0 ? 4294967295LL : (int64_t)i;
    }
    cJSON_Delete(claims);
    return rc;
}

int pl_jwt_verify(const char *secret, size_t secret_len, const char *token, size_t len, int64_t now,
                  char sub_out[PL_JWT_SUB_MAX + 1])
{
    pl_jwt_key_t k = {.secret = (char *)secret, .secret_len = secret_len};
    pl_jwt_claims_t cl;
    int rc = verify_core(&k, 1, NULL, NULL, 0, token, len, now, &cl);
    if (rc == 0) memcpy(sub_out, cl.sub, sizeof cl.sub);
    return rc;
}

int pl_jwt_check(const pl_jwt_keyset_t *ks, const char *token, size_t len, int64_t now,
                 pl_jwt_claims_t *out)
{
    return verify_core(ks->key, ks->nkeys, ks->issuer, ks->audience, ks->leeway, token, len, now,
                       out);
}

int pl_jwt_keyset_add(pl_jwt_keyset_t *ks, const char *kid, const char *secret, size_t len)
{
    if (ks->nkeys >= PL_JWT_KEYS_MAX || strlen(kid) > PL_JWT_KID_MAX) return -1;
    pl_jwt_key_t *k = &ks->key[ks->nkeys];
    if (!(k->secret = malloc(len + 1))) return -1;
    memcpy(k->secret, secret, len);
    k->secret[len] = '\0';
    k->secret_len = len;
    if (!(k->hmac = hmac_pads_new(secret, len))) {
        free(k->secret);
        k->secret = NULL;
        return -1;
    }
    snprintf(k->kid, sizeof k->kid, "%s", kid);
    ks->nkeys++;
    return 0;
}

static int kid_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '.' || ch == '-';
}

int pl_jwt_keyset_parse(pl_jwt_keyset_t *ks, const char *spec, char *err, size_t n)
{
    const char *p = spec;
    for (int item = 1;; item++) {
        size_t ilen = strcspn(p, ",");
        const char *colon = memchr(p, ':', ilen);
        size_t klen = colon ? (size_t)(colon - p) : 0;
        if (!colon || klen == 0 || klen > PL_JWT_KID_MAX || klen + 1 == ilen) {
            snprintf(err, n,
                     "PARLEY_JWT_SECRETS: entry %d is not kid:secret (kid 1-%d of "
                     "[A-Za-z0-9_.-], a non-empty secret without commas)",
                     item, PL_JWT_KID_MAX);
            return -1;
        }
        char kid[PL_JWT_KID_MAX + 1];
        memcpy(kid, p, klen);
        kid[klen] = '\0';
        for (size_t i = 0; i < klen; i++)
            if (!kid_char_ok(kid[i])) {
                snprintf(err, n, "PARLEY_JWT_SECRETS: entry %d: a kid is [A-Za-z0-9_.-]", item);
                return -1;
            }
        for (int i = 0; i < ks->nkeys; i++)
            if (strcmp(ks->key[i].kid, kid) == 0) {
                snprintf(err, n, "PARLEY_JWT_SECRETS: kid '%s' appears twice", kid);
                return -1;
            }
        if (ks->nkeys >= PL_JWT_KEYS_MAX) {
            snprintf(err, n, "PARLEY_JWT_SECRETS: at most %d secrets", PL_JWT_KEYS_MAX);
            return -1;
        }
        if (pl_jwt_keyset_add(ks, kid, colon + 1, ilen - klen - 1) != 0) {
            snprintf(err, n, "PARLEY_JWT_SECRETS: out of memory");
            return -1;
        }
        if (!p[ilen]) return 0;
        p += ilen + 1;
    }
}

void pl_jwt_keyset_free(pl_jwt_keyset_t *ks)
{
    for (int i = 0; i < ks->nkeys; i++) {
        if (ks->key[i].secret) memset(ks->key[i].secret, 0, ks->key[i].secret_len);
        free(ks->key[i].secret);
        hmac_pads_free(ks->key[i].hmac);
    }
    free(ks->issuer);
    free(ks->audience);
    memset(ks, 0, sizeof *ks);
}

const char *pl_jwt_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case PL_JWT_EFORMAT:
        return "malformed token";
    case PL_JWT_EALG:
        return "unsupported algorithm";
    case PL_JWT_ESIG:
        return "bad signature";
    case PL_JWT_EEXPIRED:
        return "token expired";
    case PL_JWT_ESUB:
        return "bad subject";
    case PL_JWT_ENOSPC:
        return "token too long";
    case PL_JWT_ENOTYET:
        return "token not yet valid";
    case PL_JWT_EISS:
        return "wrong issuer";
    case PL_JWT_EAUD:
        return "wrong audience";
    case PL_JWT_EKID:
        return "unknown key id";
    default:
        return "invalid token";
    }
}
