/*
 * sock: the connection transport of one loop (Redis' connection.h with
 * tls.c under it, uSockets' socket contexts): accepting, reading, an ordered
 * output queue of shared frames written with gathered writes, deferred close,
 * a coarse once-a-second sweep for timeouts. What the bytes mean is decided
 * by the layer above, reached only through the handler table it gives the
 * context (pl_sock_handlers_t); how bytes meet the socket is decided by the
 * socket's type (pl_sock_type_t: plain TCP here, TLS in tls.h), so nothing
 * above this layer knows whether a connection is encrypted.
 *
 * A context does its sockets' I/O itself, as uSockets does: the sockets are
 * registered in the context's own epoll set, which the libuv loop watches as
 * one descriptor (a socket then costs its fd and the bytes below, not a
 * 248-byte uv_tcp_t), and the listeners are libuv poll handles.
 *
 * Per loop turn (loop.h): callbacks only queue output and closes; the
 * context's end-of-turn hook carries out the closes and writes every dirty
 * socket for as long as the kernel takes everything; the rest waits for the
 * socket to drain (EPOLLOUT) while it stays queued. A slow consumer is cut off
 * (pl_sock_handlers_t.on_closing decides what it is told) for what it fails to read: more than the
 * hard limit unread at once, or more than the soft limit for its seconds.
 *
 * Ownership: a context belongs to its loop (pl_sock_ctx_new, freed by
 * pl_sock_ctx_free after the loop ended). A socket is allocated by its
 * context at accept from the context's slab (base/slab.h), `sock_size` bytes
 * aligned to 8 (the layer above's struct, which begins with a pl_sock_t), and
 * freed after its handle closed and every hold
 * (pl_sock_hold: a reply or job that will name it) is released, never inside
 * the callback that decided to close it. Only the loop's thread touches
 * either.
 */
#ifndef PARLEY_NET_SOCK_H
#define PARLEY_NET_SOCK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "parley/base/metric.h"
#include "parley/base/slab.h"
#include "parley/net/frame.h"
#include "parley/net/loop.h"

struct sockaddr_storage;
typedef struct pl_sock pl_sock_t;
typedef struct pl_sock_ctx pl_sock_ctx_t;

/** An output queue entry: one frame reference. Recycled through the context's free list. */
typedef struct pl_outq_node {
    struct pl_outq_node *next;
    pl_frame_t *frame;
    int64_t seq; /**< free for the layer above (a room message's seq) */
} pl_outq_node_t;

/** Append `n` to the list `*head`..`*tail` (both NULL when empty). */
static inline void pl_outq_append(pl_outq_node_t **head, pl_outq_node_t **tail, pl_outq_node_t *n)
{
    n->next = NULL;
    if (*tail)
        (*tail)->next = n;
    else
        *head = n;
    *tail = n;
}

/**
 * How bytes meet the socket. Implementations: pl_sock_tcp (below) and the TLS
 * type (tls.h). Every function runs on the loop's thread.
 */
typedef struct pl_sock_type {
    const char *name;
    int secure; /**< the bytes are encrypted (https, wss) */
    /** Accepted: set up the type's state. 0, or a negative error (the socket is dropped). The
     *  socket is opened to the layer above by the type (pl_sock__opened) when it is ready.
     *  `arg` is the listener's; `*loop_state` the type's own per-loop state (NULL at first). */
    int (*accept)(pl_sock_t *s, void *arg, void **loop_state);
    /** Free the per-loop state (the context is freed). */
    void (*loop_free)(void *loop_state);
    /** Bytes arrived: turn them into plaintext for pl_sock__deliver. */
    void (*read)(pl_sock_t *s, char *p, size_t n);
    /** Take plaintext (n may be 0: write what the type holds). Returns the bytes of iov taken
     *  (written, or held by the type to be written), or a negative libuv error; sets *full when
     *  the socket takes no more now. */
    ssize_t (*write)(pl_sock_t *s, const uv_buf_t *iov, unsigned n, int *full);
    /** 1 if the type holds bytes still to write (TLS records, a close_notify). */
    int (*pending)(const pl_sock_t *s);
    /** Nothing more will be queued: end the stream (TLS: close_notify). */
    void (*shutdown)(pl_sock_t *s);
    /** Free the type's state. */
    void (*free)(pl_sock_t *s);
} pl_sock_type_t;

/** Plain TCP. */
extern const pl_sock_type_t pl_sock_tcp;

/** The layer above, per context. Called on the loop's thread. */
typedef struct pl_sock_handlers {
    /** The socket is ready (accepted; TLS: handshake done). */
    void (*on_open)(pl_sock_t *s);
    /** Plaintext arrived (valid during the call). */
    void (*on_data)(pl_sock_t *s, char *p, size_t n);
    /** The close takes effect (end of turn): queue last bytes, leave everything. Called for
     *  opened sockets only. */
    void (*on_closing)(pl_sock_t *s);
    /** The memory goes: release what the layers above own. Called for opened sockets only. */
    void (*on_free)(pl_sock_t *s);
    /** PL_SOCK_REFILL is set and less than the refill mark is queued: queue more. */
    void (*on_drain)(pl_sock_t *s);
    /** Once a second for an open socket not closing. */
    void (*on_tick)(pl_sock_t *s, uint64_t now);
} pl_sock_handlers_t;

/** Limits a context enforces. */
typedef struct pl_sock_limits {
    size_t max_outbuf;  /**< unread bytes at which a socket is cut off at once */
    size_t outbuf_soft; /**< unread bytes allowed for at most: */
    int outbuf_soft_s;  /**< this many seconds */
    size_t refill_mark; /**< on_drain while less than this is queued */
    int handshake_s;    /**< seconds to become ready (TLS handshake) */
    uint16_t cut_code;  /**< what a slow consumer is closed with (pl_sock_close's code) */
} pl_sock_limits_t;

/** Socket flags. */
enum {
    PL_SOCK_DIRTY = 1 << 0,        /**< on the context's dirty list */
    PL_SOCK_CLOSE_QUEUED = 1 << 1, /**< on the closing list, or past it */
    PL_SOCK_CLOSING = 1 << 2,      /**< close carried out: writing the last bytes */
    PL_SOCK_HANDLE_CLOSED = 1 << 3,
    PL_SOCK_ABORT = 1 << 4,    /**< drop queued output, close at once */
    PL_SOCK_GONE = 1 << 5,     /**< the handle closed; freed once holds is 0 */
    PL_SOCK_OPENED = 1 << 6,   /**< on_open was called */
    PL_SOCK_REFILL = 1 << 7,   /**< the layer above wants on_drain */
    PL_SOCK_SHUT = 1 << 8,     /**< the type's shutdown was called */
    PL_SOCK_WAITING = 1 << 9,  /**< full: waiting for the socket to drain (EPOLLOUT) */
    PL_SOCK_LINGER = 1 << 10,  /**< all written, FIN sent: reading to the peer's EOF */
    PL_SOCK_READING = 1 << 11, /**< reading wanted (not paused, not closing) */
    PL_SOCK_EV_IN = 1 << 12,   /**< registered for EPOLLIN */
    PL_SOCK_EV_OUT = 1 << 13,  /**< registered for EPOLLOUT */
    PL_SOCK_EV_GONE = 1 << 14, /**< removed from the epoll set (an error seen while not reading) */
};

/** A connection. The layer above's struct begins with it. */
struct pl_sock {
    /* What a fan-out touches for each recipient comes first, in 64 bytes: queueing a frame and
     * writing it out then cost one or two cache lines per recipient (thousands of sockets do
     * not stay in cache), and the write needs nothing of the libuv handle. */
    pl_sock_ctx_t *ctx;
    pl_outq_node_t *q_head, *q_tail; /**< output: frames in order; the head may be partly written */
    struct pl_sock *dirty_next;      /**< ctx->dirty */
    const pl_sock_type_t *type;
    uint32_t q_bytes;     /**< bytes queued (at most max_outbuf, < 1 GiB, and one frame more) */
    uint32_t q_off;       /**< bytes of the head already written */
    int fd;               /**< the TCP socket, -1 if none (attached) or closed */
    uint16_t over_soft_s; /**< loop second (mod 2^16, odd) since which more than the soft limit
                             is unread, or 0 */
    uint16_t flags;
    /* The rest. */
    void *tstate;                  /**< the type's state (TLS), or NULL */
    struct pl_sock *prev, *next;   /**< the context's sockets; once closed, next is ctx->gone */
    struct pl_sock *closing_next;  /**< ctx->closing */
    const char *close_reason;      /**< static string */
    uint32_t created_ms, close_ms; /**< the loop's clock, a pl_sock_ms32 (pl_sock_ms_since) */
    uint32_t holds;                /**< pl_sock_hold */
    uint16_t close_code;           /**< given to pl_sock_close, for the layer above's on_closing */
    uint8_t listener; /**< index of the listener it came from (pl_sock_listen's order) */
};

/** Most listeners on one context (plain, TLS, metrics). */
#define PL_SOCK_LISTENERS 3

/**
 * What a context counts, for the metrics (app/metrics.c). Written only by the loop's thread
 * (pl_counter_add: no lock, no read-modify-write), read by any thread. The context is one
 * allocation per loop that only its thread writes, so these share no cache line with another
 * writer (not _Alignas: the context comes from calloc, 16-byte aligned).
 */
typedef struct {
    pl_counter_t frames_out;     /**< frames queued to sockets (any kind, HTTP too) */
    pl_counter_t bytes_out;      /**< their bytes */
    pl_counter_t slow_consumers; /**< sockets cut off for not reading (cut_code) */
    pl_counter_t accepted;       /**< sockets accepted */
} pl_sock_stats_t;

/** One loop's sockets. */
struct pl_sock_ctx {
    pl_loop_t *loop;
    const pl_sock_handlers_t *h;
    void *ud;         /**< the layer above's per-loop state */
    size_t sock_size; /**< bytes per socket */
    pl_slab_t blocks; /**< the sockets' memory: every connection holds one as long as it lives */
    pl_sock_limits_t lim;
    pl_sock_t *socks;   /**< every live socket (doubly linked) */
    pl_sock_t *dirty;   /**< sockets with output to write this turn */
    pl_sock_t *closing; /**< sockets whose close was requested this turn */
    pl_sock_t *gone;    /**< sockets closed this turn, finished at its end (freeClientAsync) */
    uv_loop_t *uv;
    int epfd;     /**< the sockets' epoll set */
    uv_poll_t io; /**< watches epfd */
    uv_timer_t sweep;
    uv_poll_t listeners[PL_SOCK_LISTENERS];
    int lfd[PL_SOCK_LISTENERS]; /**< the listening sockets (owned), -1 once closed */
    int accept_paused;          /**< out of descriptors: the listeners wait for the sweep */
    const pl_sock_type_t *ltype[PL_SOCK_LISTENERS];
    void *larg[PL_SOCK_LISTENERS];
    void *lstate[PL_SOCK_LISTENERS]; /**< each listener's type state (pl_sock_type_t.accept) */
    int nlisteners;
    atomic_long nsocks;    /**< read by other threads (status) */
    pl_sock_stats_t stats; /**< read by other threads (metrics) */
    pl_slab_t nodes; /**< output queue nodes: a page empties and goes once its frames are out */
    char rbuf[64 * 1024];        /**< reads are processed at once: one buffer serves all */
    char pbuf[16 * 1024 + 2048]; /**< plaintext of one TLS record */
};

/** A context on `loop` (which gets an end-of-turn hook and a sweep timer). NULL on failure. */
pl_sock_ctx_t *pl_sock_ctx_new(pl_loop_t *loop, const pl_sock_handlers_t *h, void *ud,
                               size_t sock_size, const pl_sock_limits_t *lim);

/** Accept on the bound, listening socket `fd` (SO_REUSEPORT: each loop its own; the context
 *  owns it from here, even on failure) as `type` (with `arg`, e.g. the TLS configuration).
 *  Returns the listener's index (pl_sock_t.listener of what it accepts), or a negative libuv
 *  error. */
int pl_sock_listen(pl_sock_ctx_t *ctx, int fd, const pl_sock_type_t *type, void *arg);

/** A socket not from a listener, with no file descriptor: `type` moves its bytes (the unit
 *  tests' loopback transport). Ready as the type's accept makes it. NULL on failure. */
pl_sock_t *pl_sock_attach(pl_sock_ctx_t *ctx, const pl_sock_type_t *type, void *arg);

/** Bytes for an attached socket, from its type's own source: read as if from the network. */
void pl_sock_feed(pl_sock_t *s, char *p, size_t n);

/** Stop accepting (shutdown). */
void pl_sock_ctx_unlisten(pl_sock_ctx_t *ctx);

/** The loop is ending: close the sweep timer and the listeners (sockets must be gone). */
void pl_sock_ctx_close(pl_sock_ctx_t *ctx);

/** Free the context and its node pool, after its loop ended. */
void pl_sock_ctx_free(pl_sock_ctx_t *ctx);

/**
 * Queue `f` (takes its own reference; the caller keeps its). Returns 0, or -1 if the socket
 * is closing or was just cut off as a slow consumer.
 */
int pl_sock_send(pl_sock_t *s, pl_frame_t *f);

/** Queue the last frame of a closing socket (from on_closing; a close frame, say). */
int pl_sock_send_last(pl_sock_t *s, pl_frame_t *f);

/** Queue raw bytes (copied into a new frame). */
int pl_sock_send_bytes(pl_sock_t *s, const void *p, size_t n);

/**
 * Close at the end of this loop turn: the layer above's on_closing (it gets `code` and
 * `reason` in s->close_code, s->close_reason), what is queued, then the socket. Idempotent;
 * the first call wins.
 */
void pl_sock_close(pl_sock_t *s, uint16_t code, const char *reason);

/** Close without writing anything more (I/O error, out of memory). */
void pl_sock_abort(pl_sock_t *s, const char *why);

/** Keep the memory past the close: something will still name the socket. */
static inline void pl_sock_hold(pl_sock_t *s)
{
    s->holds++;
}

/** That something is done; frees the socket if it is already closed. */
void pl_sock_release(pl_sock_t *s);

/** 1 if the socket can still be written to. */
static inline int pl_sock_open(const pl_sock_t *s)
{
    return !(s->flags & PL_SOCK_CLOSE_QUEUED);
}

/** Stop reading (the answer to a request is being prepared), and start again. */
void pl_sock_pause(pl_sock_t *s);
int pl_sock_resume(pl_sock_t *s);

/** Ask for (on = 1) or stop on_drain calls. */
void pl_sock_want_drain(pl_sock_t *s, int on);

/** The peer's address; 0 or a negative libuv error. */
int pl_sock_peer(const pl_sock_t *s, struct sockaddr_storage *ss);

/** The peer as text ("1.2.3.4:5678"), for log lines. */
const char *pl_sock_peer_str(const pl_sock_t *s, char *out, size_t n);

/** 1 if the socket's bytes are encrypted (the client used https or wss). */
static inline int pl_sock_secure(const pl_sock_t *s)
{
    return s->type->secure;
}

/** uv_now of the socket's loop. */
static inline uint64_t pl_sock_now(const pl_sock_t *s)
{
    return uv_now(s->ctx->uv);
}

/** The loop's clock as a connection keeps it: milliseconds modulo 2^32 (4 bytes, not 8, in
 *  every connection). Only the time since is taken (pl_sock_ms_since): right for spans under
 *  49 days, and every span kept is seconds or minutes. */
static inline uint32_t pl_sock_ms32(uint64_t now)
{
    return (uint32_t)now;
}

/** Milliseconds from `then` (a pl_sock_ms32) to `now` (the loop's clock). */
static inline uint32_t pl_sock_ms_since(uint64_t now, uint32_t then)
{
    return (uint32_t)now - then;
}

/** An output queue node from the context's slab (not zeroed). NULL on OOM. */
pl_outq_node_t *pl_sock_node_get(pl_sock_ctx_t *ctx);
/** Give one back. */
void pl_sock_node_put(pl_sock_ctx_t *ctx, pl_outq_node_t *n);

/* For socket types (tls.c) only. */

/** The type is ready: tell the layer above. */
void pl_sock__opened(pl_sock_t *s);
/** Plaintext from the type. */
void pl_sock__deliver(pl_sock_t *s, char *p, size_t n);
/** Write to the socket's descriptor: the bytes it took (0 when it is full), or a negative
 *  libuv error. */
ssize_t pl_sock__write_fd(pl_sock_t *s, const uv_buf_t *iov, unsigned n);
/** The type has bytes to write: flush at the end of the turn. */
void pl_sock__dirty(pl_sock_t *s);

#endif
