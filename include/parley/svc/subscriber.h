/*
 * subscriber: the one thread per process that PSUBSCRIBEs `room:*` and
 * hands every room message to the shards.
 *
 * For each message it builds the outgoing WebSocket frame once (the payload
 * published is already the client-facing JSON) and posts one pl_bcast_t,
 * shared by reference, to every shard's inbox. It reads with blocking
 * hiredis and drains everything already buffered before waking the shards,
 * so a burst costs one wake-up per shard, not one per message. On connection
 * loss it reconnects with capped exponential backoff and subscribes again.
 */
#ifndef PARLEY_SUBSCRIBER_H
#define PARLEY_SUBSCRIBER_H

#include <pthread.h>
#include <stdatomic.h>

struct pl_server;

/** The subscriber thread's state; embedded in the server. */
typedef struct {
    struct pl_server *srv;
    pthread_t thread;
    atomic_int connected; /**< PSUBSCRIBE confirmed and the connection up */
    atomic_int stop;
    atomic_int fd; /**< the socket, so pl_subscriber_stop can unblock a read; -1 if none */
} pl_subscriber_t;

/** Start the thread. Returns 0 or a negative errno. */
int pl_subscriber_start(pl_subscriber_t *s, struct pl_server *srv);

/** Ask the thread to stop and wait for it. */
void pl_subscriber_stop(pl_subscriber_t *s);

#endif
