/* Unit tests for src/base/jwt.c: HS256 sign/verify, key sets (kid rotation, nbf, leeway, iss,
 * aud) and every rejection path.
 * Hand-built tokens use this file's own base64url encoder and mbedTLS HMAC,
 * so they do not depend on the code under test. */
#include "parley/base/jwt.h"
#include "unit.h"

#include <mbedtls/md.h>
#include <stdint.h>
#include <stdlib.h>

#define SECRET "s3cret-for-tests"
#define NOW 1700000000LL

static int verify_s(const char *secret, const char *tok, int64_t now, char *sub)
{
    return pl_jwt_verify(secret, strlen(secret), tok, strlen(tok), now, sub);
}

/* base64url without padding, written independently of src/jwt.c. */
static size_t b64url(const void *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = al[v >> 6 & 63];
        out[o++] = al[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = al[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/* header.payload.HMAC(secret) built from raw JSON (payload_len lets it hold NULs). */
static void make_token_n(char *out, const char *secret, const char *header, const char *payload,
                         size_t payload_len)
{
    size_t n = b64url(header, strlen(header), out);
    out[n++] = '.';
    n += b64url(payload, payload_len, out + n);
    unsigned char mac[32];
    mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), (const unsigned char *)secret,
                    strlen(secret), (const unsigned char *)out, n, mac);
    out[n++] = '.';
    b64url(mac, sizeof mac, out + n);
}

static void make_token(char *out, const char *secret, const char *header, const char *payload)
{
    make_token_n(out, secret, header, payload, strlen(payload));
}

static const char HS256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static void sign_verify_roundtrip(void)
{
    char tok[512], sub[PL_JWT_SUB_MAX + 1];
    int n = pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW + 3600, tok, sizeof tok);
    CHECK(n > 0);
    CHECK_EQ_INT(n, strlen(tok));
    int dots = 0;
    for (int i = 0; i < n; i++) {
        dots += tok[i] == '.';
        CHECK(tok[i] != '=' && tok[i] != '+' && tok[i] != '/');
    }
    CHECK_EQ_INT(dots, 2);
    memset(sub, 'x', sizeof sub);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), 0);
    CHECK_STR(sub, "alice");
}

static void verify_uses_len_not_nul(void)
{
    char tok[512], buf[600], sub[PL_JWT_SUB_MAX + 1];
    int n = pl_jwt_sign(SECRET, strlen(SECRET), "bob", NOW + 60, tok, sizeof tok);
    CHECK(n > 0);
    memcpy(buf, tok, (size_t)n);
    memcpy(buf + n, "GARBAGE.x", 10); /* trailing bytes beyond len must be ignored */
    CHECK_EQ_INT(pl_jwt_verify(SECRET, strlen(SECRET), buf, (size_t)n, NOW, sub), 0);
    CHECK_STR(sub, "bob");
    /* a truncated length is a different (bad) token */
    CHECK(pl_jwt_verify(SECRET, strlen(SECRET), buf, (size_t)n - 1, NOW, sub) < 0);
}

static void sub_of_max_length_roundtrips(void)
{
    char s[PL_JWT_SUB_MAX + 1], tok[1024], sub[PL_JWT_SUB_MAX + 1];
    memset(s, 'u', PL_JWT_SUB_MAX);
    s[PL_JWT_SUB_MAX] = '\0';
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), s, 0, tok, sizeof tok) > 0);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), 0);
    CHECK_STR(sub, s);
}

static void tampered_payload(void)
{
    char tok[512], forged[512], sub[PL_JWT_SUB_MAX + 1];
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW + 3600, tok, sizeof tok) > 0);
    /* Keep header and signature, swap in a payload naming someone else. */
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    size_t h = (size_t)(d1 - tok);
    memcpy(forged, tok, h + 1);
    const char *evil = "{\"sub\":\"mallory\",\"exp\":9999999999}";
    size_t n = h + 1 + b64url(evil, strlen(evil), forged + h + 1);
    strcpy(forged + n, d2);
    CHECK_EQ_INT(verify_s(SECRET, forged, NOW, sub), PL_JWT_ESIG);

    /* Flip one payload character to another valid base64url character. */
    strcpy(forged, tok);
    char *c = forged + h + 2;
    *c = *c == 'A' ? 'B' : 'A';
    CHECK_EQ_INT(verify_s(SECRET, forged, NOW, sub), PL_JWT_ESIG);
}

static void tampered_signature(void)
{
    char tok[512], bad[512], sub[PL_JWT_SUB_MAX + 1];
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW + 3600, tok, sizeof tok) > 0);
    size_t sig = (size_t)(strrchr(tok, '.') + 1 - tok);
    /* first and a middle signature character (the last one carries unused bits) */
    size_t pos[] = {sig, sig + 20};
    for (size_t i = 0; i < 2; i++) {
        strcpy(bad, tok);
        bad[pos[i]] = bad[pos[i]] == 'A' ? 'B' : 'A';
        CHECK_EQ_INT(verify_s(SECRET, bad, NOW, sub), PL_JWT_ESIG);
    }
    /* signature cut short by 4 chars (3 bytes) and extended by 4 chars */
    strcpy(bad, tok);
    bad[strlen(bad) - 4] = '\0';
    CHECK_EQ_INT(verify_s(SECRET, bad, NOW, sub), PL_JWT_ESIG);
    strcpy(bad, tok);
    strcat(bad, "AAAA");
    CHECK_EQ_INT(verify_s(SECRET, bad, NOW, sub), PL_JWT_ESIG);
    /* empty signature */
    strcpy(bad, tok);
    bad[sig] = '\0';
    CHECK_EQ_INT(verify_s(SECRET, bad, NOW, sub), PL_JWT_ESIG);
}

static void wrong_secret(void)
{
    char tok[512], sub[PL_JWT_SUB_MAX + 1];
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW + 3600, tok, sizeof tok) > 0);
    CHECK_EQ_INT(verify_s("other-secret", tok, NOW, sub), PL_JWT_ESIG);
    CHECK_EQ_INT(verify_s(SECRET "x", tok, NOW, sub), PL_JWT_ESIG);
    /* secret_len is honoured: a prefix of the secret is a different key */
    CHECK_EQ_INT(pl_jwt_verify(SECRET, strlen(SECRET) - 1, tok, strlen(tok), NOW, sub),
                 PL_JWT_ESIG);
}

static void expired(void)
{
    char tok[512], sub[PL_JWT_SUB_MAX + 1];
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW - 1, tok, sizeof tok) > 0);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EEXPIRED);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW - 2, sub), 0);
    /* RFC 7519 4.1.4: valid only while now is before exp */
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW, tok, sizeof tok) > 0);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EEXPIRED);
    /* hand-built: exp far in the past */
    make_token(tok, SECRET, HS256, "{\"sub\":\"alice\",\"exp\":1000}");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EEXPIRED);
}

static void no_exp_accepted(void)
{
    char tok[512], sub[PL_JWT_SUB_MAX + 1];
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), "dave", 0, tok, sizeof tok) > 0);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), 0);
    CHECK_STR(sub, "dave");
    CHECK_EQ_INT(verify_s(SECRET, tok, 4000000000LL, sub), 0);
    make_token(tok, SECRET, HS256, "{\"sub\":\"erin\"}");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), 0);
    CHECK_STR(sub, "erin");
}

static void alg_none_and_hs512_rejected(void)
{
    char tok[512], sub[PL_JWT_SUB_MAX + 1];
    const char *payload = "{\"sub\":\"alice\"}";
    /* alg none with an empty signature, the classic forgery */
    size_t n = b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", 27, tok);
    tok[n++] = '.';
    n += b64url(payload, strlen(payload), tok + n);
    tok[n++] = '.';
    tok[n] = '\0';
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EALG);
    /* alg none even with a valid HS256 MAC */
    make_token(tok, SECRET, "{\"alg\":\"none\"}", payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EALG);
    /* HS512 header (signed with HS256 MAC so only alg is wrong) */
    make_token(tok, SECRET, "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EALG);
    make_token(tok, SECRET, "{\"alg\":\"RS256\"}", payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EALG);
    make_token(tok, SECRET, "{\"alg\":\"hs256\"}", payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EALG);
    make_token(tok, SECRET, "{\"typ\":\"JWT\"}", payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EALG);
    make_token(tok, SECRET, "{\"alg\":256}", payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EALG);
    /* sanity: the same construction with HS256 is accepted */
    make_token(tok, SECRET, HS256, payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), 0);
}

static void malformed(void)
{
    char tok[1200], sub[PL_JWT_SUB_MAX + 1], good[512];
    CHECK_EQ_INT(verify_s(SECRET, "", NOW, sub), PL_JWT_EFORMAT);
    CHECK_EQ_INT(verify_s(SECRET, "nodotsatall", NOW, sub), PL_JWT_EFORMAT);
    CHECK_EQ_INT(verify_s(SECRET, "one.dot", NOW, sub), PL_JWT_EFORMAT);
    CHECK(pl_jwt_sign(SECRET, strlen(SECRET), "alice", 0, good, sizeof good) > 0);
    /* four parts: a valid token with one more part */
    snprintf(tok, sizeof tok, "%s.AAAA", good);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EFORMAT);
    CHECK_EQ_INT(verify_s(SECRET, "a.b.c.d", NOW, sub), PL_JWT_EFORMAT);
    /* bad base64 in the header */
    snprintf(tok, sizeof tok, "!!!!%s", good);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EFORMAT);
    /* standard base64 characters and padding are not base64url */
    CHECK_EQ_INT(verify_s(SECRET, "eyJ+bGciOiJIUzI1NiJ9.e30.AAAA", NOW, sub), PL_JWT_EFORMAT);
    CHECK_EQ_INT(verify_s(SECRET, "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA", NOW, sub), PL_JWT_EFORMAT);
    /* header that is base64 but not JSON */
    size_t n = b64url("not json", 8, tok);
    strcpy(tok + n, strchr(good, '.'));
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EFORMAT);
    /* a correctly signed payload that is not JSON / not an object */
    make_token(tok, SECRET, HS256, "not json");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EFORMAT);
    make_token(tok, SECRET, HS256, "[\"sub\",\"alice\"]");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_EFORMAT);
    /* a correctly signed payload part with a character outside base64url */
    const char *d1 = strchr(good, '.');
    char *payload_bad = tok;
    size_t h = (size_t)(d1 - good);
    memcpy(payload_bad, good, h + 1);
    strcpy(payload_bad + h + 1, "e30*"); /* "{}" plus '*' */
    {
        unsigned char mac[32];
        size_t m = strlen(payload_bad);
        mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), (const unsigned char *)SECRET,
                        strlen(SECRET), (const unsigned char *)payload_bad, m, mac);
        payload_bad[m++] = '.';
        b64url(mac, sizeof mac, payload_bad + m);
    }
    CHECK_EQ_INT(verify_s(SECRET, payload_bad, NOW, sub), PL_JWT_EFORMAT);
}

static void bad_sub(void)
{
    char tok[1024], sub[PL_JWT_SUB_MAX + 1], payload[512];
    make_token(tok, SECRET, HS256, "{\"exp\":9999999999}");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_ESUB);
    make_token(tok, SECRET, HS256, "{\"sub\":\"\"}");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_ESUB);
    make_token(tok, SECRET, HS256, "{\"sub\":42}");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_ESUB);
    make_token(tok, SECRET, HS256, "{\"sub\":null}");
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_ESUB);
    /* 129 bytes: one over; 128 is fine */
    char s[200];
    memset(s, 'a', 129);
    s[129] = '\0';
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\"}", s);
    make_token(tok, SECRET, HS256, payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_ESUB);
    s[128] = '\0';
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\"}", s);
    make_token(tok, SECRET, HS256, payload);
    CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), 0);
    CHECK_EQ_INT(strlen(sub), 128);
    /* control characters, escaped in JSON */
    const char *ctl[] = {"{\"sub\":\"al\\nice\"}", "{\"sub\":\"al\\u0001ice\"}",
                         "{\"sub\":\"\\u001f\"}", "{\"sub\":\"al\\u007fice\"}",
                         "{\"sub\":\"alice\\t\"}"};
    for (size_t i = 0; i < sizeof ctl / sizeof *ctl; i++) {
        make_token(tok, SECRET, HS256, ctl[i]);
        CHECK_EQ_INT(verify_s(SECRET, tok, NOW, sub), PL_JWT_ESUB);
    }
    /* signing refuses the same subjects */
    CHECK_EQ_INT(pl_jwt_sign(SECRET, strlen(SECRET), "", 0, tok, sizeof tok), PL_JWT_ESUB);
    CHECK_EQ_INT(pl_jwt_sign(SECRET, strlen(SECRET), "a\x01", 0, tok, sizeof tok), PL_JWT_ESUB);
    memset(s, 'a', 129);
    s[129] = '\0';
    CHECK_EQ_INT(pl_jwt_sign(SECRET, strlen(SECRET), s, 0, tok, sizeof tok), PL_JWT_ESUB);
}

/* U+0000 is a control character too. cJSON keeps it inside the string, so a
 * check that stops at the first NUL sees only "alice" and the token verifies
 * as a different user than the one it was minted for. */
static void sub_with_nul_rejected(void)
{
    char tok[512], sub[PL_JWT_SUB_MAX + 1];
    make_token(tok, SECRET, HS256, "{\"sub\":\"alice\\u0000admin\"}");
    int rc = verify_s(SECRET, tok, NOW, sub);
    CHECK_EQ_INT(rc, PL_JWT_ESUB);
}

static void sign_small_buffer(void)
{
    char tok[512];
    int n = pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW, tok, sizeof tok);
    CHECK(n > 0);
    CHECK_EQ_INT(pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW, tok, (size_t)n), PL_JWT_ENOSPC);
    CHECK_EQ_INT(pl_jwt_sign(SECRET, strlen(SECRET), "alice", NOW, tok, (size_t)n + 1), n);
    CHECK_EQ_INT(strlen(tok), n);
}

/*
 * Produced independently with Python's hmac/hashlib (not this code):
 *   python3 -c 'import hmac,hashlib,base64,json
 *   b=lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
 *   h=b(json.dumps({"alg":"HS256","typ":"JWT"},separators=(",",":")).encode())
 *   p=b(json.dumps({"sub":"carol-\u00e9","exp":4102444800,"iat":1700000000},
 *                  separators=(",",":"),ensure_ascii=False).encode())
 *   s=b(hmac.new(b"independent-secret-42",(h+"."+p).encode(),hashlib.sha256).digest())
 *   print(h+"."+p+"."+s)'
 */
static const char EXT_TOKEN[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJjYXJvbC3DqSIsImV4cCI6NDEwMjQ0NDgwMCwiaWF0IjoxNzAwMDAwMDAwfQ."
    "Zqh5WL6x2vnYqYVrWFyk-OMrsa6YJJUa5jMmoD-v47A";
static const char EXT_SECRET[] = "independent-secret-42";

static void verify_independent_token(void)
{
    char sub[PL_JWT_SUB_MAX + 1];
    CHECK_EQ_INT(verify_s(EXT_SECRET, EXT_TOKEN, NOW, sub), 0);
    CHECK_STR(sub, "carol-\xc3\xa9");
    CHECK_EQ_INT(verify_s(SECRET, EXT_TOKEN, NOW, sub), PL_JWT_ESIG);
    CHECK_EQ_INT(verify_s(EXT_SECRET, EXT_TOKEN, 4102444800LL, sub), PL_JWT_EEXPIRED);
}

/* A keyset's key MACs from precomputed pad states; pl_jwt_sign and pl_jwt_verify through
 * mbedTLS's HMAC. Each must accept the other's tokens, for keys below, at and above SHA-256's
 * 64-byte block (longer keys are hashed first), and the external token too. */
static void keyset_pads_match_plain_hmac(void)
{
    static const size_t lens[] = {1, 17, 63, 64, 65, 200};
    char secret[201], tok[1024], sub[PL_JWT_SUB_MAX + 1];
    for (size_t i = 0; i < sizeof secret; i++)
        secret[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        pl_jwt_keyset_t ks = {0};
        pl_jwt_claims_t cl;
        CHECK_EQ_INT(pl_jwt_keyset_add(&ks, "", secret, lens[i]), 0);
        CHECK(ks.key[0].hmac != NULL);
        int n = pl_jwt_sign(secret, lens[i], "pad-user", NOW + 60, tok, sizeof tok);
        CHECK(n > 0);
        CHECK_EQ_INT(pl_jwt_check(&ks, tok, (size_t)n, NOW, &cl), 0);
        CHECK_STR(cl.sub, "pad-user");
        n = pl_jwt_mint(&ks, "minted", NOW, NOW + 60, tok, sizeof tok);
        CHECK(n > 0);
        CHECK_EQ_INT(pl_jwt_verify(secret, lens[i], tok, (size_t)n, NOW, sub), 0);
        CHECK_STR(sub, "minted");
        /* One byte more or less of the secret is another key. */
        CHECK(pl_jwt_verify(secret, lens[i] + 1, tok, (size_t)n, NOW, sub) == PL_JWT_ESIG);
        pl_jwt_keyset_free(&ks);
    }
    pl_jwt_keyset_t ks = {0};
    pl_jwt_claims_t cl;
    CHECK_EQ_INT(pl_jwt_keyset_add(&ks, "", EXT_SECRET, strlen(EXT_SECRET)), 0);
    CHECK_EQ_INT(pl_jwt_check(&ks, EXT_TOKEN, strlen(EXT_TOKEN), NOW, &cl), 0);
    CHECK_STR(cl.sub, "carol-\xc3\xa9");
    pl_jwt_keyset_free(&ks);
}

/* ---- key sets: kid rotation, nbf, leeway, iss, aud ---- */

static int check_s(const pl_jwt_keyset_t *ks, const char *tok, int64_t now, pl_jwt_claims_t *cl)
{
    return pl_jwt_check(ks, tok, strlen(tok), now, cl);
}

static void keyset_parse(void)
{
    pl_jwt_keyset_t ks = {0};
    char err[200];
    CHECK_EQ_INT(pl_jwt_keyset_parse(&ks, "new:s2:with:colons,old:s1", err, sizeof err), 0);
    CHECK_EQ_INT(ks.nkeys, 2);
    CHECK_STR(ks.key[0].kid, "new");
    CHECK_STR(ks.key[0].secret, "s2:with:colons");
    CHECK_STR(ks.key[1].kid, "old");
    pl_jwt_keyset_free(&ks);
    static const char *const bad[] = {
        "",        "nokid", ":secret", "k:",
        "k:a,k:b", "k:a,",  "k!:a",    "a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8,i:9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(pl_jwt_keyset_parse(&ks, bad[i], err, sizeof err) < 0);
        CHECK(strstr(err, "PARLEY_JWT_SECRETS") != NULL);
        /* secrets are never quoted */
        CHECK(strstr(err, "SEKRIT") == NULL);
        pl_jwt_keyset_free(&ks);
    }
}

static void kid_rotation(void)
{
    char err[200], tok[1024], hand[1024];
    pl_jwt_claims_t cl;
    pl_jwt_keyset_t old = {0}, both = {0}, fresh = {0};
    CHECK_EQ_INT(pl_jwt_keyset_parse(&old, "k1:first-secret", err, sizeof err), 0);
    CHECK_EQ_INT(pl_jwt_keyset_parse(&both, "k2:second-secret,k1:first-secret", err, sizeof err),
                 0);
    CHECK_EQ_INT(pl_jwt_keyset_parse(&fresh, "k2:second-secret", err, sizeof err), 0);
    /* minted with the first key, its kid in the header */
    CHECK(pl_jwt_mint(&old, "alice", NOW, NOW + 60, tok, sizeof tok) > 0);
    CHECK(strchr(tok, '.') != NULL);
    CHECK_EQ_INT(check_s(&old, tok, NOW, &cl), 0);
    CHECK_STR(cl.sub, "alice");
    CHECK_EQ_INT(cl.exp, NOW + 60);
    CHECK_EQ_INT(cl.iat, NOW); /* read for revocations (a disconnect) */
    /* during the rotation both are accepted; after it the removed kid is refused */
    CHECK_EQ_INT(check_s(&both, tok, NOW, &cl), 0);
    CHECK_EQ_INT(check_s(&fresh, tok, NOW, &cl), PL_JWT_EKID);
    CHECK(pl_jwt_mint(&both, "bob", NOW, NOW + 60, tok, sizeof tok) > 0);
    CHECK_EQ_INT(check_s(&fresh, tok, NOW, &cl), 0);
    CHECK_EQ_INT(check_s(&old, tok, NOW, &cl), PL_JWT_EKID);
    /* a kid naming one key is checked against that key only */
    make_token(hand, "first-secret", "{\"alg\":\"HS256\",\"kid\":\"k2\"}", "{\"sub\":\"m\"}");
    CHECK_EQ_INT(check_s(&both, hand, NOW, &cl), PL_JWT_ESIG);
    /* no kid: every key is tried */
    make_token(hand, "first-secret", HS256, "{\"sub\":\"carol\"}");
    CHECK_EQ_INT(check_s(&both, hand, NOW, &cl), 0);
    CHECK_STR(cl.sub, "carol");
    CHECK_EQ_INT(cl.exp, 0);
    CHECK_EQ_INT(cl.iat, 0); /* none */
    CHECK_EQ_INT(check_s(&fresh, hand, NOW, &cl), PL_JWT_ESIG);
    /* a kid that is not a string */
    make_token(hand, "first-secret", "{\"alg\":\"HS256\",\"kid\":7}", "{\"sub\":\"m\"}");
    CHECK_EQ_INT(check_s(&both, hand, NOW, &cl), PL_JWT_EFORMAT);
    pl_jwt_keyset_free(&old);
    pl_jwt_keyset_free(&both);
    pl_jwt_keyset_free(&fresh);
}

static void single_secret_ignores_foreign_kid(void)
{
    pl_jwt_keyset_t ks = {0};
    pl_jwt_claims_t cl;
    char hand[1024];
    CHECK_EQ_INT(pl_jwt_keyset_add(&ks, "", SECRET, strlen(SECRET)), 0);
    make_token(hand, SECRET, "{\"alg\":\"HS256\",\"kid\":\"whatever\"}", "{\"sub\":\"d\"}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), 0);
    pl_jwt_keyset_free(&ks);
}

static void nbf_and_leeway(void)
{
    pl_jwt_keyset_t ks = {0};
    pl_jwt_claims_t cl;
    char hand[1024], payload[200];
    CHECK_EQ_INT(pl_jwt_keyset_add(&ks, "", SECRET, strlen(SECRET)), 0);
    snprintf(payload, sizeof payload, "{\"sub\":\"a\",\"nbf\":%lld}", NOW + 10);
    make_token(hand, SECRET, HS256, payload);
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), PL_JWT_ENOTYET);
    CHECK_EQ_INT(check_s(&ks, hand, NOW + 10, &cl), 0);
    ks.leeway = 10;
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), 0);
    CHECK_EQ_INT(check_s(&ks, hand, NOW - 1, &cl), PL_JWT_ENOTYET);
    /* exp: valid while now < exp + leeway */
    snprintf(payload, sizeof payload, "{\"sub\":\"a\",\"exp\":%lld}", NOW);
    make_token(hand, SECRET, HS256, payload);
    CHECK_EQ_INT(check_s(&ks, hand, NOW + 9, &cl), 0);
    CHECK_EQ_INT(check_s(&ks, hand, NOW + 10, &cl), PL_JWT_EEXPIRED);
    ks.leeway = 0;
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), PL_JWT_EEXPIRED);
    CHECK_EQ_INT(check_s(&ks, hand, NOW - 1, &cl), 0);
    make_token(hand, SECRET, HS256, "{\"sub\":\"a\",\"nbf\":\"soon\"}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), PL_JWT_ENOTYET);
    pl_jwt_keyset_free(&ks);
}

static void issuer_and_audience(void)
{
    pl_jwt_keyset_t ks = {0};
    pl_jwt_claims_t cl;
    char hand[1024], tok[1024];
    CHECK_EQ_INT(pl_jwt_keyset_add(&ks, "", SECRET, strlen(SECRET)), 0);
    make_token(hand, SECRET, HS256, "{\"sub\":\"a\"}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), 0); /* nothing asked: nothing checked */
    ks.issuer = strdup("https://auth.example");
    ks.audience = strdup("parley");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), PL_JWT_EISS);
    make_token(hand, SECRET, HS256,
               "{\"sub\":\"a\",\"iss\":\"https://evil.example\",\"aud\":\"parley\"}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), PL_JWT_EISS);
    make_token(hand, SECRET, HS256, "{\"sub\":\"a\",\"iss\":\"https://auth.example\"}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), PL_JWT_EAUD);
    make_token(hand, SECRET, HS256,
               "{\"sub\":\"a\",\"iss\":\"https://auth.example\",\"aud\":\"other\"}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), PL_JWT_EAUD);
    make_token(hand, SECRET, HS256,
               "{\"sub\":\"a\",\"iss\":\"https://auth.example\",\"aud\":[\"x\",\"parley\"]}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), 0);
    make_token(hand, SECRET, HS256,
               "{\"sub\":\"a\",\"iss\":\"https://auth.example\",\"aud\":\"parley\"}");
    CHECK_EQ_INT(check_s(&ks, hand, NOW, &cl), 0);
    /* minted tokens carry both */
    CHECK(pl_jwt_mint(&ks, "zed", NOW, 0, tok, sizeof tok) > 0);
    CHECK_EQ_INT(check_s(&ks, tok, NOW, &cl), 0);
    CHECK_STR(cl.sub, "zed");
    pl_jwt_keyset_free(&ks);
}

static void strerror_distinct(void)
{
    int codes[] = {0,           PL_JWT_EFORMAT, PL_JWT_EALG,    PL_JWT_ESIG, PL_JWT_EEXPIRED,
                   PL_JWT_ESUB, PL_JWT_ENOSPC,  PL_JWT_ENOTYET, PL_JWT_EISS, PL_JWT_EAUD,
                   PL_JWT_EKID};
    CHECK_EQ_INT(PL_JWT_EKID, -(PL_JWT_NERR - 1));
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        CHECK(pl_jwt_strerror(codes[i]) != NULL);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(pl_jwt_strerror(codes[i]), pl_jwt_strerror(codes[j])) != 0);
    }
    CHECK(pl_jwt_strerror(-99) != NULL);
}

int main(void)
{
    RUN(sign_verify_roundtrip);
    RUN(verify_uses_len_not_nul);
    RUN(sub_of_max_length_roundtrips);
    RUN(tampered_payload);
    RUN(tampered_signature);
    RUN(wrong_secret);
    RUN(expired);
    RUN(no_exp_accepted);
    RUN(alg_none_and_hs512_rejected);
    RUN(malformed);
    RUN(bad_sub);
    RUN(sub_with_nul_rejected);
    RUN(sign_small_buffer);
    RUN(verify_independent_token);
    RUN(keyset_pads_match_plain_hmac);
    RUN(keyset_parse);
    RUN(kid_rotation);
    RUN(single_secret_ignores_foreign_kid);
    RUN(nbf_and_leeway);
    RUN(issuer_and_audience);
    RUN(strerror_distinct);
    UNIT_EXIT();
}
