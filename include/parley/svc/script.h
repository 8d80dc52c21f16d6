/*
 * script: the Lua scripts that make Redis the one place a room's order is
 * decided, and the names of the keys they use.
 *
 * PUBLISH (per message): deduplicate by sender + cid, INCR the room's seq,
 * XADD the message to the room's capped stream of recent messages and
 * PUBLISH it to room:{room}, all in one atomic step, so two instances can
 * never reorder or reuse a seq. SYNC (per subscribe): the room's current seq
 * and the stream entries after a given seq, read atomically.
 *
 * Keys (docs/redis.md): parley:seq:{room} (counter), parley:stream:{room}
 * (stream, ids <seq>-0, field m = the frame's JSON),
 * parley:cid:{len(user)}:{user}:{cid} ("id:seq:ts", expires after a day),
 * parley:ready (exists once the seqs are known to be right: a Redis that lost
 * its data has none, and both scripts refuse to run until the seqs and
 * recent cids are restored from PostgreSQL).
 */
#ifndef PARLEY_SVC_SCRIPT_H
#define PARLEY_SVC_SCRIPT_H

#include <stddef.h>

#include "parley/base/buf.h"
#include "parley/svc/redis.h"

/** The scripts. */
typedef enum {
    PL_SCRIPT_PUBLISH,
    PL_SCRIPT_SYNC,
    PL_SCRIPT_PRESENCE,
    PL_SCRIPT_SWEEP,
    PL_SCRIPT_DM,
    PL_SCRIPT_TYPING,
    PL_SCRIPT_READ,
    PL_SCRIPT_RESET,
    PL_SCRIPT_RESYNC,
    PL_SCRIPT_UNREGISTER,
    PL_SCRIPT_MEMBER,
    PL_SCRIPT_MEMBERS,
    PL_SCRIPT_KICK,
    PL_SCRIPT_CUSER,     /**< cluster: a presence change's step in the user's slot */
    PL_SCRIPT_CMEMBER,   /**< cluster: a membership's step in the user's slot */
    PL_SCRIPT_CGONE,     /**< cluster: the sweep's step in a user's slot */
    PL_SCRIPT_CSERVERS,  /**< cluster: a user's instances (and a DM queued, or a revocation) */
    PL_SCRIPT_CTOSERVER, /**< cluster: a frame to one instance's log and channel */
    PL_SCRIPT_CMEMBERS,  /**< cluster: a room's members list, the room's step */
    PL_SCRIPT_COUNT
} pl_script_t;

/** The key whose presence says Redis' seqs can be trusted. */
#define PL_KEY_READY "parley:ready"

/** Most entries an instance's log of server:{id} frames keeps (app/srvlog.h), about. */
#define PL_SRVLOG_MAX 10000
/** And how long it is kept after its last entry, seconds. */
#define PL_SRVLOG_TTL_S 3600

/** How long a sender's cid is remembered for deduplication, seconds. */
#define PL_CID_TTL_S 86400

/** Compute the scripts' SHA-1s. Call once before any shard starts. Returns 0 or -1. */
int pl_script_init(void);
/** A script's Lua source. */
const char *pl_script_source(pl_script_t s);
/** Its SHA-1, 40 lowercase hex digits. */
const char *pl_script_sha(pl_script_t s);
/** SCRIPT LOAD every script on `r` (after each connect; replies are ignored). */
void pl_script_load_all(pl_redis_t *r);

/** Name keys for a Redis Cluster from now on (1), or for one Redis (0, the default): set once
 *  at start-up, before any shard runs. In a cluster every key of a room carries the hash tag
 *  {r:<room>}, so one script may touch them all (docs/redis.md, "Redis Cluster"). */
void pl_key_set_cluster(int on);
/** What pl_key_set_cluster set. */
int pl_key_cluster(void);

/* Key names, written into `b` (which is reset first). */
/** The room's seq counter: parley:seq:<room>, or parley:{r:<room>}:seq in a cluster. */
void pl_key_seq(pl_buf_t *b, const char *room, size_t room_len);
/** The room's stream of recent messages: parley:stream:<room> (parley:{r:<room>}:stream). */
void pl_key_stream(pl_buf_t *b, const char *room, size_t room_len);
/** What says the room's seq can be trusted: parley:ready, one key for all rooms on one Redis;
 *  parley:{r:<room>}:ready in a cluster, where data is lost per node. */
void pl_key_ready(pl_buf_t *b, const char *room, size_t room_len);
/** A sender's cid record: parley:cid:<len(user)>:<user>:<cid>; in a cluster it lives with the
 *  room it was sent to, parley:{r:<room>}:cid:<len(user)>:<user>:<cid>. */
void pl_key_cid(pl_buf_t *b, const char *room, size_t room_len, const char *user, const char *cid,
                size_t cid_len);
/** The room's channel: room:<room>, or the shard channel room:{r:<room>} in a cluster. */
void pl_key_room_chan(pl_buf_t *b, const char *room, size_t room_len);
/** The room a channel named by pl_key_room_chan is for: 0 and *room, *room_len (pointing into
 *  `chan`), or -1 if `chan` is not a room channel. */
int pl_key_room_of_chan(const char *chan, size_t len, const char **room, size_t *room_len);
/** The command that publishes on it: PUBLISH, or SPUBLISH in a cluster. */
const char *pl_key_publish_cmd(void);
/** The room's read positions: <pfx>read:<room> (<pfx>{r:<room>}:read). */
void pl_key_read(pl_buf_t *b, const char *pfx, const char *room, size_t room_len);
/** A user's typing state in a room, `what` "typing:" or its rate limit "typing_rl:":
 *  <pfx><what><room>:<user> (<pfx>{r:<room>}:<what without ':'>:<user>). */
void pl_key_typing(pl_buf_t *b, const char *pfx, const char *what, const char *room,
                   size_t room_len, const char *user);

/** How many buckets the online set is spread over in a cluster (every connection and
 *  disconnect anywhere writes to it: one key would make one master everyone's). */
#define PL_KEY_ONLINE_BUCKETS 64

/** Cluster mode: <pfx>{u:<user>}:<what>, a key in the user's slot ("user", "rooms", "offline",
 *  "revoked"). */
void pl_key_user(pl_buf_t *b, const char *pfx, const char *user, const char *what);
/** Cluster mode: <pfx>{s:<server>}:<what>, a key in an instance's slot ("server", "users"). */
void pl_key_server(pl_buf_t *b, const char *pfx, const char *server, const char *what);
/** An instance's channel, where its direct messages and disconnects arrive: server:<server>, or
 *  the shard channel server:{s:<server>} in a cluster (the slot of the instance's keys). */
void pl_key_server_chan(pl_buf_t *b, const char *server);
/** Cluster mode: the online bucket of `user`, <pfx>{o:<k>}:online, k its slot mod
 *  PL_KEY_ONLINE_BUCKETS. */
void pl_key_online(pl_buf_t *b, const char *pfx, const char *user);
/** The set of a room's members presence events go to: <pfx>room_participants:<room>, or
 *  <pfx>{r:<room>}:participants in a cluster. */
void pl_key_participants(pl_buf_t *b, const char *pfx, const char *room, size_t room_len);

#endif
