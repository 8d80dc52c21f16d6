/*
 * chat: presence, typing and read receipts, kept in Redis for the whole
 * cluster (docs/redis.md), and the mirror of memberships presence relies on.
 * Each change is one Lua script (svc/script.h) run on the calling shard's
 * Redis connection; the events it publishes travel on room channels like
 * messages. Everything runs on the calling shard's thread; nothing blocks.
 */
#ifndef PARLEY_APP_CHAT_H
#define PARLEY_APP_CHAT_H

#include <stdint.h>

#include "parley/app/shard.h"
#include "parley/app/wire.h"
#include "parley/proto/conn.h"

/** Seconds an instance's heartbeat key lives; it is refreshed every PL_HEARTBEAT_EVERY_MS. */
#define PL_HEARTBEAT_TTL_S 15
#define PL_HEARTBEAT_EVERY_MS 5000

/** An authenticated connection opened: count it; the user's first anywhere goes online. Delivers
 *  DMs that waited. Queued: sent with the shard's other presence changes of this loop turn by
 *  pl_chat_flush. */
void pl_chat_presence_up(pl_conn_t *c);
/** It closed: the user's last connection anywhere goes offline. Queued like the above. */
void pl_chat_presence_down(pl_conn_t *c);
/** End of turn, before the shard's Redis write: send this turn's presence changes as one script
 *  call. Changes that cannot be sent (Redis down) wait for the resync. */
void pl_chat_flush(pl_shard_t *s);
/**
 * Re-announce this shard's connections to Redis, absolutely: each user it holds with how many
 * connections, the instance's registration, and the users whose connections closed while Redis
 * could not be told. Run when the shard's Redis connection (re)connects and when Redis is found
 * to have lost its data; sends whatever pl_chat_flush had queued first.
 */
void pl_chat_resync(pl_shard_t *s);
struct pl_session;
struct redisReply;
/** The answer to an opening connection's presence change (chat.c or, in a cluster, split.c):
 *  `ok` 0 if Redis did not answer (not counted), `revoked` if the token was refused (the
 *  connection is closed with 4003), `waiting` the direct messages that waited for the user (an
 *  array reply, or NULL). Releases the connection's hold. */
void pl_chat_presence_answered(struct pl_session *ss, int ok, int revoked,
                               const struct redisReply *waiting);
/** Free what the shard's chat state holds (its loop ended). */
void pl_chat_free(pl_shard_t *s);

/** typing_start (start = 1) or typing_stop from the client. */
void pl_chat_typing(pl_conn_t *c, const pl_req_t *req, int start);
/** The connection is closing: stop whatever it is typing. */
void pl_chat_typing_stop_all(pl_conn_t *c);
/** Once a second per connection: expire typing states after 10 s. */
void pl_chat_tick(pl_conn_t *c, uint64_t now);

/** A read position from the client. */
void pl_chat_read(pl_conn_t *c, const pl_req_t *req);

/**
 * `user` became (member = 1) or stopped being a member of `room`: mirror it for presence and the
 * members list; a user who is online as they become a member is announced to the room (presence
 * online); a removal ends the user's subscriptions to the room on every instance, each getting
 * `unsubscribed` with `reason` (NULL: "removed"). `cb`, if not NULL, gets the script's reply once
 * the mirror holds the change (NULL if Redis went away meanwhile). Returns 0, or -1 if Redis is
 * unreachable (cb is then not called).
 */
int pl_chat_member(pl_shard_t *s, const char *room, const char *user, int member,
                   const char *reason, pl_redis_cb cb, void *priv);

/** How long a disconnect's revocation of older tokens is kept (30 days), seconds. */
#define PL_REVOKE_TTL_S 2592000

/**
 * Close every connection of `user` on every instance: each gets server_notice `disconnected`
 * with `reason` (JSON-escaped here), then close code 4003. `revoke`: tokens of the user issued
 * before this second (by iat; one without iat too) are refused from now on, for
 * PL_REVOKE_TTL_S (their connections are closed with 4003 when their presence is counted).
 * `cb` gets the number of instances reached (an integer reply) or NULL. Returns 0, or -1 if
 * Redis is unreachable.
 */
int pl_chat_disconnect(pl_shard_t *s, const char *user, const char *reason, int revoke,
                       pl_redis_cb cb, void *priv);

/**
 * The members of `room` with their online state, from the membership mirror: `cb` gets the
 * script's reply ({count, user, online, ...}, sorted, at most `limit` users; -1 when `asker`, if
 * not empty, is not a member). Returns 0, or -1 if Redis is unreachable (cb is then not called).
 */
int pl_chat_members(pl_shard_t *s, const char *room, const char *asker, int limit, pl_redis_cb cb,
                    void *priv);

/** Shard 0, every PL_HEARTBEAT_EVERY_MS: heartbeat; clean up after dead instances; if Redis had
 *  forgotten this instance, every shard resyncs. */
void pl_chat_presence_sweep(pl_shard_t *s);

#endif
