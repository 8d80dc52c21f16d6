/*
 * srvlog: what was published on this instance's server:{id} channel while its
 * subscriber was away is caught up, once, in order.
 *
 * Direct messages and disconnects go to an instance on its server:{id}
 * channel, and Pub/Sub keeps nothing for a subscriber that is not there. So
 * the scripts that publish there (svc/script.c: dm, kick) also append each
 * frame to the instance's log, the capped stream {prefix}srvlog:{id}
 * (PL_SRVLOG_MAX entries, expiring PL_SRVLOG_TTL_S after the last), and
 * publish it with the entry's id as a last member, `"_lid":"<ms>-<n>"`,
 * which the subscriber strips (an instance of an older version passes it on;
 * clients ignore members they do not know).
 *
 * The subscriber thread keeps the newest id it has handed on. Before its
 * first subscription it reads the log's newest id (what an earlier process
 * with the same id was sent is not this one's); after every subscription it
 * reads the log after that id on a second connection and hands those on
 * first; a live message at or below the newest id handed on is a duplicate
 * of one read there and is dropped. Everything here runs on the subscriber
 * thread only.
 */
#ifndef PARLEY_APP_SRVLOG_H
#define PARLEY_APP_SRVLOG_H

#include <stddef.h>
#include <stdint.h>

#include "parley/svc/redis.h"
#include "parley/svc/slots.h"

struct redisContext;

/** A stream entry id, `<ms>-<n>`. */
typedef struct {
    uint64_t ms, n;
} pl_srvlog_id_t;

/** The subscriber thread's position in its log; embedded in pl_server_t, zeroed. */
typedef struct {
    pl_srvlog_id_t last;          /**< the newest id handed on (or read as the baseline) */
    int known;                    /**< `last` is known: a baseline was read or an id handed on */
    char key[192];                /**< {prefix}srvlog:{id}; set by pl_srvlog_init */
    const pl_slots_node_t *seeds; /**< a cluster's seeds (pl_srvlog_use_cluster); borrowed */
    int nseeds;
} pl_srvlog_t;

/** Called for each entry read back from the log, oldest first, with its id. */
typedef void (*pl_srvlog_each_cb)(void *ud, const char *payload, size_t len, pl_srvlog_id_t id);

/** Name the log: `prefix` (PARLEY_REDIS_PREFIX) and the instance's id. Returns 0, or -1 if
 *  the name does not fit. */
int pl_srvlog_init(pl_srvlog_t *l, const char *prefix, const char *server_id);

/** Cluster mode: the log is <prefix>{s:<id>}:srvlog, in the instance's slot, read on its
 *  master, found from `seeds` (borrowed for the log's life). */
void pl_srvlog_use_cluster(pl_srvlog_t *l, const char *prefix, const char *server_id,
                           const pl_slots_node_t *seeds, int nseeds);

/**
 * A live frame from server:{id}: if it ends with the `"_lid"` member, set `*id`, set `*keep`
 * to how many leading bytes to keep (the frame's `}` then goes at keep - 1, over the comma)
 * and return 1; otherwise (a frame from an older version) return 0 and leave both alone.
 */
int pl_srvlog_strip(const char *payload, size_t len, pl_srvlog_id_t *id, size_t *keep);

/** An entry with `id` is about to be handed on: 1 if it is new (and now the newest), 0 if one
 *  at or above it was handed on already (drop it). */
int pl_srvlog_admit(pl_srvlog_t *l, pl_srvlog_id_t id);

/** Parse `<ms>-<n>` (exactly `len` bytes). Returns 0 or -1. */
int pl_srvlog_id_parse(const char *s, size_t len, pl_srvlog_id_t *id);

/**
 * Before the first subscription, on the connection that is about to subscribe: the log's
 * newest id becomes the baseline (none: 0-0). An error is logged and leaves the baseline
 * unknown: then nothing is read back until a live frame sets it.
 */
void pl_srvlog_baseline(pl_srvlog_t *l, struct redisContext *c);

/** pl_srvlog_baseline on a connection of its own (to `addr`, or the log's master in a
 *  cluster), where no connection is about to subscribe: a cluster's sharded subscriber. */
void pl_srvlog_baseline_connect(pl_srvlog_t *l, const pl_redis_addr_t *addr);

/**
 * After a subscription is confirmed: on a connection of its own to `addr` (in a cluster, to the
 * log's master, `addr` giving the login), the entries after
 * the newest id, each to `each` (which must call pl_srvlog_admit, as for a live frame).
 * Logs a warning if the log was trimmed past what was missed. Returns how many entries were
 * read, or -1 if the log could not be read (logged; the next subscription tries again).
 */
long pl_srvlog_catch_up(pl_srvlog_t *l, const pl_redis_addr_t *addr, pl_srvlog_each_cb each,
                        void *ud);

/** pl_srvlog_catch_up on `addr` itself, in cluster mode too: the master a sharded subscriber
 *  just subscribed the instance's channel on, which serves the log's slot (a map read from a
 *  seed during a failover may still name the lost master). */
long pl_srvlog_catch_up_at(pl_srvlog_t *l, const pl_redis_addr_t *addr, pl_srvlog_each_cb each,
                           void *ud);

#endif
