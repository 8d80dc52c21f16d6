/* Unit tests for src/base/metric.c: histogram buckets and the Prometheus text they expose. */
#include "parley/base/metric.h"
#include "unit.h"

#include <stdlib.h>

static const pl_hist_bounds_t small = {3, {10, 100, 1000}, 1000};

static void counter_adds(void)
{
    pl_counter_t c = 0;
    pl_counter_add(&c, 3);
    pl_counter_add(&c, 4);
    CHECK_EQ_INT(pl_counter_get(&c), 7);
    pl_counter_set(&c, 2);
    CHECK_EQ_INT(pl_counter_get(&c), 2);
}

static void observe_buckets(void)
{
    pl_hist_t h = {0};
    pl_hist_observe(&h, &small, 0);    /* le 10 */
    pl_hist_observe(&h, &small, 10);   /* le 10: bounds are inclusive */
    pl_hist_observe(&h, &small, 11);   /* le 100 */
    pl_hist_observe(&h, &small, 1000); /* le 1000 */
    pl_hist_observe(&h, &small, 5000); /* +Inf */
    CHECK_EQ_INT(pl_counter_get(&h.bucket[0]), 2);
    CHECK_EQ_INT(pl_counter_get(&h.bucket[1]), 1);
    CHECK_EQ_INT(pl_counter_get(&h.bucket[2]), 1);
    CHECK_EQ_INT(pl_counter_get(&h.bucket[3]), 1);
    CHECK_EQ_INT(pl_counter_get(&h.sum), 6021);
}

/* Two writers' histograms summed, exposed cumulatively, the sum scaled, count == +Inf. */
static void exposition(void)
{
    pl_hist_t a = {0}, b = {0};
    pl_hist_observe(&a, &small, 5);
    pl_hist_observe(&b, &small, 50);
    pl_hist_observe(&b, &small, 50000);
    pl_hist_snap_t s = {0};
    pl_hist_snap_add(&s, &a);
    pl_hist_snap_add(&s, &b);
    pl_buf_t out = {0};
    pl_metric_family(&out, "parley_x_seconds", "histogram", "An example.");
    pl_metric_hist(&out, "parley_x_seconds", "shard=\"0\"", &small, &s);
    pl_metric_hist(&out, "parley_y_seconds", "", &small, &s);
    pl_buf_add(&out, "", 1);
    CHECK_STR(out.data, "# HELP parley_x_seconds An example.\n"
                        "# TYPE parley_x_seconds histogram\n"
                        "parley_x_seconds_bucket{shard=\"0\",le=\"0.01\"} 1\n"
                        "parley_x_seconds_bucket{shard=\"0\",le=\"0.1\"} 2\n"
                        "parley_x_seconds_bucket{shard=\"0\",le=\"1\"} 2\n"
                        "parley_x_seconds_bucket{shard=\"0\",le=\"+Inf\"} 3\n"
                        "parley_x_seconds_sum{shard=\"0\"} 50.055\n"
                        "parley_x_seconds_count{shard=\"0\"} 3\n"
                        "parley_y_seconds_bucket{le=\"0.01\"} 1\n"
                        "parley_y_seconds_bucket{le=\"0.1\"} 2\n"
                        "parley_y_seconds_bucket{le=\"1\"} 2\n"
                        "parley_y_seconds_bucket{le=\"+Inf\"} 3\n"
                        "parley_y_seconds_sum 50.055\n"
                        "parley_y_seconds_count 3\n");
    pl_buf_free(&out);
}

static void samples(void)
{
    pl_buf_t out = {0};
    pl_metric_sample(&out, "parley_a_total", "", 18446744073709551615ULL);
    pl_metric_sample(&out, "parley_b", "code=\"x\"", 0);
    pl_metric_sample_f(&out, "parley_c_seconds", "", 0.25);
    pl_buf_add(&out, "", 1);
    CHECK_STR(out.data, "parley_a_total 18446744073709551615\n"
                        "parley_b{code=\"x\"} 0\n"
                        "parley_c_seconds 0.25\n");
    pl_buf_free(&out);
}

/* The shipped layouts are ascending and fit. */
static void layouts(void)
{
    const pl_hist_bounds_t *ls[] = {&pl_hist_seconds, &pl_hist_sizes};
    for (int k = 0; k < 2; k++) {
        CHECK(ls[k]->n > 0 && ls[k]->n <= PL_HIST_MAX);
        for (int i = 1; i < ls[k]->n; i++)
            CHECK(ls[k]->le[i] > ls[k]->le[i - 1]);
    }
}

int main(void)
{
    RUN(counter_adds);
    RUN(observe_buckets);
    RUN(exposition);
    RUN(samples);
    RUN(layouts);
    UNIT_EXIT();
}
