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

#endif
