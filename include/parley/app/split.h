/*
 * split: the chat-state changes that span hash slots, as the single-slot
 * steps a Redis Cluster can run (docs/redis.md, "Work that spans slots").
 * Used in cluster mode only: on one Redis each change stays one script (chat.c).
 *
 * A presence change: the user's slot first (the count, the revocation check,
 * the waiting direct messages, the user's rooms: the authoritative step),
 * then the online bucket, the instance's user set, and a presence event on
 * each of the user's rooms' channels. A step after the first that fails
 * leaves a bucket or the instance's set behind the user's hash, which the
 * next resync restates; a lost event is not repeated, as a lost live frame
 * is not.
 *
 * Ownership: each step's record is allocated here and freed by its reply.
 */
#ifndef PARLEY_APP_SPLIT_H
#define PARLEY_APP_SPLIT_H

#include "parley/app/shard.h"

struct pl_session;

/** How often a direct message's failed instance step is tried again, in ms, and how often in
 *  all: 10 s, more than a failover takes with cluster-node-timeout at its usual 5 s or less. */
#define PL_SPLIT_RETRY_MS 100
#define PL_SPLIT_TRIES 100

/** Send one queued presence change (`op` "u<iat>", "d"; `ss`, the opening connection's session,
 *  or NULL). On failure the session is answered as not counted (pl_chat_presence_answered). */
void pl_split_presence(pl_shard_t *s, const char *op, const char *user, struct pl_session *ss);

/** Restate this shard's connections: each user it holds with its count, and every user of the
 *  instance's set this shard holds none of (its count here becomes 0); refreshes the heartbeat. */
void pl_split_resync(pl_shard_t *s);

/** The instance's heartbeat and registration (shard 0, every PL_HEARTBEAT_EVERY_MS). */
void pl_split_heartbeat(pl_shard_t *s);

/**
 * The sweep (shard 0, after each heartbeat): every registered instance whose heartbeat expired
 * loses its connection counts, user by user in each user's slot (a user left with none anywhere
 * goes offline, with the event), then its user set and registration. At its first run it does
 * the same for this instance's previous runs under its id (the counts name the run), keeping
 * this run's.
 */
void pl_split_sweep(pl_shard_t *s);

/** pl_chat_member in cluster mode: the user's slot, then the room's. `cb` gets the room step's
 *  reply (NULL if unanswered). 0, or -1 (cb not called) if Redis is unreachable. */
int pl_split_member(pl_shard_t *s, const char *room, const char *user, int member,
                    const char *reason, pl_redis_cb cb, void *priv);

/**
 * A direct message's delivery in cluster mode, after the conversation's step stored it
 * (`frame`, the message frame both users' connections get, copied): the recipient's slot (its
 * instances; the offline queue if it has none), the sender's (its instances), then each
 * instance's slot (its log and channel). An instance step that fails (its master lost, a
 * failover under way) is tried again every PL_SPLIT_RETRY_MS, up to PL_SPLIT_TRIES times;
 * after that it is logged, and the message stays in the conversation's stream and history.
 */
void pl_split_dm(pl_shard_t *s, const char *from, const char *to, const char *frame, size_t len);

/** Release the steps waiting to be tried again (the shard's exit, after its loop stopped). */
void pl_split_free(pl_shard_t *s);

/**
 * pl_chat_disconnect in cluster mode: the user's slot (the revocation if `revoke`, and the
 * user's instances), the registered instances, then each instance's slot. `cb` gets an integer
 * reply, how many subscribers got the notice, or NULL if the user's step went unanswered
 * (nothing revoked). 0, or -1 (cb not called) if Redis is unreachable.
 */
int pl_split_kick(pl_shard_t *s, const char *user, const char *frame, size_t len, int revoke,
                  pl_redis_cb cb, void *priv);

/**
 * pl_chat_members in cluster mode: the room's slot (the sorted members, or -1 for an asker who
 * is not one), then each listed user's online bucket. `cb` gets a reply shaped as the one-Redis
 * script's, {count, user1, online1, ...} or the integer -1, or NULL if a step went unanswered.
 * 0, or -1 (cb not called) if Redis is unreachable.
 */
int pl_split_members(pl_shard_t *s, const char *room, const char *asker, int limit, pl_redis_cb cb,
                     void *priv);

#endif
