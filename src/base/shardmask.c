/* shardmask: per-bucket counts of a shard's rooms, mirrored as one bit per shard (see header). */
#include "parley/base/shardmask.h"

void pl_shardmask_update(pl_shardmask_t *m, pl_shardmask_counts_t *c, int shard, uint32_t hash,
                         int present)
{
    uint32_t b = hash & (PL_SHARDMASK_BUCKETS - 1);
    uint64_t bit = (uint64_t)1 << shard;
    if (present) {
        if (c->count[b]++ == 0) atomic_fetch_or(&m->bits[b], bit);
    } else if (c->count[b] && --c->count[b] == 0) {
        atomic_fetch_and(&m->bits[b], ~bit);
    }
}
