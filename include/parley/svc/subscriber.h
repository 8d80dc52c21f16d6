/*
 * subscriber: one thread that holds a Redis Pub/Sub connection (blocking
 * hiredis under poll) and hands every message it receives to the
 * application's callback, on this thread. It reads everything Redis has
 * already sent before waiting again and tells the application when it is
 * about to wait (on_idle), so a burst can be handed on with one wake-up per
 * receiver. On connection loss it reconnects with capped exponential backoff
 * and sends its subscriptions again.
 *
 * Two kinds of subscription: the fixed commands given at start (e.g.
 * "PSUBSCRIBE room:*"), and counted channels any thread asks for while it
 * runs (pl_subscriber_chan): a channel is SUBSCRIBEd while more adds than
 * drops were asked for, UNSUBSCRIBEd when they balance, and an add is handed
 * back once the subscription is in effect, so its owner knows from when on
 * every message published on the channel arrives. Requests cross threads on
 * a lock-free queue (base/mpsc.h) with an eventfd to wake the thread.
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
#include "parley/base/mpsc.h"
#include "parley/svc/redis.h"
#include "parley/svc/slots.h"

struct redisContext;
struct pl_subscriber_chans;

/** Longest channel name a pl_subscriber_chan_t carries, in bytes. */
#define PL_SUBSCRIBER_CHAN_MAX 160

/**
 * A request to add or drop one reference to a channel subscription. Ownership: allocated by
 * the caller, owned by the subscriber from pl_subscriber_chan until it hands it back through
 * on_chan (exactly once), the caller's again after that.
 */
typedef struct pl_subscriber_chan {
    pl_mpsc_node_t node;
    struct pl_subscriber_chan *wnext; /**< the subscriber's: waiting for a confirmation */
    int add;                          /**< 1: add a reference; 0: drop one */
    size_t len;
    char name[PL_SUBSCRIBER_CHAN_MAX + 1];
} pl_subscriber_chan_t;

/** The application's side, called on the subscriber thread (on_chan: see there). */
typedef struct pl_subscriber_handlers {
    /** A message on `chan` (for a pattern subscription `pattern` is set). */
    void (*on_message)(void *ud, const char *chan, size_t chan_len, const char *payload, size_t len,
                       int pattern);
    /** Everything received so far was handed over: the thread waits next. */
    void (*on_idle)(void *ud);
    /** Connected, before anything is subscribed: the application may send commands on `c`
     *  (blocking hiredis, replies freed with freeReplyObject). `again` as below. NULL: none. */
    void (*on_connected)(void *ud, struct redisContext *c, int again);
    /** Every subscription is confirmed. `again`: after a lost connection, so whatever was
     *  published meanwhile was not received (NULL: not told). */
    void (*on_subscribed)(void *ud, int again);
    /**
     * The subscriber is done with `req`, which is the caller's again. An add with `ok` 1: the
     * channel's subscription is in effect (everything published on it from now on arrives), or
     * the connection is down (then on_subscribed with `again` follows the resubscription). `ok`
     * 0: the subscriber stopped first; then this may run on the thread that called
     * pl_subscriber_chan or pl_subscriber_stop. A drop: `ok` 1. NULL only if never asked.
     */
    void (*on_chan)(void *ud, pl_subscriber_chan_t *req, int ok);
    /** Cluster mode: `chan` (held by some add) is subscribed again after its master was lost or
     *  its slot moved, now on the master at `host`:`port`; whatever was published on it
     *  meanwhile was not received. NULL: not told per channel, on_subscribed(again 1) instead. */
    void (*on_chan_gap)(void *ud, const char *chan, size_t len, const char *host, int port);
} pl_subscriber_handlers_t;

/** Most fixed subscribe commands one subscriber sends. */
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
    atomic_int closed; /**< the thread is gone: requests are handed back at once */
    atomic_int fd;     /**< the socket, so pl_subscriber_stop can unblock a read; -1 if none */
    int wake_fd;       /**< eventfd: requests are queued, or stop */
    int started;       /**< the thread runs */
    pl_mpsc_t requests;
    struct pl_subscriber_chans *chans; /**< the thread's: counted channels */
    pl_counter_t reconnects; /**< subscribed again after a loss; written by the thread only */
    pl_counter_t messages;   /**< messages and pmessages received; written by the thread only */
    pl_counter_t channels;   /**< gauge: counted channels subscribed; written by the thread */
    int cluster;             /**< Redis Cluster: SSUBSCRIBE on each channel's master */
    const pl_slots_node_t *seeds; /**< cluster mode: where to read the slot map; borrowed */
    int nseeds;
    struct pl_subscriber_nodes *nodes; /**< cluster mode, the thread's: one connection per master */
} pl_subscriber_t;

/**
 * Set up `s` to subscribe on `addr` with `cmds` (each a (P)SUBSCRIBE of one channel or
 * pattern, space-separated; borrowed for the subscriber's life) and hand messages to `h`. No
 * thread yet: requests made from now on wait for it. Returns 0 or a negative errno (then
 * nothing is held).
 */
int pl_subscriber_init(pl_subscriber_t *s, const pl_redis_addr_t *addr, const char *const *cmds,
                       int ncmds, const pl_subscriber_handlers_t *h, void *ud);

/**
 * Set up `s` for a Redis Cluster: counted channels only (sharded Pub/Sub has no pattern form),
 * each SSUBSCRIBEd on the master serving its slot (pl_slots_key of its name, so a channel named
 * with a hash tag lives with the keys of that tag), one connection per master, the slot map read
 * from `seeds` (borrowed for the subscriber's life) or a master already known. `login` gives
 * the user and password (host, port and db ignored). on_connected is not called.
 *
 * When a master is lost, its channels are subscribed again on whichever master then serves
 * their slots; when Redis ends a subscription because its slot moved (an sunsubscribe nobody
 * asked for), the channel is subscribed where the slot went. Either way on_chan_gap (or, without
 * it, on_subscribed with again 1) follows the confirmation, so the application catches up what
 * was published meanwhile on that channel.
 * Returns 0 or a negative errno.
 */
int pl_subscriber_init_cluster(pl_subscriber_t *s, const pl_redis_addr_t *login,
                               const pl_slots_node_t *seeds, int nseeds,
                               const pl_subscriber_handlers_t *h, void *ud);

/** Start the thread (after pl_subscriber_init). Returns 0 or a negative errno; either way
 *  pl_subscriber_stop releases what init took. */
int pl_subscriber_start(pl_subscriber_t *s);

/**
 * Any thread: hand `req` (add or drop a reference to channel req->name) to the subscriber. It
 * comes back through on_chan. Requests of one thread are carried out in the order made.
 */
void pl_subscriber_chan(pl_subscriber_t *s, pl_subscriber_chan_t *req);

/** Ask the thread to stop and wait for it: afterwards no callback runs on it; requests still
 *  queued, and any made later, are handed back with `ok` 0. */
void pl_subscriber_stop(pl_subscriber_t *s);

#endif
