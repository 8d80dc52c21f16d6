/*
 * idgen: unique, time-ordered 64-bit ids (message ids, session ids).
 *
 * Layout: 41 bits of milliseconds since PL_IDGEN_EPOCH_MS | 10 bits of node |
 * 12 bits of sequence within the millisecond. Each generator belongs to one
 * thread (a shard); nodes are handed out by Redis at start-up so no two live
 * generators in a cluster share one. Ids from one generator strictly increase,
 * even if the wall clock steps back (the generator then runs on its last time).
 */
#ifndef PARLEY_BASE_IDGEN_H
#define PARLEY_BASE_IDGEN_H

#include <stdint.h>

/** 2024-01-01T00:00:00Z: ids stay positive in int64 until the 2090s. */
#define PL_IDGEN_EPOCH_MS 1704067200000LL
#define PL_IDGEN_NODE_BITS 10
#define PL_IDGEN_SEQ_BITS 12

/** One generator; owned and used by one thread. */
typedef struct {
    uint32_t node;
    int64_t last_ms; /**< time part of the last id, ms since the epoch above */
    uint32_t seq;
} pl_idgen_t;

/** Initialise for `node` (only its low PL_IDGEN_NODE_BITS bits are used). */
void pl_idgen_init(pl_idgen_t *g, uint32_t node);

/** The next id at wall time `now_ms` (unix ms). */
uint64_t pl_idgen_next(pl_idgen_t *g, int64_t now_ms);

/** The unix-ms time an id was made at. */
int64_t pl_idgen_time_ms(uint64_t id);

#endif
