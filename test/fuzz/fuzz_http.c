/*
 * fuzz_http: HTTP request parsing (proto/http.c over llhttp) and the checks of a WebSocket
 * upgrade, with arbitrary bytes from a client.
 *
 * Input: one byte choosing how the rest is cut into reads, then the bytes a client sends.
 * Each request is handled as proto/conn.c handles it: path, query, kept headers, keep-alive,
 * then pl_http_next for a pipelined next one; an upgrade goes through pl_ws_handshake_check
 * (what the connection checks) and pl_api_upgrade_token and pl_jwt_verify (what the
 * application checks), and ends the HTTP phase. Each read is a separate allocation of its
 * exact size, so a read past it is caught.
 *
 * Oracles: the sanitizers; `used` within what was given; kept header values NUL-terminated
 * inside the parser's strings; and the same requests, answers and positions whether the
 * bytes come in one read or in pieces (a digest of each run is compared).
 */
#include <string.h>

#include "fuzz.h"
#include "parley/app/api.h"
#include "parley/base/jwt.h"
#include "parley/proto/http.h"
#include "parley/proto/ws.h"

static const char SECRET[] = "fuzz-secret";

/* What the connection and the application look at once a request is complete. */
static void inspect(const pl_http_t *h, fuzz_digest_t *d, int upgrade)
{
    fuzz_digest_int(d, pl_http_method(h));
    fuzz_digest_int(d, pl_http_keep_alive(h));
    const char *path;
    size_t plen;
    pl_http_path(h, &path, &plen);
    FUZZ_ASSERT(plen <= h->url.len);
    fuzz_digest_add(d, path, plen);
    for (int i = 0; i < PL_H_COUNT; i++) {
        const char *v = pl_http_header(h, i);
        fuzz_digest_int(d, v != NULL);
        if (!v) continue;
        size_t n = strlen(v);
        FUZZ_ASSERT(v >= h->strs.data && v + n <= h->strs.data + h->strs.len);
        fuzz_digest_add(d, v, n);
    }
    size_t qlen = 0;
    const char *q = pl_http_query(h, "token", &qlen);
    if (q) {
        FUZZ_ASSERT(q >= h->url.data && q + qlen <= h->url.data + h->url.len);
        fuzz_digest_add(d, q, qlen);
    }
    fuzz_digest_int(d, (long long)h->body.len);
    fuzz_digest_add(d, h->body.data ? h->body.data : "", h->body.len);
    if (!upgrade) return;

    char accept[PL_WS_ACCEPT_LEN + 1];
    pl_ws_hs_t hs = pl_ws_handshake_check(h, accept);
    fuzz_digest_int(d, hs);
    if (hs == PL_WS_HS_OK) {
        FUZZ_ASSERT(strlen(accept) == PL_WS_ACCEPT_LEN);
        fuzz_digest_add(d, accept, PL_WS_ACCEPT_LEN);
    }
    size_t tlen = 0;
    const char *tok = pl_api_upgrade_token(h, &tlen);
    if (tok) {
        FUZZ_ASSERT(tlen > 0);
        char user[PL_JWT_SUB_MAX + 1];
        int rc = pl_jwt_verify(SECRET, sizeof SECRET - 1, tok, tlen, 1700000000, user);
        fuzz_digest_int(d, rc);
    }
}

/* Feed `data` cut by `cut` as proto/conn.c's feed_http does; returns the run's digest. */
static uint64_t run(const uint8_t *data, size_t size, unsigned cut)
{
    fuzz_digest_t d;
    fuzz_digest_init(&d);
    pl_http_t *h = pl_http_new();
    FUZZ_ASSERT(h);
    size_t off = 0;
    int done = 0;
    while (off < size && !done) {
        size_t len = fuzz_piece(cut, off, size - off);
        char *piece = malloc(len);
        FUZZ_ASSERT(piece);
        memcpy(piece, data + off, len);
        const char *p = piece;
        size_t n = len;
        while (n > 0 && !done) {
            size_t used = 0;
            int status = 0;
            pl_http_result_t r = pl_http_feed(h, p, n, &used, &status);
            FUZZ_ASSERT(used <= n);
            p += used;
            n -= used;
            if (r != PL_HTTP_MORE) fuzz_digest_int(&d, r); /* MOREs count the reads */
            switch (r) {
            case PL_HTTP_MORE:
                FUZZ_ASSERT(n == 0);
                break;
            case PL_HTTP_ERROR:
                FUZZ_ASSERT(status == 400 || status == 413 || status == 431);
                fuzz_digest_int(&d, status);
                done = 1;
                break;
            case PL_HTTP_REQUEST:
                /* Where in the stream the request ended, whatever the reads. */
                fuzz_digest_int(&d, (long long)(off + (size_t)(p - piece)));
                inspect(h, &d, 0);
                pl_http_next(h);
                break;
            case PL_HTTP_UPGRADE:
                fuzz_digest_int(&d, (long long)(off + (size_t)(p - piece)));
                inspect(h, &d, 1);
                done = 1; /* the rest is WebSocket, fuzz_ws's business */
                break;
            }
        }
        free(piece);
        off += len;
    }
    pl_http_free(h);
    return d.h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned cut = data[0] % 17; /* reads of up to 16 bytes, or (0) all at once */
    uint64_t whole = run(data + 1, size - 1, 0);
    if (cut) FUZZ_ASSERT(run(data + 1, size - 1, cut) == whole);
    return 0;
}
