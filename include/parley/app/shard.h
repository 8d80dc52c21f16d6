/*
 * shard: one event loop thread owning a share of the connections.
 *
 * Each shard has its own SO_REUSEPORT listening socket (the kernel spreads
 * new connections over the shards), its own room table, its own Redis
 * publishing connection and its own id generator. A connection is touched
 * only by the shard that accepted it, so nothing on the per-connection path
 * takes a lock. Other threads reach a shard only through its inbox, a
 * lock-free MPSC queue woken once per batch: the producer that finds it empty
 * writes the shard's eventfd.
 *
 * Per loop iteration (uSockets' and Redis' discipline): callbacks only queue
 * output, closes, presence changes and Redis commands; the shard then writes
 * every dirty connection (batched iovecs, as much as the kernel takes),
 * carries out queued closes and sends the turn's Redis commands. It does so
 * twice per iteration: in the check phase, after the I/O callbacks, and in the
 * prepare phase, after timers and completed writes and before libuv decides
 * how long to sleep, so nothing queued outside an I/O callback waits in poll
 * for the next wake-up. Memory is freed in the close callbacks, never inside
 * the callback that decided it.
 */
#ifndef PARLEY_SHARD_H
#define PARLEY_SHARD_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "parley/base/buf.h"
#include "parley/net/frame.h"
#include "parley/base/idgen.h"
#include "parley/base/mpsc.h"
#include "parley/svc/redis.h"
#include "parley/app/room.h"
#include "parley/base/shardmask.h"
#include "parley/proto/ws.h"

struct pl_server;
struct pl_conn;

/** Kinds of cross-thread events a shard's inbox carries. */
typedef enum {
    PL_EV_BCAST,    /**< a room message from the Redis subscriber */
    PL_EV_DB,       /**< a finished database job */
    PL_EV_SHUTDOWN, /**< close every client with 1001 */
    PL_EV_FINISH,   /**< nothing more will be posted: end the loop once the clients are gone */
    PL_EV_RESYNC,   /**< Redis lost its data: re-announce this shard's connections */
} pl_event_kind_t;

struct pl_bcast;
struct pl_db_job;

/** A node in a shard's inbox. Owned by whatever embeds it (a pl_bcast_t, a job, or the shard). */
typedef struct {
    pl_mpsc_node_t node;
    pl_event_kind_t kind;
    union {
        struct pl_bcast *bcast;
        struct pl_db_job *job;
    };
} pl_event_t;

/** What a broadcast is, which decides who gets it. */
typedef enum {
    PL_BC_ROOM,   /**< subscribers of `room` */
    PL_BC_TYPING, /**< subscribers of `room` except user_a's connections */
    PL_BC_DM,     /**< every connection of user_a (sender) and user_b (recipient) */
} pl_bcast_kind_t;

/**
 * One room message on its way to every shard. Built by the subscriber thread
 * inside its frame's allocation (pl_frame_text_with), with one event per
 * shard; it holds the frame's first reference, which the last shard to finish
 * with it drops: that frees both, once no connection queues the frame either.
 */
typedef struct pl_bcast {
    pl_frame_t *frame; /**< the WebSocket frame every recipient gets */
    int64_t seq;       /**< the room message's seq, 0 for other events */
    pl_bcast_kind_t kind;
    char user_a[129], user_b[129];
    atomic_uint pending; /**< shards that have not processed it yet */
    uint32_t room_len;
    char room[PL_ROOM_MAX + 1];
    pl_event_t ev[]; /**< one per shard */
} pl_bcast_t;

/** An output queue entry: one frame reference. Recycled through the shard's free list. */
typedef struct pl_outq_node {
    struct pl_outq_node *next;
    pl_frame_t *frame;
    int64_t seq; /**< for frames held back while a subscription catches up */
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

/** One shard. Allocated and freed by the server; everything inside is this shard's. */
typedef struct pl_shard {
    struct pl_server *srv;
    int index;
    uv_thread_t thread;
    uv_loop_t loop;
    int listen_fd; /**< bound by the server at start-up, opened by the shard */
    uv_tcp_t listener;
    int wake_fd;    /**< eventfd; written by the producer that finds the inbox empty */
    uv_poll_t wake; /**< watches wake_fd */
    pl_mpsc_t inbox;
    uv_check_t check;
    uv_prepare_t prepare;
    uv_timer_t sweep;
    pl_room_table_t rooms;
    pl_shardmask_counts_t *mask_counts; /**< this shard's share of srv->rooms_mask; owned */
    pl_room_table_t
        users; /**< user id -> this shard's connections of that user (direct messages) */
    uv_timer_t presence_timer; /**< shard 0 only: heartbeat and dead-instance sweep */
    struct pl_conn *conns;     /**< every live connection (doubly linked) */
    struct pl_conn *dirty;     /**< connections with output to write this iteration */
    struct pl_conn *closing;   /**< connections whose close was requested this iteration */
    pl_ws_pool_t ws;
    pl_redis_t redis;
    pl_idgen_t ids;
    pl_buf_t scratch;           /**< reusable encoding buffer (one loop turn at a time) */
    pl_outq_node_t *free_nodes; /**< recycled output queue nodes */
    size_t nfree_nodes;
    int stopping;
    int finishing;
    pl_event_t shutdown_ev, finish_ev, resync_ev;
    atomic_int resync_queued; /**< resync_ev is in the inbox (posted at most once at a time) */
    uint64_t scan_cursor;     /**< shard 0: where the SCAN for stray server_users sets is */
    int ids_ready;            /**< ids' node number came from Redis (see ready_check) */
    uint32_t sync_gen;        /**< generation counter for subscription catch-ups */
    /* Messages wait here, in order, until this shard has seen parley:ready on its Redis
     * connection (session.c): first those Redis bounced, then those that came meanwhile. */
    int redis_ready;
    struct pl_db_job *bounced, *bounced_tail, *waiting, *waiting_tail;
    size_t nwaiting;
    uv_timer_t ready_timer;
    /* Read by other threads (status endpoint); written only by this shard. */
    atomic_long nconns;
    atomic_long nrooms;
    atomic_ulong delivered;
    /* Reads are processed synchronously, so one buffer serves every connection. */
    char rbuf[64 * 1024];
} pl_shard_t;

/**
 * Start the shard's thread: open `listen_fd` on a new loop and serve. `id_node` is its id
 * generator's node from the block the server got from Redis, or -1 if Redis could not be
 * reached: then the shard gets one when its own connection is up, and publishes nothing before.
 * Returns 0 or a negative libuv error; on error nothing was started.
 */
int pl_shard_start(pl_shard_t *s, struct pl_server *srv, int index, int listen_fd, int64_t id_node);

/** Ask the shard to re-announce its connections to Redis (pl_chat_resync). Any thread; a
 *  request while one is pending is the same request. */
void pl_shard_resync(pl_shard_t *s);

/** Post an event from any thread; wakes the shard only if its inbox was empty. */
void pl_shard_post(pl_shard_t *s, pl_event_t *ev);

/** Post, without waking: the caller wakes later with pl_shard_wake (batching). Returns 1 if a wake
 * is owed. */
int pl_shard_post_nowake(pl_shard_t *s, pl_event_t *ev);

/** Wake the shard to drain its inbox. Any thread. */
void pl_shard_wake(pl_shard_t *s);

/** Wait for the shard's thread to end and free what it held. */
void pl_shard_join(pl_shard_t *s);

/** Take an output queue node from the shard's free list (or the heap). NULL on OOM. */
pl_outq_node_t *pl_shard_node_get(pl_shard_t *s);
/** Return one. */
void pl_shard_node_put(pl_shard_t *s, pl_outq_node_t *n);

#endif
