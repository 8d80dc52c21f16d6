/*
 * sock: connection transport; see the header. The generic part (queue,
 * flush, close, sweep) is written against pl_sock_type_t; plain TCP, the
 * type most sockets have, is at the end.
 */
#include "parley/net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

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
/* Events taken from the epoll set per loop wake-up; more stay ready and wake the loop again. */
#define EVENTS_MAX 256
/* Connections accepted per listener wake-up, so that a storm cannot starve the open ones. */
#define ACCEPT_MAX 128
/* Listen backlog (the kernel caps it at net.core.somaxconn). */
#define BACKLOG 4096

/* ---- output queue nodes ---- */

pl_outq_node_t *pl_sock_node_get(pl_sock_ctx_t *ctx)
{
    return pl_slab_take(&ctx->nodes); /* callers set what they use, as malloc's did */
}

void pl_sock_node_put(pl_sock_ctx_t *ctx, pl_outq_node_t *n)
{
    pl_slab_put(&ctx->nodes, n);
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

/* What must stay queued when the rest is dropped: a partly written head, whose remaining bytes
 * keep the stream whole for what follows (a close frame). */
static uint32_t kept_nodes(const pl_sock_t *s)
{
    return s->q_off ? 1 : 0;
}

int pl_sock_peer(const pl_sock_t *s, struct sockaddr_storage *ss)
{
    socklen_t len = sizeof *ss;
    if (s->fd < 0) return UV_ENOTCONN;
    return getpeername(s->fd, (struct sockaddr *)ss, &len) == 0 ? 0 : uv_translate_sys_error(errno);
}

/* ---- the epoll set ---- */

/* Register what the socket wants now: EPOLLIN while reading, EPOLLOUT while waiting to drain.
 * Called where either may have changed; a failure closes the socket. An EPOLLOUT no longer
 * wanted is only removed here, after the flush that follows it, so that a socket which fills
 * again at once costs no system call. */
static void sync_events(pl_sock_t *s)
{
    if (s->fd < 0 || (s->flags & (PL_SOCK_HANDLE_CLOSED | PL_SOCK_EV_GONE))) return;
    uint16_t want = (s->flags & PL_SOCK_READING ? PL_SOCK_EV_IN : 0) |
                    (s->flags & PL_SOCK_WAITING ? PL_SOCK_EV_OUT : 0);
    uint16_t have = s->flags & (PL_SOCK_EV_IN | PL_SOCK_EV_OUT);
    if (want == have) return;
    struct epoll_event e = {.events = (want & PL_SOCK_EV_IN ? EPOLLIN : 0u) |
                                      (want & PL_SOCK_EV_OUT ? EPOLLOUT : 0u),
                            .data.ptr = s};
    if (epoll_ctl(s->ctx->epfd, EPOLL_CTL_MOD, s->fd, &e) != 0) {
        pl_sock_abort(s, uv_strerror(uv_translate_sys_error(errno)));
        return;
    }
    s->flags = (uint16_t)((s->flags & ~(PL_SOCK_EV_IN | PL_SOCK_EV_OUT)) | want);
}

static void set_reading(pl_sock_t *s, int on)
{
    if (on)
        s->flags |= PL_SOCK_READING;
    else
        s->flags &= (uint16_t)~PL_SOCK_READING;
    sync_events(s);
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
    /* Seconds modulo 2^16, odd (0 means "not over"): the soft limit's seconds are at most 3600
     * (config.c) and this runs at every flush and sweep, so the difference never wraps. */
    uint16_t now_s = (uint16_t)((pl_sock_now(s) / 1000) | 1);
    if (!s->over_soft_s) s->over_soft_s = now_s;
    return (uint16_t)(now_s - s->over_soft_s) >= (uint32_t)lim->outbuf_soft_s;
}

/* A slow consumer: what it has not been sent is dropped, the close follows what is. */
static void cut_off(pl_sock_t *s)
{
    const pl_sock_limits_t *lim = &s->ctx->lim;
    char peer[64];
    pl_warn("conn from %s: %zu bytes unread (limits %zu, or %zu for %d s); closing (slow "
            "consumer)",
            pl_sock_peer_str(s, peer, sizeof peer), (size_t)s->q_bytes, lim->max_outbuf,
            lim->outbuf_soft, lim->outbuf_soft_s);
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
    s->close_ms = pl_sock_ms32(pl_sock_now(s));
    s->closing_next = s->ctx->closing;
    s->ctx->closing = s;
}

static void close_handle(pl_sock_t *s);

void pl_sock_abort(pl_sock_t *s, const char *why)
{
    /* Not logged here: the layer above logs an opened socket's close (with `why` as the
     * reason), a type logs why a socket never opened. */
    s->flags |= PL_SOCK_ABORT;
    if (s->flags & PL_SOCK_CLOSING) {
        /* Failed while writing its last bytes (the peer reset or hung up): nothing more can
         * be sent, so the descriptor goes now rather than at the sweep after CLOSE_GRACE_MS. */
        drop_queue(s, 0);
        close_handle(s);
        return;
    }
    pl_sock_close(s, 0, why);
}

static void free_sock(pl_sock_t *s)
{
    if (s->flags & PL_SOCK_OPENED) s->ctx->h->on_free(s);
    pl_slab_put(&s->ctx->blocks, s);
}

/* A closed socket's end, at the end of the turn that closed it: nothing of this turn (an
 * epoll event already taken, a caller up the stack) can still be using it. */
static void finish_gone(pl_sock_t *s)
{
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

/* Close the descriptor (which leaves the epoll set with it) and move the socket from the
 * context's sockets to the ones finished at the end of this turn. */
static void close_handle(pl_sock_t *s)
{
    if (s->flags & PL_SOCK_HANDLE_CLOSED) return;
    pl_sock_ctx_t *ctx = s->ctx;
    s->flags |= PL_SOCK_HANDLE_CLOSED;
    if (s->fd >= 0 && close(s->fd) != 0) pl_debug("close: %s", strerror(errno));
    s->fd = -1;
    if (s->prev)
        s->prev->next = s->next;
    else
        ctx->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    atomic_fetch_sub_explicit(&ctx->nsocks, 1, memory_order_relaxed);
    s->prev = NULL;
    s->next = ctx->gone;
    ctx->gone = s;
}

/* End of turn: the close requested during it takes effect. */
static void begin_close(pl_sock_t *s)
{
    set_reading(s, 0);
    if (s->flags & PL_SOCK_OPENED) s->ctx->h->on_closing(s);
    if (s->flags & PL_SOCK_ABORT) {
        drop_queue(s, 0);
        close_handle(s);
        return;
    }
    s->flags |= PL_SOCK_CLOSING;
    mark_dirty(s);
}

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
    if (s->fd < 0 || shutdown(s->fd, SHUT_WR) != 0) {
        close_handle(s);
        return;
    }
    set_reading(s, 1); /* the socket read (on_io) discards what comes, to the EOF */
}

/* ---- writing ---- */

/*
 * Write to a TCP socket's descriptor: the bytes taken (0 when it is full), or a negative libuv
 * error. MSG_NOSIGNAL: a peer gone is an error, not SIGPIPE.
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

ssize_t pl_sock__write_fd(pl_sock_t *s, const uv_buf_t *iov, unsigned n)
{
    return s->fd < 0 ? UV_EBADF : fd_write(s->fd, iov, n);
}

/* The socket is full: what is left (queued, or held by the type) is written when it drains
 * (on_io: EPOLLOUT makes it dirty again). */
static void wait_writable(pl_sock_t *s)
{
    if (s->fd < 0) {
        pl_sock_abort(s, "full, and no descriptor to wait on");
        return;
    }
    s->flags |= PL_SOCK_WAITING;
    sync_events(s);
}

/*
 * Write what is queued, as long as the socket takes all of it (keeping a catch-up topped up);
 * the rest stays queued until the socket drains. Whatever stays unread is judged against the
 * slow-consumer limits.
 */
static void flush_out(pl_sock_t *s)
{
    const pl_sock_type_t *t = s->type;
    uv_buf_t iov[IOV_MAX_FRAMES];
    uint32_t n = 0;
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
        if (full) break;
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
            wait_writable(s);
            return;
        }
        if (s->flags & PL_SOCK_CLOSING) linger(s);
        return;
    }
    if (!(s->flags & PL_SOCK_CLOSE_QUEUED) && over_limit(s)) {
        cut_off(s); /* the close comes back here at the end of this turn */
        return;
    }
    wait_writable(s);
}

static void flush(pl_sock_t *s)
{
    if ((s->flags & (PL_SOCK_WAITING | PL_SOCK_HANDLE_CLOSED))) return;
    flush_out(s);
    sync_events(s); /* drops an EPOLLOUT no longer needed */
}

/* The context's end-of-turn hook: closes, then every dirty socket, then the sockets closed
 * (whose on_free may queue output to others: the loop goes round until all is done). */
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
        } else if ((s = ctx->gone)) {
            ctx->gone = s->next;
            finish_gone(s);
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

/* One read: what it brings is processed at once, so the loop's one buffer serves all. One per
 * wake-up keeps the sockets fair; the epoll set is level-triggered, so more wakes the loop
 * again. A lingering socket's bytes are discarded until the peer's EOF ends it. */
static void sock_read(pl_sock_t *s)
{
    ssize_t n;
    do
        n = read(s->fd, s->ctx->rbuf, sizeof s->ctx->rbuf);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (pl_sock_open(s)) s->type->read(s, s->ctx->rbuf, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (s->flags & PL_SOCK_LINGER)
        close_handle(s);
    else
        pl_sock_abort(s, n == 0 ? "peer closed" : uv_strerror(uv_translate_sys_error(errno)));
}

/* One socket's epoll event. */
static void on_io(pl_sock_t *s, uint32_t ev)
{
    if (s->flags & PL_SOCK_HANDLE_CLOSED) return; /* closed earlier in this batch */
    if ((ev & EPOLLOUT) && (s->flags & PL_SOCK_WAITING)) {
        s->flags &= (uint16_t)~PL_SOCK_WAITING;
        mark_dirty(s); /* more to write, a refill, or the close to finish */
    }
    if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    if (s->flags & PL_SOCK_READING) {
        sock_read(s); /* an error or hang-up shows there */
        return;
    }
    if (ev & (EPOLLERR | EPOLLHUP)) {
        /* Reported even while reading is paused: the set would keep waking the loop until the
         * close at the end of the turn, so the socket leaves it now. */
        if (epoll_ctl(s->ctx->epfd, EPOLL_CTL_DEL, s->fd, NULL) == 0) s->flags |= PL_SOCK_EV_GONE;
        s->flags &= (uint16_t)~PL_SOCK_WAITING;
        pl_sock_abort(s, ev & EPOLLERR ? "connection error" : "peer hung up");
    }
}

static void io_cb(uv_poll_t *h, int status, int events)
{
    pl_sock_ctx_t *ctx = h->data;
    if (status < 0) {
        pl_error("socket epoll set: %s", uv_strerror(status));
        return;
    }
    struct epoll_event ev[EVENTS_MAX];
    int n;
    do
        n = epoll_wait(ctx->epfd, ev, EVENTS_MAX, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) pl_error("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++)
        on_io(ev[i].data.ptr, ev[i].events);
}

void pl_sock_pause(pl_sock_t *s)
{
    set_reading(s, 0);
}

int pl_sock_resume(pl_sock_t *s)
{
    if (s->flags & PL_SOCK_CLOSE_QUEUED) return 0;
    set_reading(s, 1);
    return (s->flags & PL_SOCK_ABORT) ? UV_EIO : 0;
}

/* ---- accepting ---- */

/* A new socket on `ctx` for `fd` (-1: none), linked and counted, in the epoll set and reading;
 * NULL (logged) on failure. */
static pl_sock_t *sock_new(pl_sock_ctx_t *ctx, const pl_sock_type_t *type, int fd)
{
    pl_sock_t *s = pl_slab_get(&ctx->blocks);
    if (!s) {
        pl_error("accept: out of memory");
        return NULL;
    }
    s->ctx = ctx;
    s->type = type;
    s->fd = fd;
    if (fd >= 0) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = s};
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
            pl_error("accept: epoll_ctl: %s", strerror(errno));
            pl_slab_put(&ctx->blocks, s);
            return NULL;
        }
        s->flags = PL_SOCK_READING | PL_SOCK_EV_IN;
    }
    s->next = ctx->socks;
    if (ctx->socks) ctx->socks->prev = s;
    ctx->socks = s;
    atomic_fetch_add_explicit(&ctx->nsocks, 1, memory_order_relaxed);
    s->created_ms = pl_sock_ms32(pl_sock_now(s));
    return s;
}

/* Out of descriptors: accepting again at once would fail again at once (the listener stays
 * readable), so the listeners wait for the next sweep, as nginx waits 500 ms. */
static void pause_accepting(pl_sock_ctx_t *ctx, int err)
{
    pl_warn("accept: %s; not accepting for a second", strerror(err));
    ctx->accept_paused = 1;
    for (int i = 0; i < ctx->nlisteners; i++)
        if (ctx->lfd[i] >= 0) uv_poll_stop(&ctx->listeners[i]);
}

static void accept_cb(uv_poll_t *listener, int status, int events)
{
    pl_sock_ctx_t *ctx = listener->data;
    int which = (int)(listener - ctx->listeners);
    if (status < 0) {
        pl_warn("accept: %s", uv_strerror(status));
        return;
    }
    for (int k = 0; k < ACCEPT_MAX; k++) {
        int fd = accept4(ctx->lfd[which], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(ctx, errno);
            else
                pl_warn("accept: %s", strerror(errno));
            return;
        }
        /* TCP_NODELAY comes from the listening socket (the server sets it before listening). */
        pl_sock_t *s = sock_new(ctx, ctx->ltype[which], fd);
        if (!s) {
            close(fd);
            return;
        }
        s->listener = (uint8_t)which;
        pl_counter_add(&ctx->stats.accepted, 1);
        if (s->type->accept(s, ctx->larg[which], &ctx->lstate[which]) != 0) close_handle(s);
    }
}

static void resume_accepting(pl_sock_ctx_t *ctx)
{
    ctx->accept_paused = 0;
    for (int i = 0; i < ctx->nlisteners; i++) {
        int rc;
        if (ctx->lfd[i] >= 0 &&
            (rc = uv_poll_start(&ctx->listeners[i], UV_READABLE, accept_cb)) != 0)
            pl_error("listener %d: %s", i, uv_strerror(rc));
    }
}

pl_sock_t *pl_sock_attach(pl_sock_ctx_t *ctx, const pl_sock_type_t *type, void *arg)
{
    pl_sock_t *s = sock_new(ctx, type, -1);
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
    if (ctx->nlisteners == PL_SOCK_LISTENERS) {
        close(fd);
        return UV_ENOSPC;
    }
    int i = ctx->nlisteners;
    uv_poll_t *l = &ctx->listeners[i];
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || listen(fd, BACKLOG) != 0) {
        int rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    int rc = uv_poll_init(ctx->uv, l, fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    l->data = ctx;
    ctx->lfd[i] = fd;
    ctx->ltype[i] = type;
    ctx->larg[i] = arg;
    ctx->nlisteners++;
    if (!ctx->accept_paused && (rc = uv_poll_start(l, UV_READABLE, accept_cb)) != 0)
        return rc; /* the handle and fd are closed with the context */
    return i;
}

void pl_sock_ctx_unlisten(pl_sock_ctx_t *ctx)
{
    for (int i = 0; i < ctx->nlisteners; i++) {
        if (ctx->lfd[i] < 0) continue;
        uv_close((uv_handle_t *)&ctx->listeners[i], NULL); /* stops it: the fd may go now */
        close(ctx->lfd[i]);
        ctx->lfd[i] = -1;
    }
}

/* ---- the sweep ---- */

static void sweep_one(pl_sock_t *s, uint64_t now)
{
    const pl_sock_limits_t *lim = &s->ctx->lim;
    if (s->flags & PL_SOCK_HANDLE_CLOSED) return;
    if (s->flags & PL_SOCK_CLOSE_QUEUED) {
        if (pl_sock_ms_since(now, s->close_ms) > CLOSE_GRACE_MS) {
            drop_queue(s, 0);
            close_handle(s);
        }
        return;
    }
    if (!(s->flags & PL_SOCK_OPENED)) {
        if (pl_sock_ms_since(now, s->created_ms) >= (uint32_t)lim->handshake_s * 1000) {
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
    if (ctx->accept_paused) resume_accepting(ctx);
    for (pl_sock_t *s = ctx->socks, *next; s; s = next) {
        next = s->next; /* a socket closed by its sweep moves to ctx->gone */
        sweep_one(s, now);
    }
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
    if (ctx->sock_size > PL_SLAB_MAX) {
        pl_error("socket context: %zu bytes per socket is more than %d", ctx->sock_size,
                 PL_SLAB_MAX);
        free(ctx);
        return NULL;
    }
    pl_slab_init(&ctx->blocks, ctx->sock_size);
    pl_slab_init(&ctx->nodes, sizeof(pl_outq_node_t));
    ctx->lim = *lim;
    ctx->uv = pl_loop_uv(loop);
    for (int i = 0; i < PL_SOCK_LISTENERS; i++)
        ctx->lfd[i] = -1;
    atomic_init(&ctx->nsocks, 0);
    int rc;
    if ((ctx->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        pl_error("socket context: epoll_create1: %s", strerror(errno));
        free(ctx);
        return NULL;
    }
    if ((rc = uv_poll_init(ctx->uv, &ctx->io, ctx->epfd)) != 0) {
        pl_error("socket context: %s", uv_strerror(rc));
        close(ctx->epfd);
        free(ctx);
        return NULL;
    }
    ctx->io.data = ctx;
    uv_timer_init(ctx->uv, &ctx->sweep); /* cannot fail */
    ctx->sweep.data = ctx;
    if ((rc = uv_poll_start(&ctx->io, UV_READABLE, io_cb)) != 0 ||
        (rc = uv_timer_start(&ctx->sweep, sweep_cb, SWEEP_MS, SWEEP_MS)) != 0 ||
        (rc = pl_loop_hook(loop, turn_hook, ctx)) != 0) {
        pl_error("socket context: %s", uv_strerror(rc));
        uv_close((uv_handle_t *)&ctx->io, NULL);
        uv_close((uv_handle_t *)&ctx->sweep, NULL);
        return NULL; /* the loop is not started: freed with it; epfd leaks with the error */
    }
    return ctx;
}

void pl_sock_ctx_close(pl_sock_ctx_t *ctx)
{
    pl_sock_ctx_unlisten(ctx);
    if (!uv_is_closing((uv_handle_t *)&ctx->sweep)) uv_close((uv_handle_t *)&ctx->sweep, NULL);
    if (!uv_is_closing((uv_handle_t *)&ctx->io)) uv_close((uv_handle_t *)&ctx->io, NULL);
}

void pl_sock_ctx_free(pl_sock_ctx_t *ctx)
{
    if (!ctx) return;
    while (ctx->gone) { /* closed in the loop's last turn */
        pl_sock_t *s = ctx->gone;
        ctx->gone = s->next;
        finish_gone(s);
    }
    if (ctx->epfd >= 0) close(ctx->epfd);
    for (int i = 0; i < ctx->nlisteners; i++)
        if (ctx->lstate[i] && ctx->ltype[i]->loop_free) ctx->ltype[i]->loop_free(ctx->lstate[i]);
    pl_slab_free(&ctx->nodes);
    pl_slab_free(&ctx->blocks);
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
    ssize_t r = n ? pl_sock__write_fd(s, iov, n) : 0;
    if (r < 0) return r;
    *full = (size_t)r < total;
    return r;
}

const pl_sock_type_t pl_sock_tcp = {
    .name = "tcp",
    .accept = tcp_accept,
    .read = tcp_read,
    .write = tcp_write,
};
