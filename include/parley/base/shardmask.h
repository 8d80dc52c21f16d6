/*
 * shardmask: which shards of this instance have subscribers of a room, so the
 * subscriber thread wakes only those for a room's message (on a many-core
 * instance most rooms live on a few shards; waking every shard for every
 * message would cost a wake-up per shard and message).
 *
 * A filter, not a set: rooms are hashed into PL_SHARDMASK_BUCKETS buckets,
 * each with one bit per shard that is set while the shard has at least one
 * room in that bucket. Two rooms in one bucket can only wake a shard for
 * nothing; a shard with a subscriber is never left out.
 *
 * Ownership and threads: the server owns the pl_shardmask_t (bits read by the
 * subscriber thread, changed by shards with atomic or/and); each shard owns
 * its pl_shardmask_counts_t and is the only one to touch it. A shard marks a
 * room before it starts the room's catch-up in Redis, so every message
 * published after the catch-up's snapshot finds the bit set.
 */
#ifndef PARLEY_BASE_SHARDMASK_H
#define PARLEY_BASE_SHARDMASK_H

#include <stdatomic.h>
#include <stdint.h>

/** Buckets (a power of two). 16384: 128 KiB of bits per instance, 64 KiB of counts per shard. */
#define PL_SHARDMASK_BUCKETS 16384

/** The instance-wide bits; zero-initialised (calloc) means "no shard has any room". */
typedef struct {
    _Atomic uint64_t bits[PL_SHARDMASK_BUCKETS];
} pl_shardmask_t;

/** One shard's rooms per bucket; zero-initialised. */
typedef struct {
    uint32_t count[PL_SHARDMASK_BUCKETS];
} pl_shardmask_counts_t;

/** Shard `shard` (0..63) gained (present = 1) or lost (0) a room whose name hashes to `hash`
 *  (pl_room_hash). */
void pl_shardmask_update(pl_shardmask_t *m, pl_shardmask_counts_t *c, int shard, uint32_t hash,
                         int present);

/** The shards that may have subscribers of a room whose name hashes to `hash`. Any thread. */
static inline uint64_t pl_shardmask_get(pl_shardmask_t *m, uint32_t hash)
{
    return atomic_load(&m->bits[hash & (PL_SHARDMASK_BUCKETS - 1)]);
}

#endif
