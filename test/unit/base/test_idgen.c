/* Unit tests for src/idgen.c: 41-bit ms | 10-bit node | 12-bit sequence ids. */
#include "parley/base/idgen.h"
#include "unit.h"

#include <stdlib.h>

#define T0 1760000000000LL /* a fixed wall time, unix ms (2025) */
#define SEQ_MASK ((1u << PL_IDGEN_SEQ_BITS) - 1)
#define NODE_OF(id) (((id) >> PL_IDGEN_SEQ_BITS) & ((1u << PL_IDGEN_NODE_BITS) - 1))

static void increasing_at_fixed_time(void)
{
    pl_idgen_t g;
    pl_idgen_init(&g, 7);
    uint64_t prev = pl_idgen_next(&g, T0);
    CHECK_EQ_INT(pl_idgen_time_ms(prev), T0);
    int bad = 0, bad_node = 0;
    for (int i = 1; i < 100000; i++) {
        uint64_t id = pl_idgen_next(&g, T0);
        bad += id <= prev;
        bad_node += NODE_OF(id) != 7;
        prev = id;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(bad_node, 0);
    /* 100k ids at 4096 per ms borrow ceil(100000/4096)-1 = 24 future ms */
    CHECK_EQ_INT(pl_idgen_time_ms(prev), T0 + 24);
    /* once real time passes the borrowed ms, ids resume at real time, seq 0 */
    uint64_t id = pl_idgen_next(&g, T0 + 100);
    CHECK(id > prev);
    CHECK_EQ_INT(pl_idgen_time_ms(id), T0 + 100);
    CHECK_EQ_INT(id & SEQ_MASK, 0);
}

static void sequence_overflow_borrows_next_ms(void)
{
    pl_idgen_t g;
    pl_idgen_init(&g, 1);
    uint64_t first = pl_idgen_next(&g, T0);
    CHECK_EQ_INT(first & SEQ_MASK, 0);
    uint64_t id = first;
    for (unsigned i = 1; i <= SEQ_MASK; i++) {
        id = pl_idgen_next(&g, T0);
        CHECK_EQ_INT(id & SEQ_MASK, i);
        CHECK_EQ_INT(pl_idgen_time_ms(id), T0);
    }
    uint64_t next = pl_idgen_next(&g, T0); /* the 4097th in this ms */
    CHECK(next > id);
    CHECK_EQ_INT(pl_idgen_time_ms(next), T0 + 1);
    CHECK_EQ_INT(next & SEQ_MASK, 0);
    /* real time reaching the borrowed ms must not repeat or go back */
    uint64_t after = pl_idgen_next(&g, T0 + 1);
    CHECK(after > next);
}

static void clock_backwards_still_increases(void)
{
    pl_idgen_t g;
    pl_idgen_init(&g, 3);
    uint64_t prev = pl_idgen_next(&g, T0 + 1000);
    int bad = 0;
    /* step back by a second, then creep forward through the gap */
    for (int64_t t = T0; t < T0 + 1200; t++) {
        uint64_t id = pl_idgen_next(&g, t);
        bad += id <= prev;
        prev = id;
    }
    CHECK_EQ_INT(bad, 0);
    /* a big jump back (and to before the id epoch) too */
    uint64_t a = pl_idgen_next(&g, T0 - 86400000LL);
    uint64_t b = pl_idgen_next(&g, 0);
    CHECK(a > prev);
    CHECK(b > a);
}

static void node_bits_encoded(void)
{
    uint32_t nodes[] = {0, 1, 2, 511, 512, 1023};
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        pl_idgen_t g;
        pl_idgen_init(&g, nodes[i]);
        uint64_t id = pl_idgen_next(&g, T0);
        CHECK_EQ_INT(NODE_OF(id), nodes[i]);
        CHECK_EQ_INT(id & SEQ_MASK, 0);
        CHECK_EQ_INT(id >> (PL_IDGEN_NODE_BITS + PL_IDGEN_SEQ_BITS), T0 - PL_IDGEN_EPOCH_MS);
    }
    /* only the low 10 bits of the node are used; they do not spill into time */
    pl_idgen_t g;
    pl_idgen_init(&g, 1024 + 5);
    uint64_t id = pl_idgen_next(&g, T0);
    CHECK_EQ_INT(NODE_OF(id), 5);
    CHECK_EQ_INT(pl_idgen_time_ms(id), T0);
}

static void time_roundtrip(void)
{
    int64_t times[] = {
        PL_IDGEN_EPOCH_MS, PL_IDGEN_EPOCH_MS + 1, T0,
        1800000000123LL,   3800000000000LL,       PL_IDGEN_EPOCH_MS + ((1LL << 41) - 1)};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++) {
        pl_idgen_t g;
        pl_idgen_init(&g, 1023);
        uint64_t id = pl_idgen_next(&g, times[i]);
        CHECK_EQ_INT(pl_idgen_time_ms(id), times[i]);
        CHECK((int64_t)id >= 0); /* stays positive in int64 */
    }
    /* increasing times give increasing ids regardless of node */
    pl_idgen_t a, b;
    pl_idgen_init(&a, 1023);
    pl_idgen_init(&b, 0);
    CHECK(pl_idgen_next(&b, T0 + 1) > pl_idgen_next(&a, T0));
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void different_nodes_never_collide(void)
{
    enum { N = 10000 };
    static uint64_t ids[2 * N];
    pl_idgen_t a, b;
    pl_idgen_init(&a, 1);
    pl_idgen_init(&b, 2);
    for (int i = 0; i < N; i++) { /* same ms for both, overflowing sequences */
        ids[2 * i] = pl_idgen_next(&a, T0);
        ids[2 * i + 1] = pl_idgen_next(&b, T0);
    }
    qsort(ids, 2 * N, sizeof *ids, cmp_u64);
    int dup = 0;
    for (int i = 1; i < 2 * N; i++)
        dup += ids[i] == ids[i - 1];
    CHECK_EQ_INT(dup, 0);
}

int main(void)
{
    RUN(increasing_at_fixed_time);
    RUN(sequence_overflow_borrows_next_ms);
    RUN(clock_backwards_still_increases);
    RUN(node_bits_encoded);
    RUN(time_roundtrip);
    RUN(different_nodes_never_collide);
    UNIT_EXIT();
}
