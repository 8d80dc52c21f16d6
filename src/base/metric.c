/*
 * metric: single-writer counters and histograms, and their Prometheus text
 * exposition; see the header. Nothing here runs on a hot path but
 * pl_hist_observe and pl_counter_add, which are inline in the header.
 */
#include "parley/base/metric.h"

#include <stdio.h>

/* Latency buckets: wide enough for a Redis round trip on loopback (~100 us) and for a stalled
 * database batch (seconds); 16 bounds keep the scan short. */
const pl_hist_bounds_t pl_hist_seconds = {
    16,
    {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
     5000000, 10000000},
    1e6,
};

/* Batch sizes: the database pool writes up to PL_DB_BATCH (256) rows at once. */
const pl_hist_bounds_t pl_hist_sizes = {
    9,
    {1, 2, 4, 8, 16, 32, 64, 128, 256},
    1,
};

void pl_hist_snap_add(pl_hist_snap_t *s, const pl_hist_t *h)
{
    for (int i = 0; i <= PL_HIST_MAX; i++)
        s->bucket[i] += pl_counter_get(&h->bucket[i]);
    s->sum += pl_counter_get(&h->sum);
}

void pl_metric_family(pl_buf_t *b, const char *name, const char *type, const char *help)
{
    pl_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void pl_metric_sample(pl_buf_t *b, const char *name, const char *labels, uint64_t value)
{
    if (*labels)
        pl_buf_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)value);
    else
        pl_buf_printf(b, "%s %llu\n", name, (unsigned long long)value);
}

void pl_metric_sample_f(pl_buf_t *b, const char *name, const char *labels, double value)
{
    if (*labels)
        pl_buf_printf(b, "%s{%s} %.15g\n", name, labels, value);
    else
        pl_buf_printf(b, "%s %.15g\n", name, value);
}

void pl_metric_hist(pl_buf_t *b, const char *name, const char *labels, const pl_hist_bounds_t *bnd,
                    const pl_hist_snap_t *s)
{
    const char *sep = *labels ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i < bnd->n; i++) {
        cum += s->bucket[i];
        pl_buf_printf(b, "%s_bucket{%s%sle=\"%.9g\"} %llu\n", name, labels, sep,
                      (double)bnd->le[i] / bnd->scale, (unsigned long long)cum);
    }
    /* Buckets past the layout's are empty unless a writer used a longer layout: count them in
     * +Inf all the same. */
    for (int i = bnd->n; i <= PL_HIST_MAX; i++)
        cum += s->bucket[i];
    pl_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                  (unsigned long long)cum);
    char sum[160], count[160];
    snprintf(sum, sizeof sum, "%s_sum", name);
    snprintf(count, sizeof count, "%s_count", name);
    pl_metric_sample_f(b, sum, labels, (double)s->sum / bnd->scale);
    pl_metric_sample(b, count, labels, cum);
}
