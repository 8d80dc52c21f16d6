/*
 * server: one parleyd process. Binds the listening sockets, starts the
 * shards and the Redis subscriber, handles signals, and shuts down in order.
 *
 * Ownership: the server owns the config, the shards and the subscriber for
 * the life of the process. After start-up everything in it is read-only to
 * other threads except the atomics.
 */
#ifndef PARLEY_SERVER_H
#define PARLEY_SERVER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "parley/base/config.h"
#include "parley/svc/redis.h"
#include "parley/app/shard.h"
#include "parley/base/shardmask.h"
#include "parley/svc/subscriber.h"

/** The process. */
typedef struct pl_server {
    pl_config_t cfg;
    pl_redis_addr_t redis_addr; /**< from cfg: every Redis connection's address and login */
    pl_shard_t **shards;
    int nshards;
    pl_subscriber_t sub;
    pl_shardmask_t *rooms_mask; /**< which shards hold which rooms (shardmask.h); owned here */
    struct pl_db *db;           /**< NULL without PARLEY_DATABASE_URL */
    int64_t started_ms;         /**< unix ms */
    uv_loop_t *loop;            /**< the main thread's loop: signals and shutdown */
    uv_signal_t sigterm, sigint;
    uv_async_t shard_done;
    uv_timer_t deadline;
    atomic_int shards_running;
    atomic_int restoring; /**< a restore of Redis' seqs is under way (session.c) */
    int stopping;
} pl_server_t;

/** Run the server with `cfg` (taken over) until a signal stops it. Returns the exit status. */
int pl_server_run(pl_config_t *cfg);

/** 1 if every Redis connection (subscriber and each shard's) is up. Any thread. */
int pl_server_redis_ok(pl_server_t *srv);

/** Wall-clock unix milliseconds. */
int64_t pl_now_ms(void);

#endif
