/*
 * conn: connection transport. Output is one ordered queue of shared frames
 * per connection, written by the shard's end-of-turn flush (shard.h) with
 * uv_try_write over up to PL_IOV_MAX iovecs at a time, for as long as the
 * kernel takes it all, then uv_write for the rest, whose completion makes the
 * connection dirty again. Closing is always deferred to that flush so no
 * callback frees what its caller still iterates.
 */
#include "parley/app/conn.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/api.h"
#include "parley/app/chat.h"
#include "parley/base/log.h"
#include "parley/app/server.h"
#include "parley/app/session.h"

/* Frames gathered into one write. */
#define PL_IOV_MAX 64
/* Most bytes a catch-up keeps queued ahead of the socket (pl_conn_refill_mark). */
#define REFILL_MAX (256 * 1024)
/* Seconds a closing connection may take to drain before it is cut. */
#define CLOSE_GRACE_MS 2000

static void mark_dirty(pl_conn_t *c)
{
    if (c->flags & PL_CONN_DIRTY) return;
    c->flags |= PL_CONN_DIRTY;
    c->dirty_next = c->shard->dirty;
    c->shard->dirty = c;
}

static int queue_frame(pl_conn_t *c, pl_frame_t *f)
{
    pl_outq_node_t *n = pl_shard_node_get(c->shard);
    if (!n) return -1;
    n->frame = pl_frame_ref(f);
    pl_outq_append(&c->q_head, &c->q_tail, n);
    c->q_bytes += f->len;
    mark_dirty(c);
    return 0;
}

static void pop_node(pl_conn_t *c)
{
    pl_outq_node_t *n = c->q_head;
    c->q_head = n->next;
    if (!c->q_head) c->q_tail = NULL;
    c->q_bytes -= n->frame->len - c->q_off;
    c->q_off = 0;
    pl_frame_unref(n->frame);
    pl_shard_node_put(c->shard, n);
}

/* Drop queued frames, keeping those a write in flight covers and a partly written head. */
static void drop_queue(pl_conn_t *c, uint32_t keep)
{
    pl_outq_node_t *n = c->q_head, *last = NULL;
    for (uint32_t i = 0; i < keep && n; i++)
        last = n, n = n->next;
    while (n) {
        pl_outq_node_t *next = n->next;
        c->q_bytes -= n->frame->len;
        pl_frame_unref(n->frame);
        pl_shard_node_put(c->shard, n);
        n = next;
    }
    if (last)
        last->next = NULL;
    else
        c->q_head = NULL;
    c->q_tail = last;
}

int pl_conn_peer(const pl_conn_t *c, struct sockaddr_storage *ss)
{
    int len = sizeof *ss;
    return uv_tcp_getpeername(&c->tcp, (struct sockaddr *)ss, &len);
}

/* The peer's address as text ("1.2.3.4:5678"), for log lines. */
static const char *peer_str(const pl_conn_t *c, char *out, size_t n)
{
    struct sockaddr_storage ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (pl_conn_peer(c, &ss) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(out, n, "%s:%d", host, port);
    return out;
}

size_t pl_conn_refill_mark(const pl_conn_t *c)
{
    size_t half_soft = c->shard->srv->cfg.outbuf_soft / 2;
    return half_soft < REFILL_MAX ? half_soft : REFILL_MAX;
}

/* Whether what is queued and unread puts the client over a limit (pl_conn_send's doc). Called
 * once the kernel took what it would; keeps the soft limit's clock. */
static int over_limit(pl_conn_t *c)
{
    const pl_config_t *cfg = &c->shard->srv->cfg;
    if (c->q_bytes > cfg->max_outbuf) return 1;
    if (c->q_bytes <= cfg->outbuf_soft) {
        c->over_soft_s = 0;
        return 0;
    }
    uint32_t now_s = (uint32_t)(uv_now(&c->shard->loop) / 1000) | 1; /* 0 means "not over" */
    if (!c->over_soft_s) c->over_soft_s = now_s;
    return now_s - c->over_soft_s >= (uint32_t)cfg->outbuf_soft_s;
}

/* A slow consumer: what it has not been sent is dropped, the close frame follows what is. */
static void cut_off(pl_conn_t *c)
{
    const pl_config_t *cfg = &c->shard->srv->cfg;
    char peer[64];
    pl_warn("conn %s from %s: %zu bytes unread (limits %zu, or %zu for %d s); closing 4008 (slow "
            "consumer)",
            c->user ? c->user : "-", peer_str(c, peer, sizeof peer), c->q_bytes, cfg->max_outbuf,
            cfg->outbuf_soft, cfg->outbuf_soft_s);
    pl_conn_close(c, 4008, "slow consumer");
    drop_queue(c, c->wreq ? c->w_nodes : (c->q_off ? 1 : 0));
}

int pl_conn_send(pl_conn_t *c, pl_frame_t *f)
{
    if (!pl_conn_open(c)) return -1;
    if (queue_frame(c, f) != 0) {
        pl_conn_abort(c, "out of memory");
        return -1;
    }
    /* A write is waiting for the socket to drain: everything queued is unread, and the hard
     * limit bounds the memory a stalled client holds. Otherwise the end-of-turn flush judges. */
    if (c->wreq && c->q_bytes > c->shard->srv->cfg.max_outbuf) {
        cut_off(c);
        return -1;
    }
    return 0;
}

void pl_conn_send_json(pl_conn_t *c, const pl_buf_t *b)
{
    pl_frame_t *f = pl_frame_text(b->data, b->len);
    if (!f) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    pl_conn_send(c, f);
    pl_frame_unref(f);
}

void pl_conn_close(pl_conn_t *c, uint16_t code, const char *reason)
{
    if (c->flags & PL_CONN_CLOSE_QUEUED) return;
    c->flags |= PL_CONN_CLOSE_QUEUED;
    c->close_code = c->phase == PL_CONN_WS ? code : 0;
    c->close_reason = reason;
    c->close_ms = uv_now(&c->shard->loop);
    c->closing_next = c->shard->closing;
    c->shard->closing = c;
}

void pl_conn_abort(pl_conn_t *c, const char *why)
{
    pl_debug("conn %s: aborting: %s", c->user ? c->user : "-", why);
    c->flags |= PL_CONN_ABORT;
    pl_conn_close(c, 0, why);
}

static void free_conn(pl_conn_t *c)
{
    free(c->user);
    free(c);
}

static void on_close(uv_handle_t *h)
{
    pl_conn_t *c = h->data;
    pl_shard_t *s = c->shard;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&s->nconns, 1, memory_order_relaxed);
    while (c->q_head)
        pop_node(c);
    pl_http_free(c->http);
    c->http = NULL;
    pl_ws_in_free(&c->in);
    c->flags |= PL_CONN_GONE;
    if (c->replies_pending == 0) free_conn(c);
}

void pl_conn_reply_done(pl_conn_t *c)
{
    if (--c->replies_pending == 0 && (c->flags & PL_CONN_GONE)) free_conn(c);
}

static void close_handle(pl_conn_t *c)
{
    if (c->flags & PL_CONN_HANDLE_CLOSED) return;
    c->flags |= PL_CONN_HANDLE_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* Check phase: the close requested during this iteration takes effect. */
static void begin_close(pl_conn_t *c)
{
    if (pl_log_enabled(PL_LOG_DEBUG)) {
        char peer[64];
        pl_debug("conn %s from %s: closing (%s%s%u, %s)", c->user ? c->user : "-",
                 peer_str(c, peer, sizeof peer), c->phase == PL_CONN_WS ? "websocket" : "http",
                 c->close_code ? " close code " : "", c->close_code,
                 c->close_reason && *c->close_reason ? c->close_reason : "closed by the client");
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->flags & PL_CONN_AUTHED) pl_session_leave_all(c);
    if (c->flags & PL_CONN_ABORT) {
        /* uv_close cancels a write in flight; its callback releases what it covered. */
        drop_queue(c, c->wreq ? c->w_nodes : 0);
        close_handle(c);
        return;
    }
    c->flags |= PL_CONN_CLOSING;
    if (c->close_code) {
        pl_frame_t *f = pl_frame_close(c->close_code, c->close_reason);
        if (f) {
            queue_frame(c, f);
            pl_frame_unref(f);
        }
    }
    if (!c->q_head && !c->wreq)
        close_handle(c);
    else
        mark_dirty(c);
}

static void write_cb(uv_write_t *req, int status)
{
    pl_conn_t *c = req->data;
    uint32_t n = c->w_nodes;
    free(req);
    c->wreq = NULL;
    c->w_nodes = 0;
    while (n-- && c->q_head)
        pop_node(c);
    if (c->flags & PL_CONN_HANDLE_CLOSED) return;
    if (status < 0) {
        pl_conn_abort(c, uv_strerror(status));
        return;
    }
    if (c->q_head)
        mark_dirty(c);
    else if (c->flags & PL_CONN_CLOSING)
        close_handle(c);
}

static uint32_t gather(pl_conn_t *c, uv_buf_t *iov, size_t *total)
{
    uint32_t n = 0;
    uint32_t off = c->q_off;
    *total = 0;
    for (pl_outq_node_t *q = c->q_head; q && n < PL_IOV_MAX; q = q->next, off = 0) {
        iov[n] = uv_buf_init((char *)q->frame->data + off, q->frame->len - off);
        *total += iov[n++].len;
    }
    return n;
}

/* The kernel took `left` bytes from the head of the queue. */
static void consumed(pl_conn_t *c, size_t left)
{
    while (left && c->q_head) {
        size_t avail = c->q_head->frame->len - c->q_off;
        if (left < avail) {
            c->q_off += (uint32_t)left;
            c->q_bytes -= left;
            break;
        }
        left -= avail;
        pop_node(c);
    }
}

/*
 * Write what is queued, as long as the kernel takes all of it (keeping a catch-up topped up),
 * then hand the rest to libuv, which writes it as the socket drains and makes the connection
 * dirty again when done. Whatever stays unread is judged against the slow-consumer limits.
 */
static void flush(pl_conn_t *c)
{
    if (c->wreq || (c->flags & PL_CONN_HANDLE_CLOSED)) return;
    uv_buf_t iov[PL_IOV_MAX];
    uint32_t n, done = 0; /* iov[done..n): what the kernel did not take */
    for (;;) {
        if ((c->flags & PL_CONN_REFILL) && c->q_bytes < pl_conn_refill_mark(c))
            pl_session_refill(c);
        size_t total;
        if (!(n = gather(c, iov, &total))) break;
        int r = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
        if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
        if (r < 0) {
            pl_conn_abort(c, uv_strerror(r));
            return;
        }
        consumed(c, (size_t)r);
        if ((size_t)r == total) continue;
        /* The kernel's buffer is full: the rest of this gather goes to uv_write. */
        size_t left = (size_t)r;
        while (left >= iov[done].len)
            left -= iov[done++].len;
        iov[done].base += left;
        iov[done].len -= left;
        break;
    }
    if (!c->q_head) {
        c->over_soft_s = 0;
        if (c->flags & PL_CONN_CLOSING) close_handle(c);
        return;
    }
    if (!(c->flags & PL_CONN_CLOSE_QUEUED) && over_limit(c)) {
        cut_off(c); /* the close frame is queued by the shard's flush, which comes back here */
        return;
    }
    uv_write_t *req = malloc(sizeof *req);
    if (!req) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    req->data = c;
    int rc = uv_write(req, (uv_stream_t *)&c->tcp, iov + done, n - done, write_cb);
    if (rc != 0) {
        free(req);
        pl_conn_abort(c, uv_strerror(rc));
        return;
    }
    c->wreq = req;
    c->w_nodes = n - done;
}

void pl_conn_process_pending(pl_shard_t *s)
{
    for (;;) {
        pl_conn_t *c;
        if ((c = s->closing)) {
            s->closing = c->closing_next;
            begin_close(c);
        } else if ((c = s->dirty)) {
            s->dirty = c->dirty_next;
            c->flags &= (uint16_t)~PL_CONN_DIRTY;
            flush(c);
        } else {
            break;
        }
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void feed_http(pl_conn_t *c, const char *p, size_t n);

/* WebSocket messages from the client. */
static int on_ws_msg(void *ud, unsigned opcode, const uint8_t *p, size_t len)
{
    pl_conn_t *c = ud;
    switch (opcode) {
    case PL_WS_TEXT:
        if (!pl_utf8_valid(p, len)) {
            pl_conn_close(c, 1007, "invalid UTF-8");
            return 1;
        }
        pl_session_on_text(c, p, len);
        break;
    case PL_WS_BINARY:
        pl_session_error(c, PL_ERR_BAD_REQUEST, "binary frames are not supported; send JSON text",
                         NULL, 0);
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
    pl_shard_t *s = c->shard;
    int code =
        pl_ws_feed(&s->ws, &c->in, (const uint8_t *)p, n, s->srv->cfg.max_frame, on_ws_msg, c);
    if (code) {
        pl_debug("conn %s: websocket close %d", c->user ? c->user : "-", code);
        pl_conn_close(c, (uint16_t)code,
                      code == 1009   ? "message too big"
                      : code == 1011 ? "internal error"
                                     : "protocol error");
    }
}

/* A request was answered: the connection now idles, on the idle clock. */
static void http_served(pl_conn_t *c)
{
    pl_http_next(c->http);
    c->http->served++;
    c->http->mark_ms = uv_now(&c->shard->loop);
}

static void feed_http(pl_conn_t *c, const char *p, size_t n)
{
    /* An idle connection's first new byte starts the request clock. */
    if (!c->http->in_request) c->http->mark_ms = uv_now(&c->shard->loop);
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
            pl_api_error(c, status, "bad_request", "malformed HTTP request", 0);
            pl_conn_close(c, 0, NULL);
            return;
        case PL_HTTP_REQUEST: {
            int r2 = pl_api_handle(c);
            if (r2 == PL_API_ASYNC) {
                pl_conn_http_wait(c, p, n);
                return;
            }
            if (r2)
                http_served(c);
            else
                pl_conn_close(c, 0, NULL);
            break;
        }
        case PL_HTTP_UPGRADE:
            if (pl_api_upgrade(c) != 0) {
                pl_conn_close(c, 0, NULL);
                return;
            }
            pl_http_free(c->http);
            c->http = NULL;
            c->phase = PL_CONN_WS;
            if (n) feed_ws(c, p, n);
            return;
        }
    }
}

void pl_conn_http_wait(pl_conn_t *c, const char *rest, size_t n)
{
    c->flags |= PL_CONN_HTTP_WAIT;
    c->replies_pending++;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (n) pl_buf_add(&c->http->stash, rest, n);
}

void pl_conn_http_resume(pl_conn_t *c, int keep_alive)
{
    c->flags &= (uint16_t)~PL_CONN_HTTP_WAIT;
    if (pl_conn_open(c)) {
        if (!keep_alive) {
            pl_conn_close(c, 0, NULL);
        } else {
            http_served(c);
            c->last_rx_ms = uv_now(&c->shard->loop);
            if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
                pl_conn_abort(c, "read_start");
            else if (c->http->stash.len) {
                /* Pipelined requests read before the answer was ready. */
                pl_buf_t rest = c->http->stash;
                memset(&c->http->stash, 0, sizeof rest);
                feed_http(c, rest.data, rest.len);
                pl_buf_free(&rest);
            }
        }
    }
    pl_conn_reply_done(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pl_conn_t *c = h->data;
    *buf = uv_buf_init(c->shard->rbuf, sizeof c->shard->rbuf);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    pl_conn_t *c = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        pl_conn_abort(c, nread == UV_EOF ? "peer closed" : uv_strerror((int)nread));
        return;
    }
    if (!pl_conn_open(c)) return;
    c->last_rx_ms = uv_now(&c->shard->loop);
    if (c->phase == PL_CONN_HTTP)
        feed_http(c, buf->base, (size_t)nread);
    else
        feed_ws(c, buf->base, (size_t)nread);
}

void pl_conn_accept_cb(uv_stream_t *listener, int status)
{
    pl_shard_t *s = listener->data;
    if (status < 0) {
        pl_warn("accept: %s", uv_strerror(status));
        return;
    }
    pl_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        pl_error("accept: out of memory");
        return;
    }
    c->shard = s;
    c->tcp.data = c;
    int rc = uv_tcp_init(&s->loop, &c->tcp);
    if (rc != 0) {
        pl_error("accept: uv_tcp_init: %s", uv_strerror(rc));
        free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    atomic_fetch_add_explicit(&s->nconns, 1, memory_order_relaxed);
    c->created_ms = c->last_rx_ms = c->last_ping_ms = uv_now(&s->loop);
    if ((rc = uv_accept(listener, (uv_stream_t *)&c->tcp)) != 0) {
        pl_warn("accept: %s", uv_strerror(rc));
        close_handle(c);
        return;
    }
    if (!(c->http = pl_http_new())) {
        close_handle(c);
        return;
    }
    c->http->mark_ms = c->created_ms; /* the first request's clock */
    if (pl_log_enabled(PL_LOG_DEBUG)) {
        char peer[64];
        pl_debug("conn from %s: accepted", peer_str(c, peer, sizeof peer));
    }
    /* TCP_NODELAY comes from the listening socket (server.c). */
    if ((rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb)) != 0) {
        pl_warn("read_start: %s", uv_strerror(rc));
        close_handle(c);
    }
}

/* HTTP timeouts: a request must arrive whole within PARLEY_HTTP_REQUEST_TIMEOUT of its first
 * byte (a new connection's first request, of the accept); between requests a keep-alive
 * connection may idle for PARLEY_HTTP_IDLE_TIMEOUT, which must outlast the pools of proxies in
 * front (nginx reuses upstream connections for 60 s by default). */
static void sweep_http(pl_conn_t *c, uint64_t now)
{
    const pl_config_t *cfg = &c->shard->srv->cfg;
    pl_http_t *h = c->http;
    if (c->flags & PL_CONN_HTTP_WAIT) return; /* the answer is being prepared */
    if (h->in_request || !h->served) {
        if (now - h->mark_ms >= (uint64_t)cfg->http_request_timeout * 1000) {
            pl_api_error(c, 408, "request_timeout", "the request did not arrive in time", 0);
            pl_conn_close(c, 0, "http request timeout");
        }
    } else if (now - h->mark_ms >= (uint64_t)cfg->http_idle_timeout * 1000) {
        pl_conn_close(c, 0, "http idle");
    }
}

void pl_conn_sweep(pl_conn_t *c, uint64_t now)
{
    const pl_config_t *cfg = &c->shard->srv->cfg;
    if (c->flags & PL_CONN_HANDLE_CLOSED) return;
    if (c->flags & PL_CONN_CLOSE_QUEUED) {
        if (now - c->close_ms > CLOSE_GRACE_MS) {
            drop_queue(c, c->wreq ? c->w_nodes : 0);
            close_handle(c);
        }
        return;
    }
    /* A client that stopped reading while a write waits: the soft limit's clock runs on. */
    if (c->wreq && over_limit(c)) {
        cut_off(c);
        return;
    }
    uint64_t auth_ms = (uint64_t)cfg->auth_timeout * 1000;
    if (c->phase == PL_CONN_HTTP) {
        sweep_http(c, now);
        return;
    }
    if (!(c->flags & PL_CONN_AUTHED)) {
        if (now - c->created_ms >= auth_ms) pl_conn_close(c, 4001, "authentication timeout");
        return;
    }
    if (c->typing) pl_chat_sweep(c, now);
    uint64_t idle = now - c->last_rx_ms;
    if (idle >= (uint64_t)cfg->idle_timeout * 1000) {
        pl_conn_close(c, 1001, "idle timeout");
    } else if (idle >= (uint64_t)cfg->ping_interval * 1000 &&
               now - c->last_ping_ms >= (uint64_t)cfg->ping_interval * 1000) {
        pl_frame_t *f = pl_frame_ws(PL_WS_PING, NULL, 0);
        if (f) {
            pl_conn_send(c, f);
            pl_frame_unref(f);
        }
        c->last_ping_ms = now;
    }
}
