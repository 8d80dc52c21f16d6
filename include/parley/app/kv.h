/*
 * kv: a shard's road to Redis. On a standalone Redis every command goes on
 * the shard's one connection (svc/redis.h); on a Redis Cluster it goes
 * through the shard's router (svc/cluster.h) to the master serving the slot
 * of the key the caller names, which is the first key the command or script
 * declares (docs/redis.md: every script's keys share one hash slot).
 *
 * A command whose keys span slots cannot run on a cluster: its caller passes
 * no key, and in cluster mode it is refused (-1, callback never called) as if
 * Redis were down, so the caller's usual `unavailable` answer applies.
 *
 * Ownership: the shard embeds its pl_redis_t and, in cluster mode, owns the
 * router kv allocates (pl_kv_start) and frees (pl_kv_free). Everything here
 * runs on the shard's thread, except pl_kv_up.
 */
#ifndef PARLEY_APP_KV_H
#define PARLEY_APP_KV_H

#include <stddef.h>

#include "parley/app/shard.h"

/** Start the shard's Redis: its connection, or a router over `srv->redis_seeds` in cluster
 *  mode. Each new connection (each node's, in a cluster) loads the scripts; the shard's set-up
 *  after a (re)connection runs as pl_publish_redis_up says. 0 or a negative libuv error. */
int pl_kv_start(pl_shard_t *s);

/**
 * Send a command placed by `key[0..key_len)` (ignored on a standalone Redis; NULL: the command's
 * keys span slots, refused on a cluster). Returns 0 and later calls `cb` once (NULL reply: no
 * answer), or -1 without calling it (Redis unreachable).
 */
int pl_kv_command(pl_shard_t *s, const char *key, size_t key_len, pl_redis_cb cb, void *priv,
                  int argc, const char **argv, const size_t *lens);

/** 1 if commands can be sent now: the connection is up, or every slot's master is reachable.
 *  Any thread (for /health and the metrics). */
int pl_kv_up(const pl_shard_t *s);

/** 1 if the shard talks to a Redis Cluster. */
int pl_kv_cluster(const pl_shard_t *s);

/** Write what this loop turn issued (once per turn). */
void pl_kv_flush(pl_shard_t *s);

/** Close the connections (commands in flight get NULL); pl_kv_free once the loop closed them. */
void pl_kv_stop(pl_shard_t *s);

/** Release the router, after the loop ended. */
void pl_kv_free(pl_shard_t *s);

#endif
