/*
 * mpsc: a lock-free multi-producer, single-consumer queue of intrusive nodes.
 *
 * Producers push with one CAS onto a LIFO list; the consumer takes the whole
 * list with one exchange and reverses it, so it sees nodes in push order (and
 * each producer's nodes in the order that producer pushed them). A push that
 * finds the queue empty returns 1: that producer, and only it, must wake the
 * consumer (an eventfd write), so a consumer is woken once per batch, not per
 * node. The queue owns nothing: nodes belong to whatever embeds them.
 */
#ifndef PARLEY_BASE_MPSC_H
#define PARLEY_BASE_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

/** Embed in whatever crosses threads. */
typedef struct pl_mpsc_node {
    struct pl_mpsc_node *next;
} pl_mpsc_node_t;

/** The queue; zero-initialised is empty. */
typedef struct {
    _Atomic(pl_mpsc_node_t *) head;
} pl_mpsc_t;

/** Initialise an empty queue. */
static inline void pl_mpsc_init(pl_mpsc_t *q)
{
    atomic_init(&q->head, NULL);
}

/** Push from any thread. Returns 1 if the queue was empty (wake the consumer), else 0. */
int pl_mpsc_push(pl_mpsc_t *q, pl_mpsc_node_t *n);

/**
 * Consumer only: take every queued node, oldest first, as a NULL-terminated
 * list linked through `next`. NULL if empty.
 */
pl_mpsc_node_t *pl_mpsc_take_all(pl_mpsc_t *q);

#endif
