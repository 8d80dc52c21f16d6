/* Unit tests for src/base/shardmask.c, and the room table's on_room hook that drives it. */
#include "parley/app/room.h"
#include "parley/base/shardmask.h"
#include "unit.h"

#include <stdlib.h>

static pl_shardmask_t *mask;
static pl_shardmask_counts_t *counts[3];

static void bits_follow_counts(void)
{
    uint32_t h = pl_room_hash("r1", 2);
    CHECK(pl_shardmask_get(mask, h) == 0);
    pl_shardmask_update(mask, counts[0], 0, h, 1);
    pl_shardmask_update(mask, counts[2], 2, h, 1);
    CHECK(pl_shardmask_get(mask, h) == 0x5);
    /* A second room in the same bucket on shard 0: its bit stays until both are gone. */
    uint32_t same_bucket = h + PL_SHARDMASK_BUCKETS;
    pl_shardmask_update(mask, counts[0], 0, same_bucket, 1);
    pl_shardmask_update(mask, counts[0], 0, h, 0);
    CHECK(pl_shardmask_get(mask, h) == 0x5);
    pl_shardmask_update(mask, counts[0], 0, same_bucket, 0);
    CHECK(pl_shardmask_get(mask, h) == 0x4);
    pl_shardmask_update(mask, counts[2], 2, h, 0);
    CHECK(pl_shardmask_get(mask, h) == 0);
    /* An unmatched "gone" (never present) changes nothing. */
    pl_shardmask_update(mask, counts[1], 1, h, 0);
    CHECK(pl_shardmask_get(mask, h) == 0);
    pl_shardmask_update(mask, counts[1], 1, h, 1);
    CHECK(pl_shardmask_get(mask, h) == 0x2);
    pl_shardmask_update(mask, counts[1], 1, h, 0);
}

/* Every shard count packs its buckets (1..64 bits each) without one touching its neighbours:
 * each shard's bit in the first, a middle and the last bucket reads back alone. */
static void widths(void)
{
    static const int shards[] = {1, 2, 3, 5, 8, 33, 64};
    pl_shardmask_counts_t *c = calloc(1, sizeof *c);
    CHECK(c != NULL);
    CHECK(pl_shardmask_new(0) == NULL);
    CHECK(pl_shardmask_new(65) == NULL);
    for (size_t k = 0; k < sizeof shards / sizeof shards[0]; k++) {
        int n = shards[k];
        pl_shardmask_t *m = pl_shardmask_new(n);
        CHECK(m != NULL);
        if (!m) continue;
        const uint32_t buckets[] = {0, 1, PL_SHARDMASK_BUCKETS / 2, PL_SHARDMASK_BUCKETS - 1};
        for (size_t j = 0; j < 4; j++) {
            uint32_t b = buckets[j];
            for (int sh = 0; sh < n; sh++) {
                pl_shardmask_update(m, c, sh, b, 1);
                CHECK(pl_shardmask_get(m, b) == (uint64_t)1 << sh);
                CHECK(pl_shardmask_get(m, b + 1) == 0 && pl_shardmask_get(m, b - 1) == 0);
                pl_shardmask_update(m, c, sh, b, 0);
                CHECK(pl_shardmask_get(m, b) == 0);
            }
        }
        free(m);
    }
    free(c);
}

/* A count that reaches its ceiling keeps its bit for good: a wasted wake-up, never a missed
 * room. */
static void saturated(void)
{
    pl_shardmask_t *m = pl_shardmask_new(2);
    pl_shardmask_counts_t *c = calloc(1, sizeof *c);
    CHECK(m != NULL && c != NULL);
    if (!m || !c) return;
    for (int i = 0; i < UINT16_MAX; i++)
        pl_shardmask_update(m, c, 1, 7, 1);
    pl_shardmask_update(m, c, 1, 7, 1); /* one more than the count holds */
    for (int i = 0; i < UINT16_MAX + 1; i++)
        pl_shardmask_update(m, c, 1, 7, 0);
    CHECK(pl_shardmask_get(m, 7) == 0x2);
    free(m);
    free(c);
}

/* Wired like a shard: the table reports rooms appearing and going. */
static int shard_index;
static void room_cb(void *ctx, pl_room_t *room, int present)
{
    pl_shardmask_update(mask, ctx, shard_index, room->node.hash, present);
}

static void room_table_hook(void)
{
    pl_room_table_t t;
    pl_room_table_init(&t);
    t.on_room = room_cb;
    t.on_room_ctx = counts[1];
    shard_index = 1;
    pl_sub_t *a = NULL, *b = NULL;
    uint32_t h = pl_room_hash("lobby", 5);
    CHECK(pl_room_join(&t, "lobby", 5, &a, &a));
    CHECK(pl_shardmask_get(mask, h) == 0x2); /* set by the first join */
    CHECK(pl_room_join(&t, "lobby", 5, &b, &b));
    pl_room_leave(&t, &a, a);
    CHECK(pl_shardmask_get(mask, h) == 0x2); /* b is still there */
    pl_room_leave(&t, &b, b);
    CHECK(pl_shardmask_get(mask, h) == 0); /* cleared by the last leave */
    /* Many rooms joined and left: every bit is clear again. */
    pl_sub_t *list = NULL;
    char name[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(name, sizeof name, "room-%d", i);
        CHECK(pl_room_join(&t, name, (size_t)n, &list, &list));
    }
    int missing = 0;
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(name, sizeof name, "room-%d", i);
        if (!(pl_shardmask_get(mask, pl_room_hash(name, (size_t)n)) & 0x2)) missing++;
    }
    CHECK_EQ_INT(missing, 0);
    pl_room_leave_all(&t, &list);
    int set = 0;
    for (uint32_t i = 0; i < PL_SHARDMASK_BUCKETS; i++)
        if (pl_shardmask_get(mask, i)) set++;
    CHECK_EQ_INT(set, 0);
    pl_room_table_free(&t);
}

int main(void)
{
    mask = pl_shardmask_new(3);
    for (int i = 0; i < 3; i++)
        counts[i] = calloc(1, sizeof *counts[i]);
    RUN(bits_follow_counts);
    RUN(widths);
    RUN(saturated);
    RUN(room_table_hook);
    for (int i = 0; i < 3; i++)
        free(counts[i]);
    free(mask);
    UNIT_EXIT();
}
