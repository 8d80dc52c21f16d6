/* ws: handshake key, UTF-8 check and pooled wslay frame parsing; see the header. */
#include "parley/proto/ws.h"

#include <mbedtls/sha1.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "parley/base/b64.h"
#include "parley/net/frame.h"

/* Idle parts kept per shard; more are freed (each is ~4.3 KB with its wslay context). */
#define POOL_KEEP 64

/* The state of a message being read. A connection holds one only while a frame or a fragmented
 * message is incomplete: one read normally carries whole messages, handed over in place. */
struct pl_ws_part {
    struct wslay_frame_context *ctx;
    uint32_t buffered;  /* bytes given to ctx not yet part of a whole frame */
    uint32_t frame_got; /* payload bytes of the current frame seen so far */
    uint8_t in_frame;   /* a frame's header has been parsed */
    uint8_t msg_opcode; /* opcode of the fragmented message in progress, or 0 */
    pl_buf_t *msg;      /* reassembly of a message split over frames or reads */
    pl_buf_t *ctrl;     /* reassembly of a split control frame */
};

int pl_ws_accept_key(const char *key, size_t len, char out[PL_WS_ACCEPT_LEN + 1])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char raw[16], sha[20], buf[64 + sizeof guid];
    size_t n;
    /* The key must be base64 of 16 bytes: 22 digits and "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=' ||
        pl_b64_decode(key, 22, raw, sizeof raw, &n, PL_B64_STD) != 0 || n != 16)
        return -1;
    memcpy(buf, key, len);
    memcpy(buf + len, guid, sizeof guid - 1);
    if (mbedtls_sha1_ret(buf, len + sizeof guid - 1, sha) != 0) return -1;
    return pl_b64_encode(sha, sizeof sha, out, PL_WS_ACCEPT_LEN + 1, PL_B64_STD) == PL_WS_ACCEPT_LEN
               ? 0
               : -1;
}

pl_ws_hs_t pl_ws_handshake_check(const pl_http_t *h, char accept[PL_WS_ACCEPT_LEN + 1])
{
    const char *upgrade = pl_http_header(h, PL_H_UPGRADE);
    if (pl_http_method(h) != HTTP_GET || !upgrade || strcasecmp(upgrade, "websocket") != 0)
        return PL_WS_HS_NOT_UPGRADE;
    const char *version = pl_http_header(h, PL_H_SEC_WEBSOCKET_VERSION);
    if (!version || strcmp(version, "13") != 0) return PL_WS_HS_VERSION;
    const char *key = pl_http_header(h, PL_H_SEC_WEBSOCKET_KEY);
    if (!key || pl_ws_accept_key(key, strlen(key), accept) != 0) return PL_WS_HS_KEY;
    return PL_WS_HS_OK;
}

int pl_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time. */
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (i + need >= n) return 0; /* truncated sequence */
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += need + 1;
    }
    return 1;
}

static ssize_t recv_cb(uint8_t *buf, size_t len, int flags, void *user_data)
{
    pl_ws_pool_t *pool = user_data;
    if (pool->in_len == 0) return 0; /* wslay maps this to WANT_READ */
    size_t n = len < pool->in_len ? len : pool->in_len;
    memcpy(buf, pool->in, n);
    pool->in += n;
    pool->in_len -= n;
    pool->cur->buffered += (uint32_t)n;
    return (ssize_t)n;
}

static ssize_t send_cb(const uint8_t *data, size_t len, int flags, void *user_data)
{
    return -1; /* the server never sends through wslay: frames are built by frame.c */
}

static int genmask_cb(uint8_t *buf, size_t len, void *user_data)
{
    return -1;
}

void pl_ws_pool_init(pl_ws_pool_t *pool)
{
    memset(pool, 0, sizeof *pool);
}

static void drop(pl_buf_t **b);

static void part_free(pl_ws_part_t *p)
{
    wslay_frame_context_free(p->ctx);
    drop(&p->msg);
    drop(&p->ctrl);
    free(p);
}

void pl_ws_pool_free(pl_ws_pool_t *pool)
{
    for (size_t i = 0; i < pool->nfree; i++)
        part_free(pool->free[i]);
    free(pool->free);
    memset(pool, 0, sizeof *pool);
}

static pl_ws_part_t *pool_get(pl_ws_pool_t *pool)
{
    if (pool->nfree) return pool->free[--pool->nfree];
    static const struct wslay_frame_callbacks cbs = {send_cb, recv_cb, genmask_cb};
    pl_ws_part_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (wslay_frame_context_init(&p->ctx, &cbs, pool) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* Only a clean part comes back: between frames, nothing buffered or reassembled. */
static void pool_put(pl_ws_pool_t *pool, pl_ws_part_t *p)
{
    if (pool->nfree == pool->cap && pool->cap < POOL_KEEP) {
        size_t cap = pool->cap ? pool->cap * 2 : 8;
        void *m = realloc(pool->free, cap * sizeof *pool->free);
        if (m) {
            pool->free = m;
            pool->cap = cap;
        }
    }
    if (pool->nfree < pool->cap)
        pool->free[pool->nfree++] = p;
    else
        part_free(p);
}

static size_t header_len(uint64_t plen, int masked)
{
    return 2 + (plen >= 126 ? (plen > 65535 ? 8 : 2) : 0) + (masked ? 4 : 0);
}

static int append(pl_buf_t **b, const uint8_t *p, size_t n)
{
    if (!*b) {
        *b = calloc(1, sizeof **b);
        if (!*b) return -1;
    }
    pl_buf_add(*b, p, n);
    return 0;
}

static void drop(pl_buf_t **b)
{
    if (*b) {
        pl_buf_free(*b);
        free(*b);
        *b = NULL;
    }
}

/* Validate a frame's header on its first chunk; returns a close code or 0. */
static int check_header(pl_ws_part_t *in, const struct wslay_frame_iocb *io, size_t max_msg)
{
    if (io->rsv) return 1002;
    if (!io->mask) return 1002; /* RFC 6455 5.1: clients must mask */
    switch (io->opcode) {
    case 0x0:
        if (!in->msg_opcode) return 1002;
        break;
    case PL_WS_TEXT:
    case PL_WS_BINARY:
        if (in->msg_opcode) return 1002;
        break;
    case PL_WS_CLOSE:
    case PL_WS_PING:
    case PL_WS_PONG:
        return 0; /* wslay already checked fin and the 125-byte limit */
    default:
        return 1002;
    }
    size_t have = in->msg ? in->msg->len : 0;
    if (io->payload_length > max_msg || have + io->payload_length > max_msg) return 1009;
    return 0;
}

int pl_ws_feed(pl_ws_pool_t *pool, pl_ws_in_t *win, const uint8_t *data, size_t len, size_t max_msg,
               pl_ws_msg_cb cb, void *ud)
{
    if (!win->part && !(win->part = pool_get(pool))) return 1011;
    pl_ws_part_t *in = win->part;
    pool->in = data;
    pool->in_len = len;
    pool->cur = in;

    int rc = 0;
    for (;;) {
        struct wslay_frame_iocb io;
        ssize_t r = wslay_frame_recv(in->ctx, &io);
        if (r == WSLAY_ERR_WANT_READ) break;
        if (r < 0) {
            rc = 1002;
            break;
        }
        if (!in->in_frame) {
            if ((rc = check_header(in, &io, max_msg)) != 0) break;
            in->in_frame = 1;
            if (io.opcode == PL_WS_TEXT || io.opcode == PL_WS_BINARY) in->msg_opcode = io.opcode;
        }
        int ctrl = io.opcode >= PL_WS_CLOSE;
        int whole = io.data_length == io.payload_length;
        in->frame_got += (uint32_t)io.data_length;
        int done = in->frame_got == io.payload_length;

        /* A message in one frame and one chunk is handed over without a copy. */
        int direct = whole && (ctrl || (io.fin && !in->msg));
        if (!direct && append(ctrl ? &in->ctrl : &in->msg, io.data, io.data_length) != 0) {
            rc = 1011;
            break;
        }
        if (!done) continue;

        in->buffered -= (uint32_t)(header_len(io.payload_length, io.mask) + io.payload_length);
        in->frame_got = 0;
        in->in_frame = 0;
        int stop = 0;
        if (ctrl) {
            stop = direct ? cb(ud, io.opcode, io.data, io.data_length)
                          : cb(ud, io.opcode, (uint8_t *)in->ctrl->data, in->ctrl->len);
            drop(&in->ctrl);
        } else if (io.fin) {
            unsigned op = in->msg_opcode;
            in->msg_opcode = 0;
            stop = direct ? cb(ud, op, io.data, io.data_length)
                          : cb(ud, op, (uint8_t *)in->msg->data, in->msg->len);
            drop(&in->msg);
        }
        if (stop) {
            rc = -1;
            break;
        }
    }
    pool->cur = NULL;
    pool->in = NULL;
    pool->in_len = 0;
    if (rc != 0) {
        pl_ws_in_free(win);
        return rc < 0 ? 0 : rc;
    }
    /* Between whole messages with nothing buffered: the part is clean, give it back. */
    if (in->buffered == 0 && !in->in_frame && !in->msg_opcode && !in->msg && !in->ctrl) {
        pool_put(pool, in);
        win->part = NULL;
    }
    return 0;
}

void pl_ws_in_free(pl_ws_in_t *in)
{
    if (in->part) part_free(in->part);
    in->part = NULL;
}
