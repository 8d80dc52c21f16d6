/* Unit tests for src/mpsc.c: push order, the wake-up signal, and a
 * two-producer stress run against a concurrently draining consumer. */
#include "parley/base/mpsc.h"
#include "unit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    pl_mpsc_node_t node; /* first member: a node pointer is an item pointer */
    uint32_t producer;
    uint32_t seq;
} item_t;

static void empty_queue(void)
{
    pl_mpsc_t q;
    pl_mpsc_init(&q);
    CHECK(pl_mpsc_take_all(&q) == NULL);
    pl_mpsc_t z = {NULL}; /* zero-initialised is empty too ({0}: clang -Wint-conversion) */
    CHECK(pl_mpsc_take_all(&z) == NULL);
}

static void single_thread_order(void)
{
    pl_mpsc_t q;
    pl_mpsc_init(&q);
    item_t it[5];
    for (uint32_t i = 0; i < 5; i++) {
        it[i].seq = i;
        pl_mpsc_push(&q, &it[i].node);
    }
    pl_mpsc_node_t *n = pl_mpsc_take_all(&q);
    uint32_t expect = 0;
    for (; n; n = n->next) {
        CHECK_EQ_INT(((item_t *)n)->seq, expect);
        expect++;
    }
    CHECK_EQ_INT(expect, 5);
    CHECK(pl_mpsc_take_all(&q) == NULL);

    /* a single node comes back alone, NULL-terminated */
    pl_mpsc_push(&q, &it[2].node);
    n = pl_mpsc_take_all(&q);
    CHECK(n == &it[2].node);
    CHECK(n->next == NULL);
}

static void push_returns_1_only_when_empty(void)
{
    pl_mpsc_t q;
    pl_mpsc_init(&q);
    item_t it[4];
    CHECK_EQ_INT(pl_mpsc_push(&q, &it[0].node), 1);
    CHECK_EQ_INT(pl_mpsc_push(&q, &it[1].node), 0);
    CHECK_EQ_INT(pl_mpsc_push(&q, &it[2].node), 0);
    CHECK(pl_mpsc_take_all(&q) != NULL);
    CHECK_EQ_INT(pl_mpsc_push(&q, &it[3].node), 1); /* empty again after take_all */
    CHECK_EQ_INT(pl_mpsc_push(&q, &it[0].node), 0);
    pl_mpsc_node_t *n = pl_mpsc_take_all(&q);
    CHECK(n == &it[3].node && n->next == &it[0].node && n->next->next == NULL);
}

/* ---- stress ---- */

#define PER_PRODUCER 1000000u

typedef struct {
    pl_mpsc_t *q;
    item_t *items;
    uint32_t id;
    _Atomic unsigned *wakes;
} producer_t;

static void *produce(void *arg)
{
    producer_t *p = arg;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        p->items[i].producer = p->id;
        p->items[i].seq = i;
        if (pl_mpsc_push(p->q, &p->items[i].node)) atomic_fetch_add(p->wakes, 1);
    }
    return NULL;
}

static void two_producers_concurrent_consumer(void)
{
    pl_mpsc_t q;
    pl_mpsc_init(&q);
    _Atomic unsigned wakes = 0;
    item_t *items[2];
    uint8_t *seen[2];
    producer_t pr[2];
    pthread_t th[2];
    for (uint32_t k = 0; k < 2; k++) {
        items[k] = calloc(PER_PRODUCER, sizeof(item_t));
        seen[k] = calloc(PER_PRODUCER, 1);
        pr[k] = (producer_t){&q, items[k], k, &wakes};
    }
    for (int k = 0; k < 2; k++)
        CHECK_EQ_INT(pthread_create(&th[k], NULL, produce, &pr[k]), 0);

    uint64_t got = 0, dup = 0, order = 0, foreign = 0, batches = 0;
    int64_t next[2] = {0, 0};
    time_t deadline = time(NULL) + 30; /* a lost node must fail the test, not hang it */
    int timed_out = 0;
    while (got < 2ull * PER_PRODUCER) {
        pl_mpsc_node_t *n = pl_mpsc_take_all(&q);
        if (!n) {
            if (time(NULL) > deadline) {
                timed_out = 1;
                break;
            }
            continue;
        }
        batches++;
        while (n) {
            pl_mpsc_node_t *nx = n->next; /* read before anything else: nodes are not reused */
            item_t *it = (item_t *)n;
            uint32_t p = it->producer;
            if (p > 1 || it != &items[p][it->seq]) {
                foreign++;
            } else {
                if (seen[p][it->seq]) dup++;
                seen[p][it->seq] = 1;
                if ((int64_t)it->seq != next[p]) order++;
                next[p] = (int64_t)it->seq + 1;
            }
            got++;
            n = nx;
        }
    }
    for (int k = 0; k < 2; k++)
        pthread_join(th[k], NULL);
    CHECK(!timed_out);
    CHECK(pl_mpsc_take_all(&q) == NULL); /* nothing extra */
    uint64_t missing = 0;
    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; i < PER_PRODUCER; i++)
            missing += !seen[k][i];
    CHECK_EQ_INT(got, 2ull * PER_PRODUCER);
    CHECK_EQ_INT(foreign, 0);
    CHECK_EQ_INT(dup, 0);
    CHECK_EQ_INT(missing, 0);
    CHECK_EQ_INT(order, 0);
    /* every batch was announced by exactly one push that found the queue empty */
    CHECK_EQ_INT(atomic_load(&wakes), batches);
    for (int k = 0; k < 2; k++) {
        free(items[k]);
        free(seen[k]);
    }
}

int main(void)
{
    RUN(empty_queue);
    RUN(single_thread_order);
    RUN(push_returns_1_only_when_empty);
    RUN(two_producers_concurrent_consumer);
    UNIT_EXIT();
}
