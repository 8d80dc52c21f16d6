/*
 * conn: the HTTP and WebSocket phases of a connection; see the header. The
 * transport (net/sock.h) calls in through sock_handlers; the application is
 * called through its pl_conn_app_t.
 */
#include "parley/proto/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/base/buf.h"
#include "parley/base/log.h"

static pl_conn_ctx_t *cctx(const pl_conn_t *c)
{
    return c->sock.ctx->ud;
}

void pl_conn_send_text(pl_conn_t *c, const char *p, size_t n)
{
    pl_frame_t *f = pl_frame_text(p, n);
    if (!f) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    pl_conn_send(c, f);
    pl_frame_unref(f);
}

void pl_conn_close(pl_conn_t *c, uint16_t code, const char *reason)
{
    pl_sock_close(&c->sock, c->phase == PL_CONN_WS ? code : 0, reason);
}

void pl_conn_abort(pl_conn_t *c, const char *why)
{
    pl_sock_abort(&c->sock, why);
}

void pl_conn_respond(pl_conn_t *c, int status, const char *content_type, const char *body,
                     size_t len, int keep_alive)
{
    pl_buf_t out = {0};
    pl_http_respond(&out, status, content_type, body ? body : "", len, keep_alive);
    if (!out.data) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    pl_sock_send_bytes(&c->sock, out.data, out.len);
    pl_buf_free(&out);
}

void pl_conn_http_error(pl_conn_t *c, int status, const char *code, const char *msg, int keep_alive)
{
    pl_buf_t b = {0};
    pl_buf_adds(&b, "{\"error\":");
    pl_buf_json_str(&b, code, strlen(code));
    pl_buf_adds(&b, ",\"message\":");
    pl_buf_json_str(&b, msg, strlen(msg));
    pl_buf_adds(&b, "}");
    pl_conn_respond(c, status, "application/json", b.data, b.len, keep_alive);
    pl_buf_free(&b);
}

/* ---- WebSocket phase ---- */

/* A complete message from the client (wslay reassembled it). Returns 1 to stop reading. */
static int on_ws_msg(void *ud, unsigned opcode, const uint8_t *p, size_t len)
{
    pl_conn_t *c = ud;
    switch (opcode) {
    case PL_WS_TEXT:
        if (!pl_utf8_valid(p, len)) {
            pl_conn_close(c, 1007, "invalid UTF-8");
            return 1;
        }
        cctx(c)->app->on_message(c, p, len, 0);
        break;
    case PL_WS_BINARY:
        cctx(c)->app->on_message(c, p, len, 1);
        break;
    case PL_WS_PING: {
        pl_frame_t *f = pl_frame_ws(PL_WS_PONG, p, len);
        if (f) {
            pl_conn_send(c, f);
            pl_frame_unref(f);
        }
        break;
    }
    case PL_WS_PONG:
        break;
    case PL_WS_CLOSE: {
        /* Echo the client's code (RFC 6455 5.5.1); 1005 means it sent none. */
        uint16_t code = len >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1000;
        if (len == 1 || code < 1000 || code == 1004 || code == 1005 || code == 1006 ||
            (code > 1014 && code < 3000) || code >= 5000)
            code = 1002;
        pl_conn_close(c, code, "");
        return 1;
    }
    }
    return !pl_conn_open(c);
}

static void feed_ws(pl_conn_t *c, const char *p, size_t n)
{
    pl_conn_ctx_t *x = cctx(c);
    int code = pl_ws_feed(&x->ws, &c->in, (const uint8_t *)p, n, x->lim.max_frame, on_ws_msg, c);
    if (code) {
        pl_debug("conn: websocket close %d", code);
        pl_conn_close(c, (uint16_t)code,
                      code == 1009   ? "message too big"
                      : code == 1011 ? "internal error"
                                     : "protocol error");
    }
}

/* ---- HTTP phase ---- */

static void http_reply_raw(pl_conn_t *c, const char *resp)
{
    pl_sock_send_bytes(&c->sock, resp, strlen(resp));
}

/* Check the WebSocket handshake (RFC 6455 4.2.1) before the application sees it. */
static int handshake_ok(pl_conn_t *c)
{
    char accept[PL_WS_ACCEPT_LEN + 1];
    switch (pl_ws_handshake_check(c->http, accept)) {
    case PL_WS_HS_OK:
        return 1;
    case PL_WS_HS_NOT_UPGRADE:
        pl_conn_http_error(c, 400, "bad_request", "expected GET with Upgrade: websocket", 0);
        return 0;
    case PL_WS_HS_VERSION:
        http_reply_raw(c, "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                          "Content-Length: 0\r\nConnection: close\r\n\r\n");
        return 0;
    case PL_WS_HS_KEY:
        break;
    }
    pl_conn_http_error(c, 400, "bad_request", "missing or bad Sec-WebSocket-Key", 0);
    return 0;
}

int pl_conn_upgrade(pl_conn_t *c)
{
    const char *key = pl_http_header(c->http, PL_H_SEC_WEBSOCKET_KEY);
    char accept[PL_WS_ACCEPT_LEN + 1];
    if (!key || pl_ws_accept_key(key, strlen(key), accept) != 0) return -1;
    char resp[160];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    if (pl_sock_send_bytes(&c->sock, resp, (size_t)n) != 0) return -1;
    c->phase = PL_CONN_WS;
    return 0;
}

/* A request was answered: the connection now idles, on the idle clock. */
static void http_served(pl_conn_t *c)
{
    pl_http_next(c->http);
    c->http->served++;
    c->http->mark_ms = pl_sock_now(&c->sock);
}

/* The answer will come later: stop reading, keep the bytes read after the request. */
static void http_wait(pl_conn_t *c, const char *rest, size_t n)
{
    c->flags |= PL_CONN_HTTP_WAIT;
    pl_conn_hold(c);
    pl_sock_pause(&c->sock);
    if (n) pl_buf_add(&c->http->stash, rest, n);
}

static void feed_http(pl_conn_t *c, const char *p, size_t n)
{
    /* An idle connection's first new byte starts the request clock. */
    if (!c->http->in_request) c->http->mark_ms = pl_sock_now(&c->sock);
    while (n > 0 && pl_conn_open(c)) {
        size_t used = 0;
        int status = 400;
        pl_http_result_t r = pl_http_feed(c->http, p, n, &used, &status);
        p += used;
        n -= used;
        switch (r) {
        case PL_HTTP_MORE:
            return;
        case PL_HTTP_ERROR:
            pl_counter_add(&cctx(c)->http_refused[status == 413   ? PL_CONN_R413
                                                  : status == 431 ? PL_CONN_R431
                                                                  : PL_CONN_R400],
                           1);
            pl_conn_http_error(c, status,
                               status == 413   ? "body_too_large"
                               : status == 431 ? "headers_too_large"
                                               : "bad_request",
                               status == 413 ? "request body too large (PARLEY_HTTP_MAX_BODY)"
                               : status == 431
                                   ? "request headers too large (PARLEY_HTTP_MAX_HEADER)"
                                   : "malformed HTTP request",
                               0);
            pl_conn_close(c, 0, NULL);
            return;
        case PL_HTTP_REQUEST: {
            int r2 = cctx(c)->app->on_request(c);
            if (r2 == PL_CONN_REQ_ASYNC) {
                http_wait(c, p, n);
                return;
            }
            if (r2 == PL_CONN_REQ_KEEP)
                http_served(c);
            else
                pl_conn_close(c, 0, NULL);
            break;
        }
        case PL_HTTP_UPGRADE:
            if (handshake_ok(c)) cctx(c)->app->on_upgrade(c);
            if (c->phase != PL_CONN_WS) {
                pl_conn_close(c, 0, NULL); /* refused: the answer says why */
                return;
            }
            pl_http_free(c->http);
            c->http = NULL;
            c->flags |= PL_CONN_WS_IN;
            if (n) feed_ws(c, p, n);
            return;
        }
    }
}

void pl_conn_http_resume(pl_conn_t *c, int keep_alive)
{
    c->flags &= (uint8_t)~PL_CONN_HTTP_WAIT;
    if (pl_conn_open(c)) {
        if (!keep_alive) {
            pl_conn_close(c, 0, NULL);
        } else {
            http_served(c);
            c->last_rx_ms = pl_sock_ms32(pl_sock_now(&c->sock));
            if (pl_sock_resume(&c->sock) == 0 && c->http->stash.len) {
                /* Pipelined requests read before the answer was ready. */
                pl_buf_t rest = c->http->stash;
                memset(&c->http->stash, 0, sizeof rest);
                feed_http(c, rest.data, rest.len);
                pl_buf_free(&rest);
            }
        }
    }
    pl_conn_release(c);
}

/* ---- the transport's handlers ---- */

static void on_open(pl_sock_t *s)
{
    pl_conn_t *c = (pl_conn_t *)s;
    c->last_rx_ms = c->last_ping_ms = s->created_ms;
    if (!(c->http = pl_http_new())) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    c->http->mark_ms = pl_sock_now(s); /* the first request's clock */
    if (cctx(c)->lim.http_max_head) c->http->max_head = cctx(c)->lim.http_max_head;
    if (cctx(c)->lim.http_max_body) c->http->max_body = cctx(c)->lim.http_max_body;
    if (pl_log_enabled(PL_LOG_DEBUG)) {
        char peer[64];
        pl_debug("conn from %s: accepted", pl_sock_peer_str(s, peer, sizeof peer));
    }
}

static void on_data(pl_sock_t *s, char *p, size_t n)
{
    pl_conn_t *c = (pl_conn_t *)s;
    c->last_rx_ms = pl_sock_ms32(pl_sock_now(s));
    if (c->phase == PL_CONN_HTTP)
        feed_http(c, p, n);
    else
        feed_ws(c, p, n);
}

static void on_closing(pl_sock_t *s)
{
    pl_conn_t *c = (pl_conn_t *)s;
    if (pl_log_enabled(PL_LOG_DEBUG)) {
        char peer[64];
        pl_debug("conn %s from %s: closing (%s%s%u, %s)", cctx(c)->app->label(c),
                 pl_sock_peer_str(s, peer, sizeof peer),
                 c->phase == PL_CONN_WS ? "websocket" : "http", s->close_code ? " close code " : "",
                 s->close_code,
                 s->close_reason && *s->close_reason ? s->close_reason : "closed by the client");
    }
    if (c->phase != PL_CONN_WS) return;
    cctx(c)->app->on_close(c);
    if (s->close_code && !(s->flags & PL_SOCK_ABORT)) {
        pl_frame_t *f = pl_frame_close(s->close_code, s->close_reason);
        if (f) {
            pl_sock_send_last(s, f); /* after what the application queued */
            pl_frame_unref(f);
        }
    }
}

static void on_free(pl_sock_t *s)
{
    pl_conn_t *c = (pl_conn_t *)s;
    cctx(c)->app->on_free(c);
    if (c->flags & PL_CONN_WS_IN) {
        pl_ws_in_free(&c->in);
    } else {
        pl_http_free(c->http);
        c->http = NULL;
    }
}

static void on_drain(pl_sock_t *s)
{
    cctx((pl_conn_t *)s)->app->on_drain((pl_conn_t *)s);
}

/* HTTP timeouts: a request must arrive whole within http_request_s of its first byte (a new
 * connection's first request, of the accept); between requests a keep-alive connection may
 * idle for http_idle_s, which must outlast the pools of proxies in front. */
static void tick_http(pl_conn_t *c, uint64_t now)
{
    const pl_conn_limits_t *lim = &cctx(c)->lim;
    pl_http_t *h = c->http;
    if ((c->flags & PL_CONN_HTTP_WAIT) || !h) return; /* the answer is being prepared */
    if (h->in_request || !h->served) {
        if (now - h->mark_ms >= (uint64_t)lim->http_request_s * 1000) {
            pl_counter_add(&cctx(c)->http_refused[PL_CONN_R408], 1);
            pl_conn_http_error(c, 408, "request_timeout", "the request did not arrive in time", 0);
            pl_conn_close(c, 0, "http request timeout");
        }
    } else if (now - h->mark_ms >= (uint64_t)lim->http_idle_s * 1000) {
        pl_conn_close(c, 0, "http idle");
    }
}

static void on_tick(pl_sock_t *s, uint64_t now)
{
    pl_conn_t *c = (pl_conn_t *)s;
    if (c->phase == PL_CONN_HTTP) {
        tick_http(c, now);
        return;
    }
    const pl_conn_limits_t *lim = &cctx(c)->lim;
    uint64_t idle = pl_sock_ms_since(now, c->last_rx_ms);
    if (idle >= (uint64_t)lim->idle_s * 1000) {
        pl_conn_close(c, 1001, "idle timeout");
        return;
    }
    if (idle >= (uint64_t)lim->ping_s * 1000 &&
        pl_sock_ms_since(now, c->last_ping_ms) >= (uint64_t)lim->ping_s * 1000) {
        pl_frame_t *f = pl_frame_ws(PL_WS_PING, NULL, 0);
        if (f) {
            pl_conn_send(c, f);
            pl_frame_unref(f);
        }
        c->last_ping_ms = pl_sock_ms32(now);
    }
    cctx(c)->app->on_tick(c, now);
}

static const pl_sock_handlers_t sock_handlers = {
    .on_open = on_open,
    .on_data = on_data,
    .on_closing = on_closing,
    .on_free = on_free,
    .on_drain = on_drain,
    .on_tick = on_tick,
};

pl_conn_ctx_t *pl_conn_ctx_new(pl_loop_t *loop, const pl_conn_app_t *app, void *app_ud,
                               const pl_conn_limits_t *lim, const pl_sock_limits_t *slim)
{
    pl_conn_ctx_t *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->app = app;
    x->app_ud = app_ud;
    x->lim = *lim;
    pl_ws_pool_init(&x->ws);
    /* A slab slot of its size rounded to 8: every byte here is paid per connection. */
    size_t size = offsetof(pl_conn_t, ext) + app->ext_size;
    if (!(x->sock = pl_sock_ctx_new(loop, &sock_handlers, x, size, slim))) {
        free(x);
        return NULL;
    }
    return x;
}

void pl_conn_ctx_free(pl_conn_ctx_t *x)
{
    if (!x) return;
    pl_ws_pool_free(&x->ws);
    pl_sock_ctx_free(x->sock);
    free(x);
}
