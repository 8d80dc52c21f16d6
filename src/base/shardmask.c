/* shardmask: per-bucket counts of a shard's rooms, mirrored as one bit per shard (see header). */
#include "parley/base/shardmask.h"

#include <stdlib.h>

pl_shardmask_t *pl_shardmask_new(int shards)
{
    if (shards < 1 || shards > 64) return NULL;
    unsigned width = 1;
    while (width < (unsigned)shards)
        width *= 2;
    size_t words = (size_t)PL_SHARDMASK_BUCKETS * width / 64;
    pl_shardmask_t *m = calloc(1, sizeof *m + words * sizeof m->words[0]);
    if (m) m->width = width;
    return m;
}

void pl_shardmask_update(pl_shardmask_t *m, pl_shardmask_counts_t *c, int shard, uint32_t hash,
                         int present)
{
    uint32_t b = hash & (PL_SHARDMASK_BUCKETS - 1);
    uint32_t pos = b * m->width + (uint32_t)shard;
    uint64_t bit = (uint64_t)1 << (pos & 63);
    if (c->count[b] == UINT16_MAX) return; /* saturated: the bit stays (see header) */
    if (present) {
        if (c->count[b]++ == 0) atomic_fetch_or(&m->words[pos >> 6], bit);
    } else if (c->count[b] && --c->count[b] == 0) {
        atomic_fetch_and(&m->words[pos >> 6], ~bit);
    }
}
