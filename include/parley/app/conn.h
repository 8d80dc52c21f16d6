/*
 * conn: one client connection's transport on its shard: reading, the HTTP
 * phase, the switch to WebSocket, the ordered output queue, timeouts and
 * closing. What the bytes mean is decided by api (HTTP) and session
 * (WebSocket protocol v1).
 *
 * Ownership: a connection is allocated at accept by its shard and freed in
 * its handle's close callback (never inside the callback that decided to
 * close it), or later if Redis replies addressed to it are still pending.
 * Only its shard's thread ever touches it.
 */
#ifndef PARLEY_CONN_H
#define PARLEY_CONN_H

#include <stdint.h>
#include <uv.h>

#include "parley/net/frame.h"
#include "parley/proto/http.h"
#include "parley/app/room.h"
#include "parley/app/shard.h"
#include "parley/proto/ws.h"

/** Connection phases. */
typedef enum { PL_CONN_HTTP, PL_CONN_WS } pl_conn_phase_t;

/** Flags. */
enum {
    PL_CONN_DIRTY = 1 << 0,        /**< on the shard's dirty list */
    PL_CONN_CLOSE_QUEUED = 1 << 1, /**< on the shard's closing list, or past it */
    PL_CONN_CLOSING = 1 << 2,      /**< close carried out: writing the last bytes */
    PL_CONN_HANDLE_CLOSED = 1 << 3,
    PL_CONN_AUTHED = 1 << 4,
    PL_CONN_ABORT = 1 << 5,     /**< drop queued output, close at once */
    PL_CONN_GONE = 1 << 6,      /**< close callback ran; freed once replies_pending is 0 */
    PL_CONN_HTTP_WAIT = 1 << 7, /**< an HTTP answer is being prepared elsewhere (database) */
    PL_CONN_REFILL = 1 << 8,    /**< a catch-up streams into the output queue as it drains */
};

/** A client connection. */
typedef struct pl_conn {
    uv_tcp_t tcp; /**< tcp.data == this */
    pl_shard_t *shard;
    struct pl_conn *prev, *next;  /**< shard->conns */
    struct pl_conn *dirty_next;   /**< shard->dirty */
    struct pl_conn *closing_next; /**< shard->closing */
    uint8_t phase;
    uint16_t flags;
    uint16_t close_code;      /**< WebSocket close code to send, 0 for none */
    const char *close_reason; /**< static string */
    uint32_t replies_pending; /**< Redis replies that will name this connection */
    uint64_t created_ms, last_rx_ms, last_ping_ms, close_ms; /**< uv_now of the shard loop */
    uint32_t over_soft_s; /**< loop second since which more than the soft limit is unread, or 0 */
    pl_http_t *http;      /**< HTTP phase only */
    pl_ws_in_t in;        /**< WebSocket phase: client frame reader */
    char *user;           /**< after authentication */
    uint64_t session;
    pl_sub_t *subs;           /**< rooms subscribed to, on this shard's table */
    pl_sub_t *usub;           /**< this connection in the shard's user table */
    struct pl_typing *typing; /**< rooms this connection is typing in (session.c) */
    uint8_t presence;         /**< counted in Redis presence (session.c) */
    /* Output: frames in order; the head may be partly written (q_off). */
    pl_outq_node_t *q_head, *q_tail;
    uint32_t q_off;
    size_t q_bytes;
    uv_write_t *wreq; /**< in flight, covering the first w_nodes nodes */
    uint32_t w_nodes;
} pl_conn_t;

/** The listener's connection callback: accept and start reading. */
void pl_conn_accept_cb(uv_stream_t *listener, int status);

/**
 * Queue `f` for the client (takes its own reference; the caller keeps its).
 * Returns 0, or -1 if the connection is closing or was just cut off as a slow
 * consumer.
 *
 * Slow consumers (Redis' client-output-buffer-limit): a client is cut off
 * (close 4008) only for what it fails to read, that is bytes still queued
 * after the shard wrote what the kernel would take: more than
 * PARLEY_MAX_OUTBUF at once, or more than PARLEY_MAX_OUTBUF_SOFT for
 * PARLEY_MAX_OUTBUF_SOFT_SECONDS. A burst queued within one loop turn to a
 * client that reads is not held against it.
 */
int pl_conn_send(pl_conn_t *c, pl_frame_t *f);

/**
 * How far the output queue is filled from a source that can wait (a
 * catch-up): while PL_CONN_REFILL is set and less than this is queued, the
 * transport asks pl_session_refill for more as the socket drains.
 */
size_t pl_conn_refill_mark(const pl_conn_t *c);

/** Queue the text frame holding `b`'s JSON (copied into a new frame). */
void pl_conn_send_json(pl_conn_t *c, const pl_buf_t *b);

/**
 * Ask for the connection to be closed at the end of this loop iteration:
 * after what is queued, a close frame with `code` and `reason` (WebSocket
 * phase, code non-zero), then the socket. Idempotent; the first call wins.
 */
void pl_conn_close(pl_conn_t *c, uint16_t code, const char *reason);

/** Close without writing anything more (I/O error, slow consumer). */
void pl_conn_abort(pl_conn_t *c, const char *why);

/** Check phase: carry out queued closes, then write every dirty connection. */
void pl_conn_process_pending(pl_shard_t *s);

/** Timer sweep: authentication deadline, pings, idle and close timeouts for one connection. */
void pl_conn_sweep(pl_conn_t *c, uint64_t now);

/**
 * An HTTP request's answer will come later (a database job): stop reading and
 * keep the bytes already read after the request for when it does.
 */
void pl_conn_http_wait(pl_conn_t *c, const char *rest, size_t n);
/** The delayed answer has been queued: go on with the connection (or close it). */
void pl_conn_http_resume(pl_conn_t *c, int keep_alive);

/** The peer's address into `ss`; 0, or a negative libuv error. */
int pl_conn_peer(const pl_conn_t *c, struct sockaddr_storage *ss);

/** A Redis reply naming `c` arrived: drop the hold and free `c` if it is already closed. */
void pl_conn_reply_done(pl_conn_t *c);

/** 1 if the connection can still be written to. */
static inline int pl_conn_open(const pl_conn_t *c)
{
    return !(c->flags & PL_CONN_CLOSE_QUEUED);
}

#endif
