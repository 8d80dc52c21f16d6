/* mpsc: Treiber-stack push, exchange-all pop; see the header. */
#include "parley/base/mpsc.h"

int pl_mpsc_push(pl_mpsc_t *q, pl_mpsc_node_t *n)
{
    pl_mpsc_node_t *old = atomic_load_explicit(&q->head, memory_order_relaxed);
    do {
        n->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&q->head, &old, n, memory_order_release,
                                                    memory_order_relaxed));
    return old == NULL;
}

pl_mpsc_node_t *pl_mpsc_take_all(pl_mpsc_t *q)
{
    pl_mpsc_node_t *n = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
    /* The list is newest first; reverse it into push order. */
    pl_mpsc_node_t *prev = NULL;
    while (n) {
        pl_mpsc_node_t *next = n->next;
        n->next = prev;
        prev = n;
        n = next;
    }
    return prev;
}
