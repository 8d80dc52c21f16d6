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

/** Buckets (a power of two). */
#define PL_SHARDMASK_BUCKETS 16384

/** The instance-wide bits: each bucket has `width` bits (the shard count rounded up to a power
 *  of two, so a bucket never straddles two words), bucket b's at bit b * width. Two shards
 *  need 4 KiB, 64 shards 128 KiB. Made by pl_shardmask_new, freed with free(). */
typedef struct {
    unsigned width;
    _Atomic uint64_t words[];
} pl_shardmask_t;

/** One shard's rooms per bucket; zero-initialised. A count that reaches UINT16_MAX stays there
 *  (its bucket's bit stays set: at worst a wake-up for nothing, never a missed room), which
 *  takes more than a billion rooms spread evenly. */
typedef struct {
    uint16_t count[PL_SHARDMASK_BUCKETS];
} pl_shardmask_counts_t;

/** A mask for `shards` (1..64) shards, every bucket empty; NULL if out of memory or `shards`
 *  is out of range. */
pl_shardmask_t *pl_shardmask_new(int shards);

/** Shard `shard` (0..shards-1) gained (present = 1) or lost (0) a room whose name hashes to
 *  `hash` (pl_room_hash). */
void pl_shardmask_update(pl_shardmask_t *m, pl_shardmask_counts_t *c, int shard, uint32_t hash,
                         int present);

/** The shards that may have subscribers of a room whose name hashes to `hash`: bit i is shard
 *  i. Any thread. */
static inline uint64_t pl_shardmask_get(pl_shardmask_t *m, uint32_t hash)
{
    uint32_t pos = (hash & (PL_SHARDMASK_BUCKETS - 1)) * m->width;
    uint64_t w = atomic_load(&m->words[pos >> 6]);
    if (m->width == 64) return w;
    return (w >> (pos & 63)) & (((uint64_t)1 << m->width) - 1);
}

#endif
