/*
 * subscriber: one thread that holds a Redis Pub/Sub connection (blocking
 * hiredis) and hands every message it receives to the application's
 * callback, on this thread. It reads everything Redis has already sent
 * before blocking again and tells the application when it is about to block
 * (on_idle), so a burst can be handed on with one wake-up per receiver. On
 * connection loss it reconnects with capped exponential backoff and sends its
 * subscribe commands again.
 *
 * Replies are read into one reply arena (reply.h), emptied after each
 * message: no allocation per message. What a message means, and where it
 * goes, is the application's (it gets the channel and payload, valid during
 * the call).
 */
#ifndef PARLEY_SVC_SUBSCRIBER_H
#define PARLEY_SVC_SUBSCRIBER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "parley/base/metric.h"
#include "parley/svc/redis.h"

struct redisContext;

/** The application's side, called on the subscriber thread. */
typedef struct pl_subscriber_handlers {
    /** A message on `chan` (for a pattern subscription `pattern` is set). */
    void (*on_message)(void *ud, const char *chan, size_t chan_len, const char *payload, size_t len,
                       int pattern);
    /** Everything received so far was handed over: the thread blocks next. */
    void (*on_idle)(void *ud);
    /** Connected, before anything is subscribed: the application may send commands on `c`
     *  (blocking hiredis, replies freed with freeReplyObject). `again` as below. NULL: none. */
    void (*on_connected)(void *ud, struct redisContext *c, int again);
    /** Every subscription is confirmed. `again`: after a lost connection, so whatever was
     *  published meanwhile was not received (NULL: not told). */
    void (*on_subscribed)(void *ud, int again);
} pl_subscriber_handlers_t;

/** Most subscribe commands one subscriber sends. */
#define PL_SUBSCRIBER_CMDS 4

/** The subscriber thread's state; embedded in its owner. */
typedef struct {
    const pl_redis_addr_t *addr;
    const pl_subscriber_handlers_t *h;
    void *ud;
    const char *cmds[PL_SUBSCRIBER_CMDS]; /**< e.g. "PSUBSCRIBE room:*"; borrowed */
    int ncmds;
    pthread_t thread;
    atomic_int connected; /**< every subscription confirmed and the connection up */
    atomic_int stop;
    atomic_int fd; /**< the socket, so pl_subscriber_stop can unblock a read; -1 if none */
    pl_counter_t reconnects; /**< subscribed again after a loss; written by the thread only */
    pl_counter_t messages;   /**< messages and pmessages received; written by the thread only */
} pl_subscriber_t;

/**
 * Start the thread: connect to `addr`, send `cmds` (each a (P)SUBSCRIBE with its
 * arguments, space-separated; borrowed for the subscriber's life), hand messages to `h`.
 * Returns 0 or a negative errno.
 */
int pl_subscriber_start(pl_subscriber_t *s, const pl_redis_addr_t *addr, const char *const *cmds,
                        int ncmds, const pl_subscriber_handlers_t *h, void *ud);

/** Ask the thread to stop and wait for it: afterwards no callback runs. */
void pl_subscriber_stop(pl_subscriber_t *s);

#endif
