/*
 * jwt: HS256 only. The header must say alg HS256 (no "none", no RS*: a token
 * signed any other way is rejected before its signature is looked at).
 */
#include "parley/base/jwt.h"

#include "parley/base/buf.h"

#include <cjson/cJSON.h>
#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <string.h>

/* Payloads above this are not tokens we minted or expect. */
#define JWT_MAX 4096

/* base64url without padding, into out (NUL-terminated); returns length or -1. */
static int b64url_encode(const unsigned char *in, size_t n, char *out, size_t out_size)
{
    size_t olen = 0;
    if (mbedtls_base64_encode((unsigned char *)out, out_size, &olen, in, n) != 0) return -1;
    while (olen > 0 && out[olen - 1] == '=')
        olen--;
    for (size_t i = 0; i < olen; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    out[olen] = '\0';
    return (int)olen;
}

/* One base64url digit's value, or -1. */
static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/*
 * base64url without padding. Not mbedTLS's decoder: that one is constant-time
 * (for keys), which made it a visible share of connect CPU; nothing in a
 * token's encoding is secret, only the signature comparison must not leak.
 */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t out_size,
                         size_t *out_len)
{
    if (n % 4 == 1 || (n / 4) * 3 + 2 > out_size) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* Leftover bits must be zero (a canonical encoding). */
    if (acc & ((1u << bits) - 1)) return -1;
    *out_len = o;
    return 0;
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

static int sub_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PL_JWT_SUB_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

int pl_jwt_sign(const char *secret, size_t secret_len, const char *sub, int64_t exp, char *out,
                size_t out_size)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    if (!sub_ok(sub)) return PL_JWT_ESUB;

    cJSON *claims = cJSON_CreateObject();
    if (!claims) return PL_JWT_ENOSPC;
    cJSON_AddStringToObject(claims, "sub", sub);
    if (exp) cJSON_AddNumberToObject(claims, "exp", (double)exp);
    char *payload = cJSON_PrintUnformatted(claims);
    cJSON_Delete(claims);
    if (!payload) return PL_JWT_ENOSPC;

    char buf[JWT_MAX];
    int h = b64url_encode((const unsigned char *)header, sizeof header - 1, buf, sizeof buf);
    int p = h < 0 ? -1
                  : b64url_encode((const unsigned char *)payload, strlen(payload), buf + h + 1,
                                  sizeof buf - (size_t)h - 1);
    cJSON_free(payload);
    if (p < 0) return PL_JWT_ENOSPC;
    buf[h] = '.';
    size_t signing_len = (size_t)h + 1 + (size_t)p;

    unsigned char mac[32];
    if (hmac256(secret, secret_len, buf, signing_len, mac) != 0) return PL_JWT_ENOSPC;
    if (signing_len + 2 >= sizeof buf) return PL_JWT_ENOSPC;
    buf[signing_len] = '.';
    int s = b64url_encode(mac, sizeof mac, buf + signing_len + 1, sizeof buf - signing_len - 1);
    if (s < 0) return PL_JWT_ENOSPC;
    size_t total = signing_len + 1 + (size_t)s;
    if (total + 1 > out_size) return PL_JWT_ENOSPC;
    memcpy(out, buf, total + 1);
    return (int)total;
}

int pl_jwt_verify(const char *secret, size_t secret_len, const char *token, size_t len, int64_t now,
                  char sub_out[PL_JWT_SUB_MAX + 1])
{
    if (len == 0 || len > JWT_MAX) return PL_JWT_EFORMAT;
    const char *dot1 = memchr(token, '.', len);
    if (!dot1) return PL_JWT_EFORMAT;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) return PL_JWT_EFORMAT;

    unsigned char json[JWT_MAX];
    size_t jlen;
    /* Header: must be HS256. */
    if (b64url_decode(token, (size_t)(dot1 - token), json, sizeof json - 1, &jlen) != 0)
        return PL_JWT_EFORMAT;
    cJSON *hdr = cJSON_ParseWithLength((const char *)json, jlen);
    if (!hdr) return PL_JWT_EFORMAT;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    int alg_ok = cJSON_IsString(alg) && strcmp(alg->valuestring, "HS256") == 0;
    cJSON_Delete(hdr);
    if (!alg_ok) return PL_JWT_EALG;

    /* Signature, compared in constant time. */
    unsigned char mac[32], sig[64];
    size_t sig_len;
    if (b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig, sizeof sig, &sig_len) != 0)
        return PL_JWT_EFORMAT;
    if (hmac256(secret, secret_len, token, (size_t)(dot2 - token), mac) != 0) return PL_JWT_ESIG;
    unsigned char diff = sig_len != sizeof mac;
    for (size_t i = 0; i < sizeof mac; i++)
        diff |= (unsigned char)(mac[i] ^ sig[i % sizeof sig]);
    if (diff) return PL_JWT_ESIG;

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
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
    if (exp && (!cJSON_IsNumber(exp) || exp->valuedouble <= (double)now))
        rc = PL_JWT_EEXPIRED;
    else if (!cJSON_IsString(sub) || !sub_ok(sub->valuestring))
        rc = PL_JWT_ESUB;
    else
        snprintf(sub_out, PL_JWT_SUB_MAX + 1, "%s", sub->valuestring);
    cJSON_Delete(claims);
    return rc;
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
    default:
        return "invalid token";
    }
}
