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

#include "parley/base/clock.h"
#include "parley/base/config.h"
#include "parley/base/metric.h"
#include "parley/base/shardmask.h"
#include "parley/net/loop.h"
#include "parley/svc/redis.h"
#include "parley/svc/subscriber.h"

#include "parley/app/kv.h"
#include "parley/app/limits.h"
#include "parley/app/shard.h"
#include "parley/app/srvlog.h"

/** The process. */
typedef struct pl_server {
    pl_config_t cfg;
    pl_redis_addr_t redis_addr; /**< from cfg: every Redis connection's address and login */
    /** Cluster mode: PARLEY_REDIS_URL's hosts, where the slot map is first read. */
    pl_slots_node_t redis_seeds[PL_CONFIG_REDIS_HOSTS_MAX];
    int redis_nseeds;
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
    /** Cluster mode: the instance's channel server:{s:<id>}, a counted channel held for the
     *  process' life (deliver.c); owned here. */
    pl_subscriber_chan_t server_chan;
    /** This run of the instance, 16 random hex digits: a cluster's connection counts name it
     *  (app/split.h), so that what a previous run under the same id left is told apart. */
    char run_id[17];
    uv_loop_t *loop; /**< the main thread's loop: signals and shutdown */
    uv_signal_t sigterm, sigint, sighup;
    uv_async_t shard_done;
    uv_timer_t deadline;
    atomic_int shards_running;
    atomic_int restoring; /**< a restore of Redis' seqs is under way (restore.c) */
    /* Drain and rebalance (drain.h). Written by the thread that asks, read by any. */
    atomic_int state;               /**< pl_server_state_t */
    atomic_int shards_draining;     /**< shards still closing clients in a drain */
    atomic_llong drain_started_ms;  /**< unix ms the drain began; 0 before */
    atomic_uint rebalance_permille; /**< the last rebalance asked for: share of clients, 1/1000 */
    atomic_uint rebalance_ms;       /**< and the milliseconds to spread it over */
    uv_async_t drain_wake; /**< main loop: a drain was asked for, or a shard finished its part */
    uv_timer_t drain_deadline;
    int drain_posted;         /**< main thread: the shards were told to drain */
    pl_hist_t sub_lag;        /**< the subscriber thread's: message ts to arrival, us (deliver.c) */
    pl_srvlog_t srvlog;       /**< the subscriber thread's: its place in server:{id}'s log */
    pl_limits_conns_t *conns; /**< WebSockets per address and in all (limits.h); owned, every
                                 shard writes its atomics */
} pl_server_t;

/** Where the process is in its life. */
typedef enum {
    PL_SERVER_RUNNING = 0,
    PL_SERVER_DRAINING = 1, /**< not accepting; closing clients over PARLEY_DRAIN_SECONDS */
    PL_SERVER_STOPPING = 2, /**< closing the rest, storing what is queued, then exiting */
} pl_server_state_t;

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
        if (!pl_kv_up(pl_server_shard(srv, i))) return 0;
    return 1;
}

/** The process's state (pl_server_state_t). Any thread. */
static inline int pl_server_state(pl_server_t *srv)
{
    return atomic_load_explicit(&srv->state, memory_order_relaxed);
}

/**
 * Begin a drain (SIGTERM does the same): /health answers 503 at once, the shards stop accepting
 * and close their clients over PARLEY_DRAIN_SECONDS, then the process stores what is queued and
 * exits. Any thread. Returns 1 if this call began it, 0 if the server was past running already.
 */
static inline int pl_server_drain(pl_server_t *srv)
{
    int running = PL_SERVER_RUNNING;
    if (!atomic_compare_exchange_strong(&srv->state, &running, PL_SERVER_DRAINING)) return 0;
    atomic_store(&srv->drain_started_ms, pl_now_ms());
    uv_async_send(&srv->drain_wake);
    return 1;
}

/** A shard closed its last client of a drain. Its loop thread. */
static inline void pl_server_shard_drained(pl_server_t *srv)
{
    atomic_fetch_sub(&srv->shards_draining, 1);
    uv_async_send(&srv->drain_wake);
}

/** Ask `permille`/1000 of every shard's clients to reconnect, spread over `ms`. Any thread. */
static inline void pl_server_rebalance(pl_server_t *srv, unsigned permille, unsigned ms)
{
    atomic_store(&srv->rebalance_permille, permille);
    atomic_store(&srv->rebalance_ms, ms);
    for (int i = 0; i < srv->nshards; i++) {
        struct pl_shard *s = pl_server_shard(srv, i);
        /* At most one event in the inbox per shard; it reads the latest figures. */
        if (atomic_exchange(&s->rebalance_queued, 1) == 0)
            pl_loop_post(srv->loops[i], &s->rebalance_ev);
    }
}

/** A shard's loop ended (its exit callback, any loop thread). */
static inline void pl_server_shard_done(pl_server_t *srv)
{
    atomic_fetch_sub(&srv->shards_running, 1);
    uv_async_send(&srv->shard_done);
}

#endif
