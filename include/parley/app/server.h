/*
 * server: one parleyd process. Binds the listening sockets, starts the loops
 * (each with its shard, app/shard.h), the Redis subscriber and the database
 * pool, handles signals, and shuts down in order.
 *
 * Ownership: the server owns the config, the loops and the subscriber for
 * the life of the process. After start-up everything in it is read-only to
 * other threads except the atomics.
 */
#ifndef PARLEY_APP_SERVER_H
#define PARLEY_APP_SERVER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "parley/base/config.h"
#include "parley/base/metric.h"
#include "parley/base/shardmask.h"
#include "parley/net/loop.h"
#include "parley/svc/redis.h"
#include "parley/svc/subscriber.h"

#include "parley/app/shard.h"

/** The process. */
typedef struct pl_server {
    pl_config_t cfg;
    pl_redis_addr_t redis_addr; /**< from cfg: every Redis connection's address and login */
    pl_loop_t **loops;
    int nshards;
    pl_subscriber_t sub;
    pl_shardmask_t *rooms_mask; /**< which loops hold which rooms (shardmask.h); owned here */
    unsigned char *owe;         /**< the subscriber thread's: loops it must wake */
    struct pl_db *db;           /**< NULL without PARLEY_DATABASE_URL */
    int64_t started_ms;         /**< unix ms */
    struct pl_tls *tls;         /**< the TLS listener's configuration, or NULL; owned */
    struct pl_static *web;      /**< PARLEY_WEB_ROOT's files, or NULL; owned, read by the loops */
    char sub_cmd[96];           /**< SUBSCRIBE server:<id>, for the subscriber */
    uv_loop_t *loop;            /**< the main thread's loop: signals and shutdown */
    uv_signal_t sigterm, sigint, sighup;
    uv_async_t shard_done;
    uv_timer_t deadline;
    atomic_int shards_running;
    atomic_int restoring; /**< a restore of Redis' seqs is under way (restore.c) */
    atomic_int draining;  /**< 1 while draining (no new clients); exposed as parley_draining */
    pl_hist_t sub_lag;    /**< the subscriber thread's: message ts to arrival, us (deliver.c) */
    int stopping;
} pl_server_t;

/** Run the server with `cfg` (taken over) until a signal stops it. Returns the exit status. */
int pl_server_run(pl_config_t *cfg);

/* Small enough to be inline, and inline so that the application's modules link without the
 * server (their unit tests drive a shard with no process around it). */

/** The shard of loop `i`. */
static inline struct pl_shard *pl_server_shard(pl_server_t *srv, int i)
{
    return pl_loop_ext(srv->loops[i]);
}

/** 1 if every Redis connection (subscriber and each shard's) is up. Any thread. */
static inline int pl_server_redis_ok(pl_server_t *srv)
{
    if (!atomic_load_explicit(&srv->sub.connected, memory_order_relaxed)) return 0;
    for (int i = 0; i < srv->nshards; i++)
        if (!atomic_load_explicit(&pl_server_shard(srv, i)->redis.connected, memory_order_relaxed))
            return 0;
    return 1;
}

/** A shard's loop ended (its exit callback, any loop thread). */
static inline void pl_server_shard_done(pl_server_t *srv)
{
    atomic_fetch_sub(&srv->shards_running, 1);
    uv_async_send(&srv->shard_done);
}

#endif
