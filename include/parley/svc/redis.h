/*
 * redis: one shard's asynchronous Redis connection (hiredis on the shard's
 * libuv loop) for PUBLISH and state commands, reconnecting on loss with
 * capped exponential backoff.
 *
 * Ownership: the shard embeds a pl_redis_t and owns it; the hiredis context
 * belongs to it while connected. Commands are refused (return -1, callback
 * never called) while disconnected, so callers can answer `unavailable` at
 * once. A command sent before a connection loss gets its callback with a
 * NULL reply: hiredis calls every pending callback exactly once.
 *
 * Replies are built in the connection's reply arena (reply.h): a callback must
 * not keep a reply, or anything in it, after it returns.
 */
#ifndef PARLEY_SVC_REDIS_H
#define PARLEY_SVC_REDIS_H

#include <stdatomic.h>
#include <stddef.h>
#include <uv.h>

#include "parley/base/buf.h"
#include "parley/base/metric.h"

struct redisAsyncContext;
struct redisContext;

/** Where Redis is and how to log in. Strings are borrowed (the server's config, which outlives
 *  every connection). */
typedef struct {
    const char *host;
    int port, db;
    const char *user;     /**< ACL user for AUTH, or NULL */
    const char *password; /**< NULL: no AUTH. Never logged */
} pl_redis_addr_t;

/**
 * A blocking connection ready for commands: connected within `timeout_ms`,
 * authenticated and its database selected. Returns NULL on failure after
 * writing why into `err` (never the password). The caller redisFree()s it.
 */
struct redisContext *pl_redis_connect_sync(const pl_redis_addr_t *a, int timeout_ms, char *err,
                                           size_t err_size);

/**
 * Reply callback (hiredis' redisCallbackFn): `reply` is a redisReply*, NULL if
 * the connection was lost before the reply came.
 */
typedef void (*pl_redis_cb)(struct redisAsyncContext *ac, void *reply, void *privdata);

/** A command in flight: its callback and when it was issued (uv_hrtime, ns). */
typedef struct pl_redis_pending {
    pl_redis_cb cb;
    void *privdata;
    uint64_t t0;
} pl_redis_pending_t;

/** What a connection counts, for the metrics. Written by the loop's thread only, read by any
 *  thread (base/metric.h). */
typedef struct {
    pl_hist_t latency;       /**< issue to reply, microseconds (pl_hist_seconds) */
    pl_counter_t reconnects; /**< connections made after the first */
    pl_counter_t lost;       /**< commands answered with no reply (the connection went) */
} pl_redis_stats_t;

/** An auto-reconnecting async connection. */
typedef struct pl_redis {
    uv_loop_t *loop;
    const pl_redis_addr_t *addr;  /**< borrowed from the server */
    struct redisAsyncContext *ac; /**< NULL while disconnected */
    struct pl_reply_arena *arena; /**< replies are built here (reply.h); freed by pl_redis_stop */
    pl_buf_t cmd;                 /**< the command being formatted; freed by pl_redis_stop */
    atomic_int connected;         /**< read by other threads for /health */
    uv_timer_t retry;
    int backoff_ms;
    int stopping;
    int was_up;                             /**< for logging transitions once */
    int auth_refused;                       /**< the last login was refused (logged once) */
    void (*on_connect)(struct pl_redis *r); /**< per-connection set-up (script loading), or NULL */
    void *data;                             /**< the owner's */
    int flush_pending; /**< commands issued this loop turn await pl_redis_flush */
    int flushing;
    int ever_up; /**< a connection was made before: the next one is a reconnect */
    /* Commands in flight, in the order Redis answers them (a ring of pend_cap, a power of two,
     * grown by doubling and never shrunk: no allocation per command). */
    pl_redis_pending_t *pend;
    uint32_t pend_head, pend_n, pend_cap;
    pl_redis_stats_t stats; /**< read by other threads (metrics) */
} pl_redis_t;

/**
 * Start connecting on `loop` (set on_connect first, if wanted). Every connection logs in (AUTH)
 * and selects the database before anything else is sent on it; a refused login is logged and
 * retried like a lost connection. Returns 0 or a negative libuv error.
 */
int pl_redis_start(pl_redis_t *r, uv_loop_t *loop, const pl_redis_addr_t *addr);

/**
 * Send a command of `argc` binary-safe arguments. Returns 0 and later calls
 * `cb` once (if cb is non-NULL); returns -1 without calling it when not
 * connected.
 */
int pl_redis_command(pl_redis_t *r, pl_redis_cb cb, void *privdata, int argc, const char **argv,
                     const size_t *lens);

/** Write a command of `argc` binary-safe arguments into `b` (reset first) in RESP form. */
void pl_redis_format(pl_buf_t *b, int argc, const char **argv, const size_t *lens);

/**
 * Send a command already in RESP form (`resp[0..len)`, copied by hiredis): what a router
 * resends after a redirection. Same contract as pl_redis_command.
 */
int pl_redis_command_raw(pl_redis_t *r, pl_redis_cb cb, void *privdata, const char *resp,
                         size_t len);

/** Write every command issued since the last flush (call once per loop turn, in the check phase).
 */
void pl_redis_flush(pl_redis_t *r);

/** The connection a reply came on (the `ac` of a pl_redis_cb), for a follow-up that must go to
 *  the same node (a router's WAIT after a write). */
pl_redis_t *pl_redis_of(struct redisAsyncContext *ac);

/** Stop: free the connection (pending callbacks get NULL) and close the retry timer. */
void pl_redis_stop(pl_redis_t *r);

#endif
