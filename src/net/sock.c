/*
 * sock: connection transport; see the header. The generic part (queue,
 * flush, close, sweep) is written against pl_sock_type_t; plain TCP, the
 * type most sockets have, is at the end.
 */
#include "parley/net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "parley/base/log.h"

/* libuv promises uv_buf_t is laid out as struct iovec on Unix: queued frames go to sendmsg as
 * they are gathered. */
_Static_assert(sizeof(uv_buf_t) == sizeof(struct iovec) &&
                   offsetof(uv_buf_t, base) == offsetof(struct iovec, iov_base) &&
                   offsetof(uv_buf_t, len) == offsetof(struct iovec, iov_len),
               "uv_buf_t is not a struct iovec");

/* Frames gathered into one write. */
#define IOV_MAX_FRAMES 64
/* Milliseconds a closing socket may take to drain before it is cut. */
#define CLOSE_GRACE_MS 2000
/* Sweep period: timeouts are coarse (seconds), so one timer per context suffices. */
#define SWEEP_MS 1000
/* Output queue nodes kept for reuse after a burst; the rest go back to the heap. */
#define NODES_KEEP 65536

/* ---- the node pool ---- */

pl_outq_node_t *pl_sock_node_get(pl_sock_ctx_t *ctx)
{
    pl_outq_node_t *n = ctx->free_nodes;
    if (n) {
        ctx->free_nodes = n->next;
        ctx->nfree_nodes--;
        return n;
    }
    return malloc(sizeof *n);
}

void pl_sock_node_put(pl_sock_ctx_t *ctx, pl_outq_node_t *n)
{
    if (ctx->nfree_nodes >= NODES_KEEP) {
        free(n);
        return;
    }
    n->next = ctx->free_nodes;
    ctx->free_nodes = n;
    ctx->nfree_nodes++;
}

/* ---- the output queue ---- */

static void mark_dirty(pl_sock_t *s)
{
    if (s->flags & PL_SOCK_DIRTY) return;
    s->flags |= PL_SOCK_DIRTY;
    s->dirty_next = s->ctx->dirty;
    s->ctx->dirty = s;
}

void pl_sock__dirty(pl_sock_t *s)
{
    mark_dirty(s);
}

static int queue_frame(pl_sock_t *s, pl_frame_t *f)
{
    pl_outq_node_t *n = pl_sock_node_get(s->ctx);
    if (!n) return -1;
    n->frame = pl_frame_ref(f);
    pl_outq_append(&s->q_head, &s->q_tail, n);
    s->q_bytes += f->len;
    pl_counter_add(&s->ctx->stats.frames_out, 1);
    pl_counter_add(&s->ctx->stats.bytes_out, f->len);
    mark_dirty(s);
    return 0;
}

static void pop_node(pl_sock_t *s)
{
    pl_outq_node_t *n = s->q_head;
    s->q_head = n->next;
    if (!s->q_head) s->q_tail = NULL;
    s->q_bytes -= n->frame->len - s->q_off;
    s->q_off = 0;
    pl_frame_unref(n->frame);
    pl_sock_node_put(s->ctx, n);
}

/* Drop queued frames, keeping those a write in flight covers and a partly written head. */
static void drop_queue(pl_sock_t *s, uint32_t keep)
{
    pl_outq_node_t *n = s->q_head, *last = NULL;
    for (uint32_t i = 0; i < keep && n; i++)
        last = n, n = n->next;
    while (n) {
        pl_outq_node_t *next = n->next;
        s->q_bytes -= n->frame->len;
        pl_frame_unref(n->frame);
        pl_sock_node_put(s->ctx, n);
        n = next;
    }
    if (last)
        last->next = NULL;
    else
        s->q_head = NULL;
    s->q_tail = last;
}

/* What an in-flight write still needs of the queue. */
static uint32_t kept_nodes(const pl_sock_t *s)
{
    return (s->flags & PL_SOCK_WAITING) ? s->w_nodes : (s->q_off ? 1 : 0);
}

int pl_sock_peer(const pl_sock_t *s, struct sockaddr_storage *ss)
{
    int len = sizeof *ss;
    return uv_tcp_getpeername(&s->tcp, (struct sockaddr *)ss, &len);
}

const char *pl_sock_peer_str(const pl_sock_t *s, char *out, size_t n)
{
    struct sockaddr_storage ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (pl_sock_peer(s, &ss) == 0) {
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

/* Whether what is queued and unread puts the socket over a limit. Called once the kernel took
 * what it would; keeps the soft limit's clock. */
static int over_limit(pl_sock_t *s)
{
    const pl_sock_limits_t *lim = &s->ctx->lim;
    if (s->q_bytes > lim->max_outbuf) return 1;
    if (s->q_bytes <= lim->outbuf_soft) {
        s->over_soft_s = 0;
        return 0;
    }
    uint32_t now_s = (uint32_t)(pl_sock_now(s) / 1000) | 1; /* 0 means "not over" */
    if (!s->over_soft_s) s->over_soft_s = now_s;
    return now_s - s->over_soft_s >= (uint32_t)lim->outbuf_soft_s;
}

/* A slow consumer: what it has not been sent is dropped, the close follows what is. */
static void cut_off(pl_sock_t *s)
{
    const pl_sock_limits_t *lim = &s->ctx->lim;
    char peer[64];
    pl_warn("conn from %s: %zu bytes unread (limits %zu, or %zu for %d s); closing (slow "
            "consumer)",
            pl_sock_peer_str(s, peer, sizeof peer), s->q_bytes, lim->max_outbuf, lim->outbuf_soft,
            lim->outbuf_soft_s);
    pl_counter_add(&s->ctx->stats.slow_consumers, 1);
    pl_sock_close(s, lim->cut_code, "slow consumer");
    drop_queue(s, kept_nodes(s));
}

int pl_sock_send(pl_sock_t *s, pl_frame_t *f)
{
    if (!pl_sock_open(s)) return -1;
    if (queue_frame(s, f) != 0) {
        pl_sock_abort(s, "out of memory");
        return -1;
    }
    /* The socket is waiting to drain: everything queued is unread, and the hard limit bounds
     * the memory a stalled client holds. Otherwise the end-of-turn flush judges. */
    if ((s->flags & PL_SOCK_WAITING) && s->q_bytes > s->ctx->lim.max_outbuf) {
        cut_off(s);
        return -1;
    }
    return 0;
}

int pl_sock_send_last(pl_sock_t *s, pl_frame_t *f)
{
    if (s->flags & (PL_SOCK_ABORT | PL_SOCK_HANDLE_CLOSED)) return -1;
    return queue_frame(s, f);
}

int pl_sock_send_bytes(pl_sock_t *s, const void *p, size_t n)
{
    pl_frame_t *f = pl_frame_raw(p, n);
    if (!f) {
        pl_sock_abort(s, "out of memory");
        return -1;
    }
    int rc = pl_sock_send(s, f);
    pl_frame_unref(f);
    return rc;
}

void pl_sock_want_drain(pl_sock_t *s, int on)
{
    if (on) {
        s->flags |= PL_SOCK_REFILL;
        mark_dirty(s);
    } else {
        s->flags &= (uint16_t)~PL_SOCK_REFILL;
    }
}

/* ---- closing and freeing ---- */

void pl_sock_close(pl_sock_t *s, uint16_t code, const char *reason)
{
    if (s->flags & PL_SOCK_CLOSE_QUEUED) return;
    s->flags |= PL_SOCK_CLOSE_QUEUED;
    s->close_code = code;
    s->close_reason = reason;
    s->close_ms = pl_sock_now(s);
    s->closing_next = s->ctx->closing;
    s->ctx->closing = s;
}

void pl_sock_abort(pl_sock_t *s, const char *why)
{
    /* Not logged here: the layer above logs an opened socket's close (with `why` as the
     * reason), a type logs why a socket never opened. */
    s->flags |= PL_SOCK_ABORT;
    pl_sock_close(s, 0, why);
}

static void free_sock(pl_sock_t *s)
{
    if (s->flags & PL_SOCK_OPENED) s->ctx->h->on_free(s);
    free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    pl_sock_t *s = h->data;
    pl_sock_ctx_t *ctx = s->ctx;
    if (s->prev)
        s->prev->next = s->next;
    else
        ctx->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    atomic_fetch_sub_explicit(&ctx->nsocks, 1, memory_order_relaxed);
    while (s->q_head)
        pop_node(s);
    if (s->type->free) s->type->free(s);
    s->flags |= PL_SOCK_GONE;
    if (s->holds == 0) free_sock(s);
}

void pl_sock_release(pl_sock_t *s)
{
    if (--s->holds == 0 && (s->flags & PL_SOCK_GONE)) free_sock(s);
}

static void close_handle(pl_sock_t *s)
{
    if (s->flags & PL_SOCK_HANDLE_CLOSED) return;
    s->flags |= PL_SOCK_HANDLE_CLOSED;
    uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
}

/* End of turn: the close requested during it takes effect. */
static void begin_close(pl_sock_t *s)
{
    uv_read_stop((uv_stream_t *)&s->tcp);
    if (s->flags & PL_SOCK_OPENED) s->ctx->h->on_closing(s);
    if (s->flags & PL_SOCK_ABORT) {
        /* uv_close cancels a write in flight; its callback releases what it covered. */
        drop_queue(s, (s->flags & PL_SOCK_WAITING) ? s->w_nodes : 0);
        close_handle(s);
        return;
    }
    s->flags |= PL_SOCK_CLOSING;
    mark_dirty(s);
}

/* A lingering socket's input: discarded, until the peer's EOF (or an error) ends it. */
static void linger_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread < 0) close_handle(st->data);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/*
 * Everything is written: send FIN and read, discarding, until the peer's EOF, for at most
 * CLOSE_GRACE_MS from the close (the sweep ends it). Closing at once while the client is still
 * sending (a flood, a frame too large) would answer its bytes with a reset, which can destroy
 * our last bytes (the close frame, an HTTP error) before the client reads them.
 */
static void linger(pl_sock_t *s)
{
    if (s->flags & PL_SOCK_LINGER) return;
    s->flags |= PL_SOCK_LINGER;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&s->tcp, &fd) != 0 || shutdown(fd, SHUT_WR) != 0 ||
        uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, linger_cb) != 0)
        close_handle(s);
}

/* ---- writing ---- */

/*
 * Write to a TCP socket's descriptor: the bytes taken (0 when it is full), or a negative libuv
 * error. What uv_try_write does, without reading the libuv handle (two more cache lines per
 * recipient of a fan-out); valid because nothing else writes while no uv_write is out
 * (PL_SOCK_WAITING: flush does not run). MSG_NOSIGNAL: a peer gone is an error, not SIGPIPE.
 */
static ssize_t fd_write(int fd, const uv_buf_t *iov, unsigned n)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = n};
    ssize_t r;
    do
        r = sendmsg(fd, &m, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r >= 0) return r;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS
               ? 0
               : uv_translate_sys_error(errno);
}

static uint32_t gather(pl_sock_t *s, uv_buf_t *iov, size_t *total)
{
    uint32_t n = 0;
    uint32_t off = s->q_off;
    *total = 0;
    for (pl_outq_node_t *q = s->q_head; q && n < IOV_MAX_FRAMES; q = q->next, off = 0) {
        iov[n] = uv_buf_init((char *)q->frame->data + off, q->frame->len - off);
        *total += iov[n++].len;
    }
    return n;
}

/* The type took `left` bytes from the head of the queue. */
static void consumed(pl_sock_t *s, size_t left)
{
    while (left && s->q_head) {
        size_t avail = s->q_head->frame->len - s->q_off;
        if (left < avail) {
            s->q_off += (uint32_t)left;
            s->q_bytes -= left;
            break;
        }
        left -= avail;
        pop_node(s);
    }
}

/* Hand what the socket did not take to the type, which writes it as the socket drains. */
static void wait_writable(pl_sock_t *s, const uv_buf_t *iov, unsigned n)
{
    uint32_t nodes = 0;
    int rc = s->type->wait(s, iov, n, &nodes);
    if (rc != 0) {
        pl_sock_abort(s, uv_strerror(rc));
        return;
    }
    s->flags |= PL_SOCK_WAITING;
    s->w_nodes = (uint16_t)nodes;
}

/*
 * Write what is queued, as long as the socket takes all of it (keeping a catch-up topped up),
 * then hand the rest to the type, which writes it as the socket drains and makes the socket
 * dirty again when done. Whatever stays unread is judged against the slow-consumer limits.
 */
static void flush(pl_sock_t *s)
{
    if ((s->flags & (PL_SOCK_WAITING | PL_SOCK_HANDLE_CLOSED))) return;
    const pl_sock_type_t *t = s->type;
    uv_buf_t iov[IOV_MAX_FRAMES];
    uint32_t n = 0, done = 0; /* iov[done..n): what the socket did not take */
    int full = 0;
    for (;;) {
        if ((s->flags & PL_SOCK_REFILL) && s->q_bytes < s->ctx->lim.refill_mark)
            s->ctx->h->on_drain(s);
        size_t total;
        if (!(n = gather(s, iov, &total))) break;
        ssize_t r;
        if (t == &pl_sock_tcp) {
            /* Most sockets are plain TCP: written here, with no indirect call per recipient on
             * the fan-out path. */
            r = fd_write(s->fd, iov, n);
            full = r >= 0 && (size_t)r < total;
        } else {
            r = t->write(s, iov, n, &full);
        }
        if (r < 0) {
            pl_sock_abort(s, uv_strerror((int)r));
            return;
        }
        consumed(s, (size_t)r);
        if (!full) continue;
        /* The socket is full: the rest of this gather waits for it to drain. */
        size_t left = (size_t)r;
        while (done < n && left >= iov[done].len)
            left -= iov[done++].len;
        if (done < n) {
            iov[done].base += left;
            iov[done].len -= left;
        }
        break;
    }
    if (!s->q_head) {
        s->over_soft_s = 0;
        if ((s->flags & PL_SOCK_CLOSING) && !(s->flags & PL_SOCK_SHUT)) {
            s->flags |= PL_SOCK_SHUT;
            if (t->shutdown) t->shutdown(s);
        }
        if (t->pending && t->pending(s) && !full && t->write(s, NULL, 0, &full) < 0) {
            pl_sock_abort(s, "write failed");
            return;
        }
        if (t->pending && t->pending(s)) {
            wait_writable(s, NULL, 0);
            return;
        }
        if (s->flags & PL_SOCK_CLOSING) linger(s);
        return;
    }
    if (!(s->flags & PL_SOCK_CLOSE_QUEUED) && over_limit(s)) {
        cut_off(s); /* the close comes back here at the end of this turn */
        return;
    }
    wait_writable(s, iov + done, n - done);
}

void pl_sock__written(pl_sock_t *s, int status)
{
    uint32_t n = s->w_nodes;
    s->flags &= (uint16_t)~PL_SOCK_WAITING;
    s->w_nodes = 0;
    while (n-- && s->q_head)
        pop_node(s);
    if (s->flags & PL_SOCK_HANDLE_CLOSED) return;
    if (status < 0) {
        pl_sock_abort(s, uv_strerror(status));
        return;
    }
    mark_dirty(s); /* more to write, a refill, or the close to finish */
}

/* The context's end-of-turn hook: closes, then every dirty socket. */
static void turn_hook(pl_loop_t *loop, void *arg)
{
    pl_sock_ctx_t *ctx = arg;
    for (;;) {
        pl_sock_t *s;
        if ((s = ctx->closing)) {
            ctx->closing = s->closing_next;
            begin_close(s);
        } else if ((s = ctx->dirty)) {
            ctx->dirty = s->dirty_next;
            s->flags &= (uint16_t)~PL_SOCK_DIRTY;
            flush(s);
        } else {
            break;
        }
    }
}

/* ---- reading ---- */

void pl_sock__opened(pl_sock_t *s)
{
    s->flags |= PL_SOCK_OPENED;
    s->ctx->h->on_open(s);
}

void pl_sock__deliver(pl_sock_t *s, char *p, size_t n)
{
    if (pl_sock_open(s)) s->ctx->h->on_data(s, p, n);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pl_sock_t *s = h->data;
    *buf = uv_buf_init(s->ctx->rbuf, sizeof s->ctx->rbuf);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    pl_sock_t *s = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        pl_sock_abort(s, nread == UV_EOF ? "peer closed" : uv_strerror((int)nread));
        return;
    }
    if (pl_sock_open(s)) s->type->read(s, buf->base, (size_t)nread);
}

void pl_sock_pause(pl_sock_t *s)
{
    uv_read_stop((uv_stream_t *)&s->tcp);
}

int pl_sock_resume(pl_sock_t *s)
{
    int rc = uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
    if (rc != 0) pl_sock_abort(s, "read_start");
    return rc;
}

/* ---- accepting ---- */

/* A new socket on `ctx`, linked and counted, its handle initialised; NULL (logged) on failure. */
static pl_sock_t *sock_new(pl_sock_ctx_t *ctx, const pl_sock_type_t *type)
{
    pl_sock_t *s = calloc(1, ctx->sock_size);
    if (!s) {
        pl_error("accept: out of memory");
        return NULL;
    }
    s->ctx = ctx;
    s->type = type;
    s->fd = -1;
    s->tcp.data = s;
    int rc = uv_tcp_init(pl_loop_uv(ctx->loop), &s->tcp);
    if (rc != 0) {
        pl_error("accept: uv_tcp_init: %s", uv_strerror(rc));
        free(s);
        return NULL;
    }
    s->next = ctx->socks;
    if (ctx->socks) ctx->socks->prev = s;
    ctx->socks = s;
    atomic_fetch_add_explicit(&ctx->nsocks, 1, memory_order_relaxed);
    s->created_ms = pl_sock_now(s);
    return s;
}

static void accept_cb(uv_stream_t *listener, int status)
{
    pl_sock_ctx_t *ctx = listener->data;
    int which = (int)((uv_tcp_t *)listener - ctx->listeners);
    if (status < 0) {
        pl_warn("accept: %s", uv_strerror(status));
        return;
    }
    pl_sock_t *s = sock_new(ctx, ctx->ltype[which]);
    if (!s) return;
    s->listener = (uint8_t)which;
    pl_counter_add(&ctx->stats.accepted, 1);
    int rc;
    uv_os_fd_t fd;
    if ((rc = uv_accept(listener, (uv_stream_t *)&s->tcp)) != 0 ||
        (rc = uv_fileno((uv_handle_t *)&s->tcp, &fd)) != 0) {
        pl_warn("accept: %s", uv_strerror(rc));
        close_handle(s);
        return;
    }
    s->fd = fd;
    if ((rc = s->type->accept(s, ctx->larg[which], &ctx->lstate[which])) != 0) {
        close_handle(s);
        return;
    }
    /* TCP_NODELAY comes from the listening socket (the server sets it before listening). */
    if ((rc = uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb)) != 0) {
        pl_warn("read_start: %s", uv_strerror(rc));
        pl_sock_abort(s, "read_start");
    }
}

pl_sock_t *pl_sock_attach(pl_sock_ctx_t *ctx, const pl_sock_type_t *type, void *arg)
{
    pl_sock_t *s = sock_new(ctx, type);
    void *state = NULL;
    if (s && type->accept(s, arg, &state) != 0) {
        close_handle(s);
        return NULL;
    }
    return s;
}

void pl_sock_feed(pl_sock_t *s, char *p, size_t n)
{
    if (pl_sock_open(s)) s->type->read(s, p, n);
}

int pl_sock_listen(pl_sock_ctx_t *ctx, int fd, const pl_sock_type_t *type, void *arg)
{
    if (ctx->nlisteners == PL_SOCK_LISTENERS) return UV_ENOSPC;
    int i = ctx->nlisteners;
    uv_tcp_t *l = &ctx->listeners[i];
    int rc = uv_tcp_init(pl_loop_uv(ctx->loop), l);
    if (rc != 0) return rc;
    l->data = ctx;
    ctx->ltype[i] = type;
    ctx->larg[i] = arg;
    ctx->nlisteners++;
    if ((rc = uv_tcp_open(l, fd)) != 0 || (rc = uv_listen((uv_stream_t *)l, 4096, accept_cb)) != 0)
        return rc; /* the handle is closed with the context */
    return i;
}

void pl_sock_ctx_unlisten(pl_sock_ctx_t *ctx)
{
    for (int i = 0; i < ctx->nlisteners; i++)
        if (!uv_is_closing((uv_handle_t *)&ctx->listeners[i]))
            uv_close((uv_handle_t *)&ctx->listeners[i], NULL);
}

/* ---- the sweep ---- */

static void sweep_one(pl_sock_t *s, uint64_t now)
{
    const pl_sock_limits_t *lim = &s->ctx->lim;
    if (s->flags & PL_SOCK_HANDLE_CLOSED) return;
    if (s->flags & PL_SOCK_CLOSE_QUEUED) {
        if (now - s->close_ms > CLOSE_GRACE_MS) {
            drop_queue(s, (s->flags & PL_SOCK_WAITING) ? s->w_nodes : 0);
            close_handle(s);
        }
        return;
    }
    if (!(s->flags & PL_SOCK_OPENED)) {
        if (now - s->created_ms >= (uint64_t)lim->handshake_s * 1000) {
            if (pl_log_enabled(PL_LOG_DEBUG)) {
                char peer[64];
                pl_debug("conn from %s: no %s handshake within %d s; closed",
                         pl_sock_peer_str(s, peer, sizeof peer), s->type->name, lim->handshake_s);
            }
            pl_sock_abort(s, "handshake timeout");
        }
        return;
    }
    /* A client that stopped reading while a write waits: the soft limit's clock runs on. */
    if ((s->flags & PL_SOCK_WAITING) && over_limit(s)) {
        cut_off(s);
        return;
    }
    s->ctx->h->on_tick(s, now);
}

static void sweep_cb(uv_timer_t *t)
{
    pl_sock_ctx_t *ctx = t->data;
    uint64_t now = uv_now(t->loop);
    for (pl_sock_t *s = ctx->socks; s; s = s->next)
        sweep_one(s, now);
}

/* ---- the context ---- */

pl_sock_ctx_t *pl_sock_ctx_new(pl_loop_t *loop, const pl_sock_handlers_t *h, void *ud,
                               size_t sock_size, const pl_sock_limits_t *lim)
{
    pl_sock_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->loop = loop;
    ctx->h = h;
    ctx->ud = ud;
    ctx->sock_size = sock_size < sizeof(pl_sock_t) ? sizeof(pl_sock_t) : sock_size;
    ctx->lim = *lim;
    atomic_init(&ctx->nsocks, 0);
    int rc;
    if ((rc = uv_timer_init(pl_loop_uv(loop), &ctx->sweep)) != 0) {
        free(ctx);
        return NULL;
    }
    ctx->sweep.data = ctx;
    if ((rc = uv_timer_start(&ctx->sweep, sweep_cb, SWEEP_MS, SWEEP_MS)) != 0 ||
        (rc = pl_loop_hook(loop, turn_hook, ctx)) != 0) {
        pl_error("socket context: %s", uv_strerror(rc));
        uv_close((uv_handle_t *)&ctx->sweep, NULL);
        return NULL; /* the loop is not started: freed with it */
    }
    return ctx;
}

void pl_sock_ctx_close(pl_sock_ctx_t *ctx)
{
    pl_sock_ctx_unlisten(ctx);
    if (!uv_is_closing((uv_handle_t *)&ctx->sweep)) uv_close((uv_handle_t *)&ctx->sweep, NULL);
}

void pl_sock_ctx_free(pl_sock_ctx_t *ctx)
{
    if (!ctx) return;
    for (int i = 0; i < ctx->nlisteners; i++)
        if (ctx->lstate[i] && ctx->ltype[i]->loop_free) ctx->ltype[i]->loop_free(ctx->lstate[i]);
    while (ctx->free_nodes) {
        pl_outq_node_t *n = ctx->free_nodes;
        ctx->free_nodes = n->next;
        free(n);
    }
    free(ctx);
}

/* ---- plain TCP ---- */

static int tcp_accept(pl_sock_t *s, void *arg, void **loop_state)
{
    pl_sock__opened(s);
    return 0;
}

static void tcp_read(pl_sock_t *s, char *p, size_t n)
{
    pl_sock__deliver(s, p, n);
}

static ssize_t tcp_write(pl_sock_t *s, const uv_buf_t *iov, unsigned n, int *full)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    ssize_t r = n ? fd_write(s->fd, iov, n) : 0;
    if (r < 0) return r;
    *full = (size_t)r < total;
    return r;
}

static void tcp_written(uv_write_t *req, int status)
{
    pl_sock_t *s = req->data;
    free(req);
    s->tstate = NULL;
    pl_sock__written(s, status);
}

/* The queue's own bytes are handed to uv_write: the nodes stay queued until it is done. */
static int tcp_wait(pl_sock_t *s, const uv_buf_t *iov, unsigned n, uint32_t *nodes)
{
    uv_write_t *req = malloc(sizeof *req);
    if (!req) return UV_ENOMEM;
    req->data = s;
    int rc = uv_write(req, (uv_stream_t *)&s->tcp, iov, n, tcp_written);
    if (rc != 0) {
        free(req);
        return rc;
    }
    s->tstate = req;
    *nodes = n;
    return 0;
}

const pl_sock_type_t pl_sock_tcp = {
    .name = "tcp",
    .accept = tcp_accept,
    .read = tcp_read,
    .write = tcp_write,
    .wait = tcp_wait,
};
