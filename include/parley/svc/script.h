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

/** Append the key names to `b` (which is reset first). */
void pl_key_seq(pl_buf_t *b, const char *room, size_t room_len);
void pl_key_stream(pl_buf_t *b, const char *room, size_t room_len);
void pl_key_cid(pl_buf_t *b, const char *user, const char *cid, size_t cid_len);

#endif
