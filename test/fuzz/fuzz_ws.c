/*
 * fuzz_ws: reading client WebSocket frames (proto/ws.c over wslay's frame parser, with its
 * per-shard context pool) and the UTF-8 check, with arbitrary bytes from a client.
 *
 * Input: a byte choosing how the rest is cut into reads, a byte choosing the largest message
 * (PARLEY_MAX_FRAME: 1024 up to 64 KiB), then the bytes a client sends after the upgrade.
 * Messages are taken as proto/conn.c takes them: a text message must be valid UTF-8, a close
 * frame ends the reading.
 *
 * Oracles: the sanitizers; pl_utf8_valid agrees with a plain byte-by-byte validator; the same
 * messages and close code whether the bytes come in one read or in pieces; and, since the
 * pool hands contexts between connections, another connection sharing the pool gets exactly
 * its own message after every read (a context pooled with bytes still in it would leak them
 * to the next connection that borrows it).
 */
#include <string.h>

#include "fuzz.h"
#include "parley/net/frame.h"
#include "parley/proto/ws.h"

/* RFC 3629, one code point at a time: the reference the fast validator is held to. */
static int utf8_ref(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t need;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i - 1 < need) return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

typedef struct {
    fuzz_digest_t d;
    int stopped;
} rec_t;

static int on_msg(void *ud, unsigned opcode, const uint8_t *p, size_t len)
{
    rec_t *r = ud;
    fuzz_digest_int(&r->d, opcode);
    fuzz_digest_int(&r->d, (long long)len);
    fuzz_digest_add(&r->d, p, len);
    if (opcode == PL_WS_TEXT) {
        int ok = pl_utf8_valid(p, len);
        FUZZ_ASSERT(ok == utf8_ref(p, len));
        if (!ok) return r->stopped = 1; /* conn.c closes with 1007 */
    }
    FUZZ_ASSERT(opcode != PL_WS_CLOSE || len <= 125);
    if (opcode == PL_WS_CLOSE) return r->stopped = 1;
    return 0;
}

/* The other connection: one masked text frame "ok" per read; it must get exactly that. */
static int probe_n;
static int on_probe(void *ud, unsigned opcode, const uint8_t *p, size_t len)
{
    FUZZ_ASSERT(opcode == PL_WS_TEXT && len == 2 && memcmp(p, "ok", 2) == 0);
    probe_n++;
    return 0;
}

static void probe(pl_ws_pool_t *pool)
{
    static const uint8_t frame[] = {0x81, 0x82, 1, 2, 3, 4, 'o' ^ 1, 'k' ^ 2};
    pl_ws_in_t in = {0};
    probe_n = 0;
    FUZZ_ASSERT(pl_ws_feed(pool, &in, frame, sizeof frame, 1024, on_probe, NULL) == 0);
    FUZZ_ASSERT(probe_n == 1 && in.part == NULL);
    pl_ws_in_free(&in);
}

static uint64_t run(const uint8_t *data, size_t size, unsigned cut, size_t max_msg)
{
    pl_ws_pool_t pool;
    pl_ws_pool_init(&pool);
    pl_ws_in_t in = {0};
    rec_t r;
    fuzz_digest_init(&r.d);
    r.stopped = 0;
    int code = 0;
    for (size_t off = 0; off < size && !code && !r.stopped;) {
        size_t len = fuzz_piece(cut, off, size - off);
        uint8_t *piece = malloc(len);
        FUZZ_ASSERT(piece);
        memcpy(piece, data + off, len);
        code = pl_ws_feed(&pool, &in, piece, len, max_msg, on_msg, &r);
        free(piece);
        off += len;
        FUZZ_ASSERT(code == 0 || code == 1002 || code == 1009 || code == 1011);
        if (code || r.stopped) break;
        /* Between whole messages the part (with its context) went back to the pool. */
        FUZZ_ASSERT(in.part != NULL || pool.nfree >= 1);
        if (cut) probe(&pool);
    }
    fuzz_digest_int(&r.d, code);
    pl_ws_in_free(&in);
    pl_ws_pool_free(&pool);
    return r.d.h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    unsigned cut = data[0] % 17;
    size_t max_msg = 1024 + (size_t)data[1] * 253; /* 1024 .. 65539 */
    uint64_t whole = run(data + 2, size - 2, 0, max_msg);
    if (cut) FUZZ_ASSERT(run(data + 2, size - 2, cut, max_msg) == whole);
    return 0;
}
