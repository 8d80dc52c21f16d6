/*
 * shard: the gateway's state on one loop (net/loop.h), held in the loop's
 * extension area: the room table and the user table of the connections the
 * loop holds, its Redis connection, its id generator, the messages waiting
 * for Redis to be ready, the presence changes of the current turn, encoding
 * buffers. Everything here is touched only by the loop's thread; other
 * threads reach a shard through the loop's inbox, with the event kinds below.
 *
 * Ownership: the server creates each loop with room for a pl_shard_t, fills
 * it (pl_shard_init) before starting the loop's thread, and the shard frees
 * what it holds when the loop ends (its exit callback).
 */
#ifndef PARLEY_APP_SHARD_H
#define PARLEY_APP_SHARD_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "parley/app/drain.h"
#include "parley/app/limits.h"
#include "parley/app/room.h"
#include "parley/app/users.h"
#include "parley/app/wire.h"
#include "parley/base/buf.h"
#include "parley/base/idgen.h"
#include "parley/base/jwt.h"
#include "parley/base/metric.h"
#include "parley/base/shardmask.h"
#include "parley/net/loop.h"
#include "parley/proto/conn.h"
#include "parley/svc/redis.h"

struct pl_server;
struct pl_msg;

/** The kinds of the gateway's inbox events (net/loop.h receivers). */
enum {
    PL_EV_BCAST = 0,     /**< a room message or event from the Redis subscriber (deliver.h) */
    PL_EV_DB = 1,        /**< a finished database job: its done callback runs */
    PL_EV_SHUTDOWN = 2,  /**< close every client with 1001 */
    PL_EV_FINISH = 3,    /**< nothing more will be posted: end the loop once the clients are gone */
    PL_EV_RESYNC = 4,    /**< Redis lost its data: re-announce this shard's connections */
    PL_EV_DRAIN = 5,     /**< close every client gently, spread over time (drain.h) */
    PL_EV_REBALANCE = 6, /**< ask a share of the clients to reconnect (drain.h) */
    PL_EV_GAP = 7,       /**< the subscriber was away: catch every subscription up */
    PL_EV_ROOM_LIVE = 8, /**< rooms mode: a room's Redis subscription is in effect (roomsub.h) */
};

/** Most nodes one turn's messages wait for a replica on (publish.h); more go one by one. */
#define PL_SHARD_WAIT_NODES 64

/** Most presence changes sent in one script call. */
#define PL_PRESENCE_BATCH_MAX 512

/** The presence changes of one loop turn, in order (chat.c). */
typedef struct {
    pl_buf_t users; /**< the queued users, NUL-terminated one after the other */
    size_t off[PL_PRESENCE_BATCH_MAX];
    struct pl_session *conn[PL_PRESENCE_BATCH_MAX]; /**< an opening connection, or NULL */
    size_t n;
} pl_presence_queue_t;

/** Why an authentication failed: a JWT error's index is -PL_JWT_E* (base/jwt.h). */
enum {
    PL_AUTH_FAIL_TIMEOUT = 0,           /**< no token within PARLEY_AUTH_TIMEOUT */
    PL_AUTH_FAIL_REVOKED = PL_JWT_NERR, /**< issued before the user's last disconnect */
    PL_AUTH_FAIL_N,
};

/**
 * What a shard counts for the metrics (app/metrics.c sums the shards at a scrape). Written only
 * by the shard's thread with pl_counter_add (a plain add: no lock, no shared cache line per
 * delivery), read by whichever shard serves the scrape.
 */
typedef struct {
    pl_counter_t auths;                         /**< sessions authenticated */
    pl_counter_t sessions;                      /**< gauge: authenticated sessions open */
    pl_counter_t auth_failures[PL_AUTH_FAIL_N]; /**< by PL_AUTH_FAIL_TIMEOUT or -PL_JWT_E* */
    pl_counter_t subscriptions;                 /**< gauge: subscriptions held */
    pl_counter_t received;                      /**< message frames from clients */
    pl_counter_t published;                     /**< of those, published to Redis (not dups) */
    pl_counter_t delivered;                     /**< frames queued to recipients */
    pl_counter_t errors[PL_ERR_COUNT];          /**< error frames sent, by pl_err_t */
    pl_counter_t rate_limited[2];               /**< frames refused: [0] frames, [1] subscribes */
    pl_counter_t rate_closes;                   /**< connections closed with 1008 for flooding */
    pl_counter_t refused[PL_LIMITS_REASONS];    /**< upgrades refused, by pl_limits_reason_t */
} pl_shard_stats_t;

/** One loop's gateway state. */
typedef struct pl_shard {
    struct pl_server *srv;
    pl_loop_t *loop;
    pl_conn_ctx_t *conns; /**< the connections (proto/conn.h) */
    int index;
    pl_room_table_t rooms;              /**< rooms subscribed to here */
    pl_shardmask_counts_t *mask_counts; /**< this shard's share of the server's room mask; owned */
    pl_users_t users; /**< user id -> this shard's connections of that user (DMs, presence) */
    uv_timer_t presence_timer; /**< shard 0 only: heartbeat and dead-instance sweep */
    uv_timer_t ready_timer;
    uv_timer_t gap_timer;     /**< gap catch-ups tried again (subscribe.h) */
    uv_timer_t reorder_timer; /**< room frames that came before their turn go out (deliver.h) */
    uv_timer_t split_timer;   /**< cluster mode: the direct-message FIFO tried again (split.c) */
    struct pl_split_send *split_retry, *split_retry_tail; /**< the FIFO of direct-message jobs
                                                             waiting, in order; owned (split.c) */
    int split_held;   /**< direct messages on the FIFO road: new ones queue behind (split.c) */
    void *split_busy; /**< the FIFO's job in flight (a step, or a route's lookups), or NULL */
    pl_redis_t redis; /**< a standalone Redis (app/kv.h) */
    struct pl_cluster *cluster; /**< a Redis Cluster's router, or NULL (app/kv.h); owned */
    pl_idgen_t ids;
    int ids_ready;   /**< the id node came from Redis */
    int redis_ready; /**< parley:ready seen on this connection: messages may be published */
    int stopping, finishing;
    /* Messages wait here, in order, until Redis is ready (publish.c): first those Redis bounced,
     * then those that came meanwhile. */
    struct pl_msg *bounced, *bounced_tail, *waiting, *waiting_tail;
    size_t nwaiting;
    uint32_t sync_gen; /**< generation counter for subscription catch-ups */
    /** Catch-ups waiting for Redis to be restored (subscribe.c), in order; each owns itself. */
    struct pl_sync_ctx *parked, *parked_tail;
    /** Catch-ups waiting for their room's Redis subscription (rooms mode; subscribe.c). */
    struct pl_sync_ctx *room_wait;
    uint32_t room_gen;       /**< rooms mode: numbers the lives of rooms here (roomsub.c) */
    uint64_t scan_cursor;    /**< shard 0: where the SCAN for stray server_users sets is */
    struct pl_seed *seeding; /**< cluster mode: rooms being seeded here (restore.h); owned */
    int swept_self; /**< cluster mode, shard 0: the previous runs' counts were swept (split.h) */
    int registered; /**< cluster mode: this shard registered the instance (split.h) */
    /** Wait mode (publish.h): this turn's messages published on each node, in order, until
     *  pl_publish_flush sends the node one WAIT for them all. */
    struct {
        pl_redis_t *node;
        struct pl_msg *head, *tail;
    } waits[PL_SHARD_WAIT_NODES];
    int nwaits;
    pl_loop_event_t shutdown_ev, finish_ev, resync_ev, drain_ev, rebalance_ev;
    atomic_int resync_queued;    /**< resync_ev is in the inbox (posted at most once at a time) */
    atomic_int rebalance_queued; /**< rebalance_ev is in the inbox */
    pl_loop_event_t gap_ev;      /**< PL_EV_GAP */
    atomic_int gap_queued;       /**< gap_ev is in the inbox */
    pl_drain_plan_t leave;       /**< clients being closed gently (drain.h) */
    pl_presence_queue_t pq;
    pl_wire_arena_t arena; /**< client frames are parsed here */
    /* Encoding buffers, used within one callback at a time. */
    pl_buf_t scratch, kbuf[5], tail;
    int metrics_listener; /**< the listener index of PARLEY_METRICS_LISTEN's socket, or -1 */
    /* Read by other threads (status endpoint, metrics); written only by this shard. After a
     * line of padding, so that the one field other threads write (resync_queued) is not on
     * the line the counters are bumped on. */
    char pad_[64];
    atomic_long nrooms;
    pl_shard_stats_t stats;
} pl_shard_t;

/** The shard of a loop. */
static inline pl_shard_t *pl_shard_of_loop(pl_loop_t *loop)
{
    return pl_loop_ext(loop);
}

/** The shard of a connection. */
static inline pl_shard_t *pl_shard_of_conn(const pl_conn_t *c)
{
    return pl_conn_app_ud(c);
}

/**
 * Set up the shard in `loop`'s extension area: tables, timers, the connection context
 * listening on `fd` (and `tls_fd` with `tls`, if >= 0), the Redis connection, receivers and
 * end-of-turn hooks. `id_node` is the id generator's node, or -1 to get one from Redis. On the
 * main thread, before the loop starts. 0 or a negative libuv error (logged).
 */
int pl_shard_init(pl_loop_t *loop, struct pl_server *srv, int fd, int tls_fd, void *tls,
                  int64_t id_node);

/** Ask the shard to re-announce its connections to Redis. Any thread; a request while one is
 *  pending is the same request. */
void pl_shard_resync(pl_shard_t *s);

/** The subscriber is back after a loss: the shard catches its subscriptions up
 *  (pl_subscribe_gap). Any thread; posted at most once at a time. */
void pl_shard_gap(pl_shard_t *s);

/** The shard's exit callback (after its loop ended): free what it holds. */
void pl_shard_exit(pl_loop_t *loop);

/** The scratch buffer, emptied: for one encoding at a time. */
static inline pl_buf_t *pl_shard_scratch(pl_shard_t *s)
{
    pl_buf_reset(&s->scratch);
    return &s->scratch;
}

#endif
