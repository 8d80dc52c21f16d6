/* Unit tests for src/ws.c: Sec-WebSocket-Accept, UTF-8 validation, and
 * pl_ws_feed over hand-built masked client frames with a context pool. */
#include "parley/net/frame.h"
#include "parley/proto/ws.h"
#include "unit.h"

#include <stdlib.h>

/* ---- accept key ---- */

static void accept_key(void)
{
    char out[PL_WS_ACCEPT_LEN + 1];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455 section 1.3 */
    CHECK_EQ_INT(pl_ws_accept_key(key, strlen(key), out), 0);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK_EQ_INT(strlen(out), PL_WS_ACCEPT_LEN);
    /* only len bytes of the key are used */
    char longer[64];
    snprintf(longer, sizeof longer, "%sXYZ", key);
    CHECK_EQ_INT(pl_ws_accept_key(longer, 24, out), 0);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void accept_key_bad(void)
{
    char out[PL_WS_ACCEPT_LEN + 1];
    const char *bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",      /* 23 chars */
        "dGhlIHNhbXBsZSBub25jZQ===",    /* 25 chars */
        "dGhlIHNhbXBsZSBub25jZ!==",     /* not base64 */
        "AAAAAAAAAAAAAAAAAAAAAAAA",     /* base64, but of 18 bytes, not 16 */
        "dGhlIHNhbXBsZSBub25jZQ",       /* unpadded */
        "dGhlIHNhbXBsZSBub25jZQ== ",    /* trailing space (a caller must trim) */
        "dGhlIHNhbXBs\r\nZSBub25jZQ==", /* line break inside */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_EQ_INT(pl_ws_accept_key(bad[i], strlen(bad[i]), out), -1);
}

/* ---- the opening handshake ---- */

static pl_ws_hs_t handshake(const char *head, char accept[PL_WS_ACCEPT_LEN + 1])
{
    pl_http_t *h = pl_http_new();
    size_t used;
    int status;
    pl_ws_hs_t r = (pl_ws_hs_t)-1;
    if (pl_http_feed(h, head, strlen(head), &used, &status) == PL_HTTP_UPGRADE)
        r = pl_ws_handshake_check(h, accept);
    pl_http_free(h);
    return r;
}

static void handshake_check(void)
{
    char acc[PL_WS_ACCEPT_LEN + 1];
    CHECK_EQ_INT(handshake("GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           acc),
                 PL_WS_HS_OK);
    CHECK_STR(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK_EQ_INT(handshake("POST /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
                           acc),
                 PL_WS_HS_NOT_UPGRADE);
    CHECK_EQ_INT(handshake("GET /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           acc),
                 PL_WS_HS_NOT_UPGRADE);
    CHECK_EQ_INT(handshake("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 8\r\n\r\n",
                           acc),
                 PL_WS_HS_VERSION);
    CHECK_EQ_INT(handshake("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                           acc),
                 PL_WS_HS_VERSION);
    CHECK_EQ_INT(handshake("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           acc),
                 PL_WS_HS_KEY);
    CHECK_EQ_INT(handshake("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           acc),
                 PL_WS_HS_KEY);
}

/* ---- UTF-8 ---- */

static int u8(const char *s, size_t n)
{
    return pl_utf8_valid((const uint8_t *)s, n);
}
#define U8(lit) u8(lit, sizeof(lit) - 1)

static void utf8(void)
{
    CHECK(pl_utf8_valid((const uint8_t *)"", 0));
    CHECK(U8("hello, world"));
    CHECK(U8("a long ascii string, longer than eight bytes of course"));
    CHECK(U8("\x00\x7f"));
    CHECK(U8("\xc2\x80"));         /* U+0080, smallest 2-byte */
    CHECK(U8("caf\xc3\xa9"));      /* é */
    CHECK(U8("\xdf\xbf"));         /* U+07FF */
    CHECK(U8("\xe0\xa0\x80"));     /* U+0800, smallest 3-byte */
    CHECK(U8("\xe2\x82\xac"));     /* € */
    CHECK(U8("\xed\x9f\xbf"));     /* U+D7FF, just below surrogates */
    CHECK(U8("\xee\x80\x80"));     /* U+E000, just above */
    CHECK(U8("\xef\xbf\xbf"));     /* U+FFFF */
    CHECK(U8("\xf0\x90\x80\x80")); /* U+10000, smallest 4-byte */
    CHECK(U8("\xf0\x9f\x98\x80")); /* 😀 */
    CHECK(U8("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
    CHECK(U8("12345678\xc3\xa9"
             "abcdefgh\xf0\x9f\x98\x80xyz")); /* mixed with the fast path */

    CHECK(!U8("\xc0\x80"));                 /* overlong NUL */
    CHECK(!U8("\xc1\xbf"));                 /* overlong 2-byte */
    CHECK(!U8("\xe0\x80\x80"));             /* overlong 3-byte */
    CHECK(!U8("\xe0\x9f\xbf"));             /* overlong U+07FF */
    CHECK(!U8("\xf0\x80\x80\x80"));         /* overlong 4-byte */
    CHECK(!U8("\xf0\x8f\xbf\xbf"));         /* overlong U+FFFF */
    CHECK(!U8("\xed\xa0\x80"));             /* U+D800 surrogate */
    CHECK(!U8("\xed\xbf\xbf"));             /* U+DFFF surrogate */
    CHECK(!U8("\xed\xa0\xbd\xed\xb8\x80")); /* CESU-8 surrogate pair */
    CHECK(!U8("\xf4\x90\x80\x80"));         /* U+110000 */
    CHECK(!U8("\xf5\x80\x80\x80"));
    CHECK(!U8("\xf7\xbf\xbf\xbf"));
    CHECK(!U8("\xf8\x88\x80\x80\x80")); /* 5-byte form */
    CHECK(!U8("\xfe"));
    CHECK(!U8("\xff"));
    CHECK(!U8("\xc3")); /* truncated at end */
    CHECK(!U8("abc\xe2\x82"));
    CHECK(!U8("abcdefgh\xf0\x9f\x98"));
    CHECK(!U8("\x80")); /* continuation without lead */
    CHECK(!U8("a\xbf"
              "b"));
    CHECK(!U8("\xc3\xa9\xa9")); /* one continuation too many */
    CHECK(!U8("\xc3"
              "a")); /* lead followed by ASCII */
    CHECK(!U8("\xe2\x82"
              "abcdefgh")); /* lead, then fast-path-able ASCII */
    CHECK(!U8("12345678\x80"));
    /* only n bytes are looked at */
    CHECK(u8("\xc3\xa9\xff", 2));
    CHECK(!u8("\xc3\xa9", 1));
}

/* ---- client frames ---- */

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Build one client frame: FIN/RSV/opcode, masked with MASK unless !masked. */
static size_t mk(uint8_t *out, int fin, unsigned rsv, unsigned op, int masked, const void *p,
                 size_t n)
{
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (op & 0xf));
    uint8_t m = masked ? 0x80 : 0;
    if (n < 126) {
        out[h++] = (uint8_t)(m | n);
    } else if (n < 65536) {
        out[h++] = m | 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    } else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    if (masked) {
        memcpy(out + h, MASK, 4);
        h += 4;
    }
    const uint8_t *src = p;
    for (size_t i = 0; i < n; i++)
        out[h + i] = masked ? src[i] ^ MASK[i % 4] : src[i];
    return h + n;
}

static size_t text(uint8_t *out, const char *s)
{
    return mk(out, 1, 0, PL_WS_TEXT, 1, s, strlen(s));
}

/* What the callback saw. */
#define MAXMSG 16
typedef struct {
    int n;
    unsigned op[MAXMSG];
    size_t len[MAXMSG];
    uint8_t *data[MAXMSG];
    int stop_at; /* return non-zero from the stop_at-th call (1-based), 0 = never */
} rec_t;

static int on_msg(void *ud, unsigned opcode, const uint8_t *p, size_t len)
{
    rec_t *r = ud;
    if (r->n < MAXMSG) {
        r->op[r->n] = opcode;
        r->len[r->n] = len;
        r->data[r->n] = malloc(len + 1);
        if (len) memcpy(r->data[r->n], p, len);
        r->data[r->n][len] = 0;
    }
    r->n++;
    return r->stop_at && r->n == r->stop_at;
}

static void rec_clear(rec_t *r)
{
    for (int i = 0; i < r->n && i < MAXMSG; i++)
        free(r->data[i]);
    memset(r, 0, sizeof *r);
}

static int rec_is(const rec_t *r, int i, unsigned op, const void *p, size_t len)
{
    return i < r->n && r->op[i] == op && r->len[i] == len && memcmp(r->data[i], p, len) == 0;
}

#define MAX 65536

static int feed(pl_ws_pool_t *pool, pl_ws_in_t *in, const uint8_t *p, size_t n, rec_t *r)
{
    return pl_ws_feed(pool, in, p, n, MAX, on_msg, r);
}

static void whole_text_frame(void)
{
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    uint8_t buf[256];
    size_t n = text(buf, "Hello");
    CHECK_EQ_INT(buf[0], 0x81);
    CHECK_EQ_INT(buf[1], 0x85);
    CHECK_EQ_INT(feed(&pool, &in, buf, n, &r), 0);
    CHECK_EQ_INT(r.n, 1);
    CHECK(rec_is(&r, 0, PL_WS_TEXT, "Hello", 5));
    /* the context went back to the pool */
    CHECK(in.part == NULL);
    CHECK_EQ_INT(pool.nfree, 1);
    /* a binary frame too, through the pooled context */
    rec_clear(&r);
    uint8_t bin[3] = {0, 0xff, 0x80};
    n = mk(buf, 1, 0, PL_WS_BINARY, 1, bin, 3);
    CHECK_EQ_INT(feed(&pool, &in, buf, n, &r), 0);
    CHECK(r.n == 1 && rec_is(&r, 0, PL_WS_BINARY, bin, 3));
    CHECK(in.part == NULL);
    CHECK_EQ_INT(pool.nfree, 1);
    rec_clear(&r);
    pl_ws_in_free(&in);
    pl_ws_pool_free(&pool);
}

/* 1 if `pos` is 0 or the end of a frame in buf[0..n) (frames built by mk). */
static int at_message_end(const uint8_t *buf, size_t n, size_t pos)
{
    size_t off = 0;
    int open = 0; /* a fragmented message has begun and not ended */
    if (pos == 0) return 1;
    while (off < n) {
        unsigned op = buf[off] & 0x0f, fin = buf[off] & 0x80;
        if (op == PL_WS_TEXT || op == PL_WS_BINARY) open = !fin;
        if (op == 0 && fin) open = 0;
        uint64_t len = buf[off + 1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            len = (uint64_t)buf[off + 2] << 8 | buf[off + 3];
            h = 4;
        } else if (len == 127) {
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | buf[off + 2 + i];
            h = 10;
        }
        if (buf[off + 1] & 0x80) h += 4;
        off += h + (size_t)len;
        if (off == pos) return !open;
    }
    return 0;
}

/* Feed `buf` split at every point (two reads), then byte by byte; expect the
 * messages in `want`, and a borrowed part exactly while mid-message. */
static void check_all_splits(const uint8_t *buf, size_t n, const rec_t *want)
{
    for (size_t k = 0; k <= n + 1; k++) {
        pl_ws_pool_t pool;
        pl_ws_pool_init(&pool);
        pl_ws_in_t in = {0};
        rec_t r = {0};
        int rc = 0, ctx_wrong = 0;
        if (k <= n) {
            rc |= feed(&pool, &in, buf, k, &r);
            ctx_wrong += (in.part == NULL) != at_message_end(buf, n, k);
            rc |= feed(&pool, &in, buf + k, n - k, &r);
        } else { /* k == n+1: one byte per read */
            for (size_t i = 0; i < n; i++) {
                rc |= feed(&pool, &in, buf + i, 1, &r);
                ctx_wrong += (in.part == NULL) != at_message_end(buf, n, i + 1);
            }
        }
        int ok = rc == 0 && r.n == want->n && in.part == NULL && pool.nfree == 1 && !ctx_wrong;
        for (int i = 0; ok && i < want->n; i++)
            ok = rec_is(&r, i, want->op[i], want->data[i], want->len[i]);
        if (!ok) {
            printf("  split at %zu of %zu: rc %d, %d messages, ctx wrong %d times\n", k, n, rc, r.n,
                   ctx_wrong);
            CHECK(ok);
        }
        rec_clear(&r);
        pl_ws_in_free(&in);
        pl_ws_pool_free(&pool);
    }
}

static void want_add(rec_t *w, unsigned op, const void *p, size_t len)
{
    w->op[w->n] = op;
    w->len[w->n] = len;
    w->data[w->n] = malloc(len + 1);
    memcpy(w->data[w->n], p, len);
    w->n++;
}

static void text_every_split(void)
{
    uint8_t buf[512];
    rec_t want = {0};
    size_t n = text(buf, "Hello, split world");
    want_add(&want, PL_WS_TEXT, "Hello, split world", 18);
    check_all_splits(buf, n, &want);
    rec_clear(&want);

    /* a 300-byte payload: 16-bit extended length */
    char big[301];
    for (int i = 0; i < 300; i++)
        big[i] = (char)('a' + i % 26);
    big[300] = 0;
    n = text(buf, big);
    CHECK_EQ_INT(n, 2 + 2 + 4 + 300);
    want_add(&want, PL_WS_TEXT, big, 300);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
}

static void two_frames_one_buffer(void)
{
    uint8_t buf[256];
    size_t n = text(buf, "first");
    n += text(buf + n, "second");
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    CHECK_EQ_INT(feed(&pool, &in, buf, n, &r), 0);
    CHECK_EQ_INT(r.n, 2);
    CHECK(rec_is(&r, 0, PL_WS_TEXT, "first", 5));
    CHECK(rec_is(&r, 1, PL_WS_TEXT, "second", 6));
    CHECK(in.part == NULL && pool.nfree == 1);
    rec_clear(&r);
    /* one and a half frames: the first is delivered, the context is kept */
    size_t n1 = text(buf, "one");
    size_t n2 = text(buf + n1, "two");
    CHECK_EQ_INT(feed(&pool, &in, buf, n1 + 4, &r), 0);
    CHECK(r.n == 1 && rec_is(&r, 0, PL_WS_TEXT, "one", 3));
    CHECK(in.part != NULL);
    CHECK_EQ_INT(pool.nfree, 0);
    CHECK_EQ_INT(feed(&pool, &in, buf + n1 + 4, n2 - 4, &r), 0);
    CHECK(r.n == 2 && rec_is(&r, 1, PL_WS_TEXT, "two", 3));
    CHECK(in.part == NULL && pool.nfree == 1);
    rec_clear(&r);
    /* both splits together, every split point */
    rec_t want = {0};
    n = text(buf, "first");
    n += text(buf + n, "second");
    want_add(&want, PL_WS_TEXT, "first", 5);
    want_add(&want, PL_WS_TEXT, "second", 6);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
    pl_ws_pool_free(&pool);
}

static void fragmented_with_ping(void)
{
    uint8_t buf[256];
    size_t n = mk(buf, 0, 0, PL_WS_TEXT, 1, "Hel", 3);
    n += mk(buf + n, 1, 0, PL_WS_PING, 1, "p!", 2);
    n += mk(buf + n, 0, 0, 0x0, 1, "lo ", 3);
    n += mk(buf + n, 0, 0, 0x0, 1, "", 0);
    n += mk(buf + n, 1, 0, 0x0, 1, "world", 5);
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    CHECK_EQ_INT(feed(&pool, &in, buf, n, &r), 0);
    CHECK_EQ_INT(r.n, 2);
    CHECK(rec_is(&r, 0, PL_WS_PING, "p!", 2));
    CHECK(rec_is(&r, 1, PL_WS_TEXT, "Hello world", 11));
    CHECK(in.part == NULL);
    rec_clear(&r);
    pl_ws_pool_free(&pool);

    rec_t want = {0};
    want_add(&want, PL_WS_PING, "p!", 2);
    want_add(&want, PL_WS_TEXT, "Hello world", 11);
    check_all_splits(buf, n, &want);
    rec_clear(&want);

    /* binary fragmented, starting with an empty frame */
    n = mk(buf, 0, 0, PL_WS_BINARY, 1, "", 0);
    n += mk(buf + n, 1, 0, 0x0, 1, "xyz", 3);
    want_add(&want, PL_WS_BINARY, "xyz", 3);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
}

static void control_split_across_reads(void)
{
    uint8_t buf[256];
    char payload[126];
    memset(payload, 'c', 125);
    payload[125] = 0;
    rec_t want = {0};
    size_t n = mk(buf, 1, 0, PL_WS_PING, 1, "abcdef", 6);
    want_add(&want, PL_WS_PING, "abcdef", 6);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
    n = mk(buf, 1, 0, PL_WS_PONG, 1, payload, 125); /* the largest control frame */
    want_add(&want, PL_WS_PONG, payload, 125);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
    uint8_t close[5] = {0x03, 0xe8, 'b', 'y', 'e'};
    n = mk(buf, 1, 0, PL_WS_CLOSE, 1, close, 5);
    want_add(&want, PL_WS_CLOSE, close, 5);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
    /* a control frame split in the middle of a fragmented message */
    n = mk(buf, 0, 0, PL_WS_TEXT, 1, "ab", 2);
    n += mk(buf + n, 1, 0, PL_WS_PING, 1, "0123456789", 10);
    n += mk(buf + n, 1, 0, 0x0, 1, "cd", 2);
    want_add(&want, PL_WS_PING, "0123456789", 10);
    want_add(&want, PL_WS_TEXT, "abcd", 4);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
}

static void empty_text(void)
{
    uint8_t buf[16];
    size_t n = text(buf, "");
    CHECK_EQ_INT(n, 6);
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    CHECK_EQ_INT(feed(&pool, &in, buf, n, &r), 0);
    CHECK_EQ_INT(r.n, 1);
    CHECK(r.n == 1 && r.op[0] == PL_WS_TEXT && r.len[0] == 0);
    CHECK(in.part == NULL && pool.nfree == 1);
    rec_clear(&r);
    rec_t want = {0};
    want_add(&want, PL_WS_TEXT, "", 0);
    n += text(buf + n, "");
    want_add(&want, PL_WS_TEXT, "", 0);
    check_all_splits(buf, n, &want);
    rec_clear(&want);
    pl_ws_pool_free(&pool);
}

/* Feed `buf` whole and expect close code `code`, with no message delivered
 * after the first `before` ones; checks that `in` is released. */
static int expect_close(const uint8_t *buf, size_t n, size_t max, int code, int before)
{
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    int rc = pl_ws_feed(&pool, &in, buf, n, max, on_msg, &r);
    int ok = rc == code && r.n == before && in.part == NULL;
    if (!ok) printf("  rc %d (want %d), %d messages (want %d)\n", rc, code, r.n, before);
    rec_clear(&r);
    pl_ws_in_free(&in);
    pl_ws_pool_free(&pool);
    return ok;
}

static void protocol_errors(void)
{
    uint8_t buf[70100];
    size_t n;
    /* unmasked */
    n = mk(buf, 1, 0, PL_WS_TEXT, 0, "hi", 2);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    n = mk(buf, 1, 0, PL_WS_TEXT, 0, "", 0);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    n = mk(buf, 1, 0, PL_WS_PING, 0, "x", 1);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    /* an unmasked frame after a good one: the good one is delivered first */
    n = text(buf, "ok");
    n += mk(buf + n, 1, 0, PL_WS_TEXT, 0, "hi", 2);
    CHECK(expect_close(buf, n, MAX, 1002, 1));
    /* rsv bits (no extension was negotiated) */
    for (unsigned rsv = 1; rsv < 8; rsv++) {
        n = mk(buf, 1, rsv, PL_WS_TEXT, 1, "hi", 2);
        CHECK(expect_close(buf, n, MAX, 1002, 0));
    }
    n = mk(buf, 1, 4, PL_WS_PING, 1, "hi", 2);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    /* continuation without a start */
    n = mk(buf, 1, 0, 0x0, 1, "hi", 2);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    n = mk(buf, 0, 0, 0x0, 1, "hi", 2);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    /* a continuation after a message that was already finished */
    n = text(buf, "done");
    n += mk(buf + n, 1, 0, 0x0, 1, "more", 4);
    CHECK(expect_close(buf, n, MAX, 1002, 1));
    /* a new text (or binary) while a fragmented one is open */
    n = mk(buf, 0, 0, PL_WS_TEXT, 1, "part", 4);
    n += mk(buf + n, 1, 0, PL_WS_TEXT, 1, "new", 3);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    n = mk(buf, 0, 0, PL_WS_TEXT, 1, "part", 4);
    n += mk(buf + n, 1, 0, PL_WS_BINARY, 1, "new", 3);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    /* reserved opcodes */
    unsigned ops[] = {0x3, 0x4, 0x7, 0xb, 0xf};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        n = mk(buf, 1, 0, ops[i], 1, "x", 1);
        CHECK(expect_close(buf, n, MAX, 1002, 0));
    }
    /* control frames must not be fragmented or longer than 125 */
    n = mk(buf, 0, 0, PL_WS_PING, 1, "x", 1);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    char p126[126];
    memset(p126, 'p', sizeof p126);
    n = mk(buf, 1, 0, PL_WS_PING, 1, p126, 126);
    CHECK(expect_close(buf, n, MAX, 1002, 0));
}

/* RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the
 * length". A non-minimal header must not be accepted either, since a
 * frame whose header is longer than the minimal one would also throw off
 * the count of bytes buffered in the context. */
static void non_minimal_length(void)
{
    uint8_t buf[64];
    /* "hi" with a 16-bit length */
    size_t n = 0;
    buf[n++] = 0x81;
    buf[n++] = 0x80 | 126;
    buf[n++] = 0;
    buf[n++] = 2;
    memcpy(buf + n, MASK, 4);
    n += 4;
    buf[n++] = 'h' ^ MASK[0];
    buf[n++] = 'i' ^ MASK[1];
    CHECK(expect_close(buf, n, MAX, 1002, 0));
    /* "hi" with a 64-bit length */
    n = 0;
    buf[n++] = 0x81;
    buf[n++] = 0x80 | 127;
    for (int i = 0; i < 7; i++)
        buf[n++] = 0;
    buf[n++] = 2;
    memcpy(buf + n, MASK, 4);
    n += 4;
    buf[n++] = 'h' ^ MASK[0];
    buf[n++] = 'i' ^ MASK[1];
    CHECK(expect_close(buf, n, MAX, 1002, 0));
}

static void too_large(void)
{
    static uint8_t buf[70100], payload[70000];
    memset(payload, 'z', sizeof payload);
    size_t n;
    /* max exactly is fine, one more is 1009 */
    n = mk(buf, 1, 0, PL_WS_TEXT, 1, payload, 100);
    CHECK(expect_close(buf, n, 100, 0, 1));
    n = mk(buf, 1, 0, PL_WS_TEXT, 1, payload, 101);
    CHECK(expect_close(buf, n, 100, 1009, 0));
    n = mk(buf, 1, 0, PL_WS_BINARY, 1, payload, 101);
    CHECK(expect_close(buf, n, 100, 1009, 0));
    /* 64-bit length */
    n = mk(buf, 1, 0, PL_WS_TEXT, 1, payload, 70000);
    CHECK(expect_close(buf, n, MAX, 1009, 0));
    /* only the header and a few payload bytes arrived: already refused */
    CHECK(expect_close(buf, 20, MAX, 1009, 0));
    /* a fragmented message whose frames are each small enough but not together */
    n = mk(buf, 0, 0, PL_WS_TEXT, 1, payload, 60);
    n += mk(buf + n, 0, 0, 0x0, 1, payload, 40);
    n += mk(buf + n, 1, 0, 0x0, 1, payload, 1);
    CHECK(expect_close(buf, n, 100, 1009, 0));
    n = mk(buf, 0, 0, PL_WS_TEXT, 1, payload, 60);
    n += mk(buf + n, 1, 0, 0x0, 1, payload, 40);
    CHECK(expect_close(buf, n, 100, 0, 1));
}

static void big_frame_in_chunks(void)
{
    /* 70000 bytes with a 64-bit length, fed 1000 bytes at a time */
    static uint8_t buf[70100], payload[70000];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)('A' + i % 50);
    size_t n = mk(buf, 1, 0, PL_WS_BINARY, 1, payload, sizeof payload);
    n += text(buf + n, "after");
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    int rc = 0;
    for (size_t off = 0; off < n; off += 1000) {
        size_t len = n - off < 1000 ? n - off : 1000;
        rc |= pl_ws_feed(&pool, &in, buf + off, len, 100000, on_msg, &r);
    }
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.n, 2);
    CHECK(rec_is(&r, 0, PL_WS_BINARY, payload, sizeof payload));
    CHECK(rec_is(&r, 1, PL_WS_TEXT, "after", 5));
    CHECK(in.part == NULL && pool.nfree == 1);
    rec_clear(&r);
    /* the whole thing in one read (more than wslay's 4 KiB buffer) */
    rc = pl_ws_feed(&pool, &in, buf, n, 100000, on_msg, &r);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.n, 2);
    CHECK(rec_is(&r, 0, PL_WS_BINARY, payload, sizeof payload));
    CHECK(rec_is(&r, 1, PL_WS_TEXT, "after", 5));
    CHECK(in.part == NULL && pool.nfree == 1);
    rec_clear(&r);
    pl_ws_in_free(&in);
    pl_ws_pool_free(&pool);
}

static void callback_stop(void)
{
    uint8_t buf[256];
    size_t n = text(buf, "one");
    n += text(buf + n, "two");
    n += text(buf + n, "three");
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    r.stop_at = 2;
    int rc = feed(&pool, &in, buf, n, &r);
    CHECK_EQ_INT(rc, 0);  /* not a protocol error */
    CHECK_EQ_INT(r.n, 2); /* "three" is not delivered */
    CHECK(rec_is(&r, 1, PL_WS_TEXT, "two", 3));
    CHECK(in.part == NULL);
    rec_clear(&r);
    /* stopping on a control frame in the middle of a fragmented message */
    n = mk(buf, 0, 0, PL_WS_TEXT, 1, "ab", 2);
    n += mk(buf + n, 1, 0, PL_WS_CLOSE, 1, "\x03\xe8", 2);
    n += mk(buf + n, 1, 0, 0x0, 1, "cd", 2);
    r.stop_at = 1;
    rc = feed(&pool, &in, buf, n, &r);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.n, 1);
    CHECK(r.n >= 1 && r.op[0] == PL_WS_CLOSE);
    CHECK(in.part == NULL); /* released */
    rec_clear(&r);
    pl_ws_in_free(&in);
    pl_ws_pool_free(&pool);
}

static void pool_borrow_and_return(void)
{
    uint8_t buf[256];
    size_t n = text(buf, "pooled message");
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t a = {0}, b = {0}, c = {0};
    rec_t r = {0};
    /* a is mid-frame: it keeps a context; none is pooled yet */
    CHECK_EQ_INT(feed(&pool, &a, buf, 7, &r), 0);
    CHECK(a.part != NULL);
    CHECK_EQ_INT(pool.nfree, 0);
    CHECK_EQ_INT(r.n, 0);
    /* b completes a frame: its context goes to the pool */
    CHECK_EQ_INT(feed(&pool, &b, buf, n, &r), 0);
    CHECK(b.part == NULL);
    CHECK_EQ_INT(pool.nfree, 1);
    /* c mid-header borrows the pooled one */
    CHECK_EQ_INT(feed(&pool, &c, buf, 1, &r), 0);
    CHECK(c.part != NULL);
    CHECK_EQ_INT(pool.nfree, 0);
    /* a finishes: its context goes back, and it is a's own (still mid-frame
     * state would have corrupted b's message) */
    CHECK_EQ_INT(feed(&pool, &a, buf + 7, n - 7, &r), 0);
    CHECK(a.part == NULL);
    CHECK_EQ_INT(pool.nfree, 1);
    CHECK_EQ_INT(feed(&pool, &c, buf + 1, n - 1, &r), 0);
    CHECK(c.part == NULL);
    CHECK_EQ_INT(pool.nfree, 2);
    CHECK_EQ_INT(r.n, 3);
    for (int i = 0; i < 3; i++)
        CHECK(rec_is(&r, i, PL_WS_TEXT, "pooled message", 14));
    /* a fragmented message between reads keeps its part (and the partial message) */
    rec_clear(&r);
    n = mk(buf, 0, 0, PL_WS_TEXT, 1, "frag", 4);
    CHECK_EQ_INT(feed(&pool, &a, buf, n, &r), 0);
    CHECK_EQ_INT(r.n, 0);
    CHECK(a.part != NULL);
    n = mk(buf, 1, 0, 0x0, 1, "ment", 4);
    CHECK_EQ_INT(feed(&pool, &a, buf, n, &r), 0);
    CHECK(r.n == 1 && rec_is(&r, 0, PL_WS_TEXT, "fragment", 8));
    CHECK(a.part == NULL);
    rec_clear(&r);
    pl_ws_in_free(&a);
    pl_ws_in_free(&b);
    pl_ws_in_free(&c);
    pl_ws_pool_free(&pool);
    CHECK(pool.nfree == 0 && pool.free == NULL);
}

static void in_free_releases(void)
{
    uint8_t buf[256];
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r = {0};
    /* mid-frame, with a fragmented message and a split control frame buffered */
    size_t n = mk(buf, 0, 0, PL_WS_TEXT, 1, "abc", 3);
    size_t n2 = mk(buf + n, 1, 0, PL_WS_PING, 1, "0123456789", 10);
    CHECK_EQ_INT(feed(&pool, &in, buf, n + n2 - 3, &r), 0);
    CHECK(in.part != NULL);
    pl_ws_in_free(&in);
    CHECK(in.part == NULL);
    CHECK_EQ_INT(pool.nfree, 0); /* freed, not pooled */
    pl_ws_in_free(&in);          /* twice is harmless */
    /* the same pl_ws_in_t is reusable after free */
    n = text(buf, "again");
    CHECK_EQ_INT(feed(&pool, &in, buf, n, &r), 0);
    CHECK(r.n == 1 && rec_is(&r, 0, PL_WS_TEXT, "again", 5));
    rec_clear(&r);
    pl_ws_in_free(&in);
    pl_ws_pool_free(&pool);
}

int main(void)
{
    RUN(accept_key);
    RUN(accept_key_bad);
    RUN(handshake_check);
    RUN(utf8);
    RUN(whole_text_frame);
    RUN(text_every_split);
    RUN(two_frames_one_buffer);
    RUN(fragmented_with_ping);
    RUN(control_split_across_reads);
    RUN(empty_text);
    RUN(protocol_errors);
    RUN(non_minimal_length);
    RUN(too_large);
    RUN(big_frame_in_chunks);
    RUN(callback_stop);
    RUN(pool_borrow_and_return);
    RUN(in_free_releases);
    UNIT_EXIT();
}
