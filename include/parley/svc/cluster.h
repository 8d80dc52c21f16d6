/*
 * cluster: one shard's commands to a Redis Cluster, each sent to the master
 * serving its hash slot (the routing hiredis 0.14 lacks).
 *
 * A pl_cluster_t keeps the slot map (svc/slots.h) read with CLUSTER SLOTS and
 * one auto-reconnecting connection (svc/redis.h) per node it has been sent
 * to, opened when first needed. A command's reply is handed to its callback
 * as with pl_redis_command, except when Redis answers with a redirection or a
 * transient refusal, which the router handles itself:
 *
 *   MOVED         the map is stale: the slot's owner is updated at once, a
 *                 refresh is asked for, and the command is sent to the named
 *                 node;
 *   ASK           the slot is migrating: ASKING, then the command, on the
 *                 named node, for this command only;
 *   TRYAGAIN,     (a multi-key command during a migration, the cluster
 *   CLUSTERDOWN   without a majority, a failover under way) retried every
 *                 PL_CLUSTER_RETRY_MS until PL_CLUSTER_RETRY_FOR_MS after the
 *                 first attempt; then the callback gets NULL, as for a lost
 *                 connection.
 *
 * None of these was executed by Redis, so sending again is safe. A command
 * whose connection was lost is not sent again (it may have run): its
 * callback gets NULL, and the map is refreshed, since a lost master is how a
 * failover starts. The map is also refreshed every PL_CLUSTER_REFRESH_MS.
 *
 * Ownership: the caller embeds or allocates the pl_cluster_t and owns it; the
 * router owns its connections and its command records (kept on a free list
 * and reused: no allocation per command once warm). Everything runs on the
 * loop's thread. pl_cluster_stop closes the handles; pl_cluster_free, after
 * the loop ran their close callbacks, releases the memory.
 */
#ifndef PARLEY_SVC_CLUSTER_H
#define PARLEY_SVC_CLUSTER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "parley/svc/redis.h"
#include "parley/svc/slots.h"

/** How often a refused (TRYAGAIN, CLUSTERDOWN) or redirected-to-a-connecting-node command is
 *  tried again, and for how long after its first attempt, milliseconds. */
#define PL_CLUSTER_RETRY_MS 50
#define PL_CLUSTER_RETRY_FOR_MS 3000
/** How often the slot map is read again with nothing asking for it, milliseconds. */
#define PL_CLUSTER_REFRESH_MS 5000
/** Least time between two reads of the slot map, milliseconds. */
#define PL_CLUSTER_REFRESH_MIN_MS 100
/** Most nodes (by host and port) a router ever connects to. */
#define PL_CLUSTER_CONNS_MAX 64

typedef struct pl_cluster pl_cluster_t;
typedef struct pl_cluster_cmd pl_cluster_cmd_t;

/** One node's connection. Allocated by the router when first needed, freed by pl_cluster_free:
 *  hiredis keeps a pointer to `r`, so it never moves. */
typedef struct pl_cluster_conn {
    pl_redis_t r;
    pl_redis_addr_t addr; /**< host points at `host`; login fields copied from the router's */
    char host[64];
    pl_cluster_t *c;
} pl_cluster_conn_t;

/** What the router counts (base/metric.h: written by the loop's thread, read by any). */
typedef struct {
    pl_counter_t moved, ask, retried, refreshes, gave_up;
} pl_cluster_stats_t;

/** A router. Fields are the router's; read `stats` and call the functions below. */
struct pl_cluster {
    uv_loop_t *loop;
    pl_redis_addr_t login; /**< user and password for every node (db is always 0 in a cluster) */
    pl_slots_node_t seeds[PL_SLOTS_NODES_MAX];
    int nseeds;
    pl_slots_map_t map;      /**< the current map; nnodes 0 until the first CLUSTER SLOTS */
    pl_slots_map_t *scratch; /**< where a CLUSTER SLOTS reply is read before it replaces `map` */
    int16_t conn_of[PL_SLOTS_NODES_MAX]; /**< map.nodes[i]'s connection, -1 if none yet */
    pl_cluster_conn_t *conns[PL_CLUSTER_CONNS_MAX];
    int nconns;
    uv_timer_t refresh_timer, retry_timer, soon_timer; /**< periodic read, retries, next read */
    uint64_t refreshed_at; /**< uv_now of the last CLUSTER SLOTS sent, ms */
    int refreshing;        /**< a CLUSTER SLOTS is in flight */
    int refresh_wanted;    /**< another one is needed after it */
    int stopping;
    pl_cluster_cmd_t *free_cmds;               /**< records to reuse */
    pl_cluster_cmd_t *retry_head, *retry_tail; /**< waiting for PL_CLUSTER_RETRY_MS */
    /** Called on each node connection after it connects (script loading), or NULL. */
    void (*on_connect)(pl_cluster_t *c, pl_redis_t *node);
    void *data; /**< the owner's */
    pl_cluster_stats_t stats;
    int owned;     /**< slots with a master in `map` */
    atomic_int up; /**< pl_cluster_up as of the last flush or map read, for other threads */
};

/**
 * Start a router on `loop`: connect to the seeds (`seeds[0..n)`, n at most PL_SLOTS_NODES_MAX)
 * and read the slot map from the first that answers. `login` gives the user and password (its
 * host, port and db are ignored; strings are borrowed and must outlive the router). Set
 * on_connect and data first, if wanted. Returns 0 or a negative libuv error.
 */
int pl_cluster_start(pl_cluster_t *c, uv_loop_t *loop, const pl_slots_node_t *seeds, int n,
                     const pl_redis_addr_t *login);

/**
 * Send a command for hash slot `slot` (pl_slots_key of one of its keys) to the master serving
 * it. Returns 0 and later calls `cb` exactly once (with NULL if the command could not be
 * answered), or -1 without calling it: no map yet, no master for the slot, or its connection is
 * down (the caller answers `unavailable`, as on one Redis).
 */
int pl_cluster_command(pl_cluster_t *c, uint16_t slot, pl_redis_cb cb, void *privdata, int argc,
                       const char **argv, const size_t *lens);

/** 1 when every slot has a master and each one's connection is up (the loop's thread; other
 *  threads read `up`, kept by pl_cluster_flush). */
int pl_cluster_up(const pl_cluster_t *c);

/** The connection to the master serving `slot` if it is up, else NULL (for a caller that must
 *  keep a sequence of commands on one node). */
pl_redis_t *pl_cluster_node(pl_cluster_t *c, uint16_t slot);

/** How many replicas the slot map lists for the master behind `node` (one of this router's
 *  connections): 0 or more, or -1 if the map does not say. */
int pl_cluster_replicas(const pl_cluster_t *c, const pl_redis_t *node);

/** Read the slot map again soon (coalesced with a read in flight). */
void pl_cluster_refresh(pl_cluster_t *c);

/** Write every command issued this loop turn, on every connection (once per turn). */
void pl_cluster_flush(pl_cluster_t *c);

/** Stop: close every connection (commands in flight, and those waiting to be retried, get NULL)
 *  and the timers. Call pl_cluster_free once the loop has closed them. */
void pl_cluster_stop(pl_cluster_t *c);

/** Release the connections and records. */
void pl_cluster_free(pl_cluster_t *c);

/**
 * A blocking connection to the master serving `key`'s slot, for a thread without a loop (the
 * subscriber's): the slot map is read from the first of `seeds[0..n)` that answers. `login` as
 * for pl_cluster_start. Returns the connection (the caller's, redisFree), or NULL with `err`.
 */
struct redisContext *pl_cluster_connect_sync(const pl_slots_node_t *seeds, int n,
                                             const pl_redis_addr_t *login, const char *key,
                                             size_t key_len, int timeout_ms, char *err,
                                             size_t err_len);

#endif
