/*
 * metric: counters and fixed-bucket histograms that one thread writes and
 * any thread reads, and the Prometheus text format (version 0.0.4) they are
 * exposed in (app/metrics.c puts the families together).
 *
 * Single writer: every counter and histogram here has exactly one thread
 * that bumps it (a shard, the subscriber, one database worker). The bump is a
 * relaxed atomic load and store, which compiles to a plain add on x86-64 and
 * arm64 (no lock prefix, no fence), and lets a scrape on another thread read
 * the value without a data race (ThreadSanitizer agrees). Structs holding
 * them are cache-line aligned per writer so that no two writers share a line.
 * Two writers on one counter would lose increments: do not.
 *
 * Histograms keep integer observations (microseconds, items) in fixed
 * buckets; a reader adds them up into a snapshot (pl_hist_snap_t), possibly
 * summing several writers' histograms, and writes the cumulative
 * `_bucket{le=...}`, `_sum` and `_count` series. `_count` is the +Inf
 * bucket of the same snapshot, so the two always agree.
 */
#ifndef PARLEY_BASE_METRIC_H
#define PARLEY_BASE_METRIC_H

#include <stdatomic.h>
#include <stdint.h>

#include "parley/base/buf.h"

/** A counter (or a gauge) with a single writer. */
typedef _Atomic uint64_t pl_counter_t;

/** Add `n` (writer's thread only): a relaxed load and store, no read-modify-write. */
static inline void pl_counter_add(pl_counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/** Set a gauge (writer's thread only). */
static inline void pl_counter_set(pl_counter_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

/** The current value. Any thread. */
static inline uint64_t pl_counter_get(const pl_counter_t *c)
{
    return atomic_load_explicit((pl_counter_t *)c, memory_order_relaxed);
}

/** Most bucket bounds of a histogram (the +Inf bucket comes on top). */
#define PL_HIST_MAX 16

/** A histogram's bucket layout: ascending upper bounds in the observations' unit, and the
 *  divisor that turns that unit into the exposed one (1e6: microseconds exposed as seconds). */
typedef struct {
    int n;
    uint64_t le[PL_HIST_MAX];
    double scale;
} pl_hist_bounds_t;

/** Latencies in microseconds, exposed in seconds: 100 us to 10 s. */
extern const pl_hist_bounds_t pl_hist_seconds;
/** Sizes (items per batch): 1 to 256, powers of two. */
extern const pl_hist_bounds_t pl_hist_sizes;

/** A histogram with a single writer. Zero-initialised memory is an empty one. */
typedef struct {
    pl_counter_t bucket[PL_HIST_MAX + 1]; /**< per bucket, not cumulative; the last is +Inf */
    pl_counter_t sum;                     /**< of the observations, in their unit */
} pl_hist_t;

/** Record `v` (writer's thread only): one scan of at most PL_HIST_MAX bounds, two stores. */
static inline void pl_hist_observe(pl_hist_t *h, const pl_hist_bounds_t *b, uint64_t v)
{
    int i = 0;
    while (i < b->n && v > b->le[i])
        i++;
    pl_counter_add(&h->bucket[i], 1);
    pl_counter_add(&h->sum, v);
}

/** A reader's sum of one or more histograms of the same layout. */
typedef struct {
    uint64_t bucket[PL_HIST_MAX + 1];
    uint64_t sum;
} pl_hist_snap_t;

/** Add `h`'s current values into `s` (zero it first). Any thread. */
void pl_hist_snap_add(pl_hist_snap_t *s, const pl_hist_t *h);

/**
 * Write the HELP and TYPE lines of a family `name` of `type` ("counter", "gauge",
 * "histogram") to `b`. `help` must not contain a backslash or a newline.
 */
void pl_metric_family(pl_buf_t *b, const char *name, const char *type, const char *help);

/** Write one sample `name{labels} value` (`labels`: "" or `k="v",...` without braces). */
void pl_metric_sample(pl_buf_t *b, const char *name, const char *labels, uint64_t value);

/** Write one sample with a floating-point value (seconds, ratios). */
void pl_metric_sample_f(pl_buf_t *b, const char *name, const char *labels, double value);

/** Write a histogram's `name_bucket{labels,le=..}` (cumulative), `name_sum` (in the exposed
 *  unit) and `name_count` from snapshot `s` of layout `bnd`. */
void pl_metric_hist(pl_buf_t *b, const char *name, const char *labels, const pl_hist_bounds_t *bnd,
                    const pl_hist_snap_t *s);

#endif
