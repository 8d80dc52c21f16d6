/*
 * conn: one client connection's protocol phases on top of the transport
 * (net/sock.h): HTTP/1.1 requests (llhttp, pipelining, keep-alive, request
 * and idle timeouts), the WebSocket handshake, then WebSocket messages (wslay
 * frame reading, control frames, close codes, pings and the idle timeout).
 * What a request or a message means is the application's, reached only
 * through the handler table it gives the context (pl_conn_app_t, like h2o's
 * on_req); the application's per-connection state lives in an area allocated
 * with the connection (pl_conn_ext, uSockets' socket ext).
 *
 * Ownership: connections are allocated and freed by the transport (see
 * sock.h: freed after the close and the last hold); the application's area
 * is zeroed at accept and released through on_free. A context belongs to its
 * loop. Only the loop's thread touches either.
 */
#ifndef PARLEY_PROTO_CONN_H
#define PARLEY_PROTO_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "parley/base/metric.h"
#include "parley/net/frame.h"
#include "parley/net/sock.h"
#include "parley/proto/http.h"
#include "parley/proto/ws.h"

typedef struct pl_conn pl_conn_t;
typedef struct pl_conn_ctx pl_conn_ctx_t;

/** Connection phases. */
typedef enum { PL_CONN_HTTP, PL_CONN_WS } pl_conn_phase_t;

/** What the application's on_request returns. */
enum {
    PL_CONN_REQ_CLOSE = 0, /**< answered; close the connection after it */
    PL_CONN_REQ_KEEP = 1,  /**< answered; read the next request */
    PL_CONN_REQ_ASYNC = 2, /**< the answer comes later: reading stops and the connection is
                              held until pl_conn_http_resume */
};

/** The application, per context. Every callback runs on the loop's thread. */
typedef struct pl_conn_app {
    size_t ext_size; /**< bytes of per-connection state, zeroed at accept */
    /** A plain HTTP request is in c->http (and complete): answer it. */
    int (*on_request)(pl_conn_t *c);
    /** A valid WebSocket handshake is in c->http: pl_conn_upgrade to accept it, or answer with
     *  an HTTP error to refuse it (the connection is then closed). */
    void (*on_upgrade)(pl_conn_t *c);
    /** A complete, UTF-8-valid text message (binary: a binary one). */
    void (*on_message)(pl_conn_t *c, const uint8_t *p, size_t n, int binary);
    /** The connection closes (WebSocket phase): leave everything; frames queued now go out
     *  before the close frame. */
    void (*on_close)(pl_conn_t *c);
    /** The connection's memory goes: release what the application's area owns. */
    void (*on_free)(pl_conn_t *c);
    /** Once a second in the WebSocket phase (deadlines of the application's own). */
    void (*on_tick)(pl_conn_t *c, uint64_t now);
    /** The connection wants more output (pl_conn_want_drain) and little is queued. */
    void (*on_drain)(pl_conn_t *c);
    /** Who the connection is, for log lines ("-" when nobody yet); only called to log. */
    const char *(*label)(pl_conn_t *c);
} pl_conn_app_t;

/** Protocol limits and timeouts, seconds unless said. */
typedef struct pl_conn_limits {
    size_t max_frame;     /**< largest client message, bytes: larger closes 1009 */
    int ping_s;           /**< silence before the server pings */
    int idle_s;           /**< silence before the server closes (1001) */
    int http_idle_s;      /**< an idle keep-alive connection is kept */
    int http_request_s;   /**< to send a whole request (408 after) */
    size_t http_max_head; /**< request line and headers, bytes (431 after); 0: the default */
    size_t http_max_body; /**< request body, bytes (413 after); 0: the default */
} pl_conn_limits_t;

/** HTTP requests refused by the transport, by status: counted for the metrics. */
enum { PL_CONN_R400, PL_CONN_R408, PL_CONN_R413, PL_CONN_R431, PL_CONN_REFUSALS };

/** One loop's connections. */
struct pl_conn_ctx {
    pl_sock_ctx_t *sock;
    pl_ws_pool_t ws;
    const pl_conn_app_t *app;
    void *app_ud; /**< the application's per-loop state */
    pl_conn_limits_t lim;
    pl_counter_t http_refused[PL_CONN_REFUSALS]; /**< written by the loop only, by PL_CONN_R* */
};

/** Connection flags (pl_conn_t.flags). */
enum {
    PL_CONN_HTTP_WAIT = 1 << 0, /**< an HTTP answer is being prepared elsewhere */
    PL_CONN_WS_IN = 1 << 1,     /**< the request is gone: the union holds `in`, not `http` */
};

/** A client connection. */
struct pl_conn {
    pl_sock_t sock;                    /**< first: the transport allocates the whole */
    uint32_t last_rx_ms, last_ping_ms; /**< the loop's clock, pl_sock_ms32 */
    uint8_t phase;
    uint8_t flags;
    /* One or the other (PL_CONN_WS_IN says which): every connection pays for this block. */
    union {
        pl_http_t *http; /**< until the upgrade is done: read it through pl_conn_http */
        pl_ws_in_t in;   /**< after it: the client frame reader */
    };
    _Alignas(8) unsigned char ext[]; /**< the application's area (8-aligned: a slab slot) */
};

/** The connection's HTTP request state: in the HTTP phase and during on_upgrade; else NULL. */
static inline pl_http_t *pl_conn_http(const pl_conn_t *c)
{
    return (c->flags & PL_CONN_WS_IN) ? NULL : c->http;
}

/**
 * A context on `loop`: connections of the application `app` (whose per-loop state is
 * `app_ud`), with these protocol and transport limits. NULL on failure.
 */
pl_conn_ctx_t *pl_conn_ctx_new(pl_loop_t *loop, const pl_conn_app_t *app, void *app_ud,
                               const pl_conn_limits_t *lim, const pl_sock_limits_t *slim);
/** Free it after its loop ended. */
void pl_conn_ctx_free(pl_conn_ctx_t *ctx);

/** The application's area of `c`, and back. */
static inline void *pl_conn_ext(pl_conn_t *c)
{
    return c->ext;
}
static inline pl_conn_t *pl_conn_of(void *ext)
{
    return (pl_conn_t *)((char *)ext - offsetof(pl_conn_t, ext));
}
/** The application's per-loop state. */
static inline void *pl_conn_app_ud(const pl_conn_t *c)
{
    return ((const pl_conn_ctx_t *)c->sock.ctx->ud)->app_ud;
}

/** 1 if the connection can still be written to. */
static inline int pl_conn_open(const pl_conn_t *c)
{
    return pl_sock_open(&c->sock);
}

/** Queue `f` (its own reference; see pl_sock_send). 0, or -1 closing or cut off. */
static inline int pl_conn_send(pl_conn_t *c, pl_frame_t *f)
{
    return pl_sock_send(&c->sock, f);
}

/** Queue a WebSocket text frame holding `p[0..n)` (copied). */
void pl_conn_send_text(pl_conn_t *c, const char *p, size_t n);

/**
 * Close at the end of the loop turn: after what is queued, a WebSocket close
 * frame with `code` and `reason` (WebSocket phase, code non-zero), then the
 * socket. Idempotent; the first call wins.
 */
void pl_conn_close(pl_conn_t *c, uint16_t code, const char *reason);

/** Close without writing anything more. */
void pl_conn_abort(pl_conn_t *c, const char *why);

/** Something (a reply, a job) will name `c` later: keep its memory until pl_conn_release. */
static inline void pl_conn_hold(pl_conn_t *c)
{
    pl_sock_hold(&c->sock);
}
static inline void pl_conn_release(pl_conn_t *c)
{
    pl_sock_release(&c->sock);
}

/** Ask for (on = 1) or stop on_drain calls. */
static inline void pl_conn_want_drain(pl_conn_t *c, int on)
{
    pl_sock_want_drain(&c->sock, on);
}

/** Accept the WebSocket handshake in c->http (from on_upgrade): 101, then the WebSocket phase. */
int pl_conn_upgrade(pl_conn_t *c);

/** Queue an HTTP response with `body` (Content-Type, Content-Length, Connection set). */
void pl_conn_respond(pl_conn_t *c, int status, const char *content_type, const char *body,
                     size_t len, int keep_alive);

/** Queue a JSON error response {"error":code,"message":msg}. */
void pl_conn_http_error(pl_conn_t *c, int status, const char *code, const char *msg,
                        int keep_alive);

/** The answer to a request on_request returned PL_CONN_REQ_ASYNC for is queued: go on with the
 *  connection (keep_alive) or close it, and release the hold. */
void pl_conn_http_resume(pl_conn_t *c, int keep_alive);

#endif
