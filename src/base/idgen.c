/* idgen: snowflake-style ids; see the header for the layout. */
#include "parley/base/idgen.h"

#define SEQ_MASK ((1u << PL_IDGEN_SEQ_BITS) - 1)
#define NODE_MASK ((1u << PL_IDGEN_NODE_BITS) - 1)

void pl_idgen_init(pl_idgen_t *g, uint32_t node)
{
    g->node = node & NODE_MASK;
    g->last_ms = 0;
    g->seq = 0;
}

uint64_t pl_idgen_next(pl_idgen_t *g, int64_t now_ms)
{
    int64_t t = now_ms - PL_IDGEN_EPOCH_MS;
    if (t < 0) t = 0;
    if (t > g->last_ms) {
        g->last_ms = t;
        g->seq = 0;
    } else if (++g->seq > SEQ_MASK) {
        /* 4096 ids in one ms, or the clock went back: borrow the next ms so
         * ids keep increasing; real time catches up within milliseconds. */
        g->last_ms++;
        g->seq = 0;
    }
    return ((uint64_t)g->last_ms << (PL_IDGEN_NODE_BITS + PL_IDGEN_SEQ_BITS)) |
           ((uint64_t)g->node << PL_IDGEN_SEQ_BITS) | g->seq;
}

int64_t pl_idgen_time_ms(uint64_t id)
{
    return (int64_t)(id >> (PL_IDGEN_NODE_BITS + PL_IDGEN_SEQ_BITS)) + PL_IDGEN_EPOCH_MS;
}
