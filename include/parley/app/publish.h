/*
 * publish: a client's messages, publish first. A message is validated,
 * handed to Redis, which assigns the room's next seq, keeps it in the room's
 * recent stream and publishes it, atomically (svc/script.h); every recipient,
 * the sender included, gets it from the subscriber (deliver.h), so no
 * instance can deliver a message twice. Then the database pool stores it and
 * the sender gets its ack. Messages wait, in order, while this shard's Redis
 * connection is not known to be ready (a new connection, a Redis that lost
 * its data and is being restored: restore.h).
 *
 * Ownership: a message (pl_msg_t) is allocated when the frame arrives and
 * freed when the sender has its ack or error; it holds its connection
 * (pl_conn_hold) meanwhile.
 */
#ifndef PARLEY_APP_PUBLISH_H
#define PARLEY_APP_PUBLISH_H

#include <stdint.h>

#include "parley/app/room.h"
#include "parley/app/shard.h"
#include "parley/app/wire.h"
#include "parley/proto/conn.h"
#include "parley/svc/db.h"

/** A message on its way: the store job and the message it stores, in one allocation. */
typedef struct pl_msg {
    pl_db_store_t store; /**< first: the database job (its msg points at m) */
    pl_db_msg_t m;
    struct pl_msg *next; /**< a waiting list (shard, or a subscription catching up) */
    pl_conn_t *conn;     /**< held */
    pl_shard_t *shard;
    char room[PL_ROOM_MAX + 1];
    char user[PL_WIRE_ID_MAX + 1];
    char cid[PL_CID_MAX + 1];    /**< "" if none */
    char to[PL_WIRE_ID_MAX + 1]; /**< a direct message's recipient, "" for a room message */
    int resent; /**< Redis had it already: a resend of an accepted message (same cid) */
    char text[];
} pl_msg_t;

/** A message frame (a room message or a direct one). */
void pl_publish(pl_conn_t *c, const pl_req_t *req);

/** Publish what a subscription held while it caught up (its own messages), in order. */
void pl_publish_release(pl_shard_t *s, pl_sub_t *sub);

/** The shard's Redis connection came up: load scripts, re-announce, check readiness. */
void pl_publish_redis_up(pl_redis_t *r);

/** Cluster mode: a node's connection came up (after its scripts were sent): re-announce this
 *  shard's connections, check readiness. */
void pl_publish_redis_up_cluster(pl_shard_t *s);

/** Cluster mode with PARLEY_REDIS_WAIT_REPLICAS > 0: room messages are published, and reads of
 *  a room used, only once a replica of the room's master has them (WAIT), so that a failover
 *  cannot take back a seq anyone saw. */
int pl_publish_wait_mode(const pl_shard_t *s);

/** Send WAIT on the node that gave the reply `ac` came with; `cb` gets its answer (judge it with
 *  pl_publish_waited). 0; 1 if there is nothing to wait for (the master has no replica listed:
 *  cb not called); -1 if the node is gone (cb not called). */
int pl_publish_wait(pl_shard_t *s, struct redisAsyncContext *ac, pl_redis_cb cb, void *priv);

/** 1 if a WAIT's reply (on `ac`) says enough replicas have every earlier write. */
int pl_publish_waited(const pl_shard_t *s, struct redisAsyncContext *ac, const void *reply);

/** End of turn, before the Redis write: one WAIT per node for the messages published on it this
 *  turn (wait mode). */
void pl_publish_flush(pl_shard_t *s);

/** Redis has the seqs back (restore done, or none needed): look again. */
void pl_publish_ready_check(pl_shard_t *s);

/** A reply said Redis lost its data (no parley:ready): nothing is published, and parked
 *  catch-ups wait, until this shard sees it ready again (a check is started if none runs). */
void pl_publish_not_ready(pl_shard_t *s);

/** Append `m` to the list `*head`..`*tail` (both NULL when empty). */
static inline void pl_msg_append(pl_msg_t **head, pl_msg_t **tail, pl_msg_t *m)
{
    m->next = NULL;
    if (*tail)
        (*tail)->next = m;
    else
        *head = m;
    *tail = m;
}

#endif
