/*
 * metrics: GET /metrics in the Prometheus text format (version 0.0.4).
 *
 * Nothing is counted here: every count lives with the one thread that bumps
 * it (base/metric.h) — a shard's pl_shard_stats_t, its socket context's and
 * Redis connection's stats, the subscriber's counters and the server's lag
 * histogram, each database worker's stats — and a scrape, on whichever shard
 * received the request, reads all of them with relaxed atomic loads and sums
 * them. No lock is taken and no other thread is asked anything, so a scrape
 * never stalls another shard and counting costs the hot path a plain add.
 *
 * Where it is served: with PARLEY_METRICS_LISTEN set, on that plain-HTTP
 * listener only (on shard 0; it answers /metrics and /health and nothing else:
 * no API, no WebSocket), and the main listeners answer /metrics with 404.
 * Unset, on the main listeners, without credentials (like /health): the
 * shipped nginx configuration does not route /metrics, so it is reachable
 * only on the instances' own addresses (docs/operations.md).
 */
#ifndef PARLEY_APP_METRICS_H
#define PARLEY_APP_METRICS_H

#include "parley/app/shard.h"
#include "parley/base/buf.h"
#include "parley/proto/conn.h"

struct pl_server;

/** The exposition's Content-Type. */
#define PL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/** Append every metric family of `srv` to `b`. Any shard's thread. */
void pl_metrics_render(struct pl_server *srv, pl_buf_t *b);

/** Answer GET /metrics on `c`. Returns `keep` (what pl_api_request returns). */
int pl_metrics_serve(pl_conn_t *c, int keep);

/** Make `s` accept on `fd` (bound, PARLEY_METRICS_LISTEN) as the metrics-only listener. On the
 *  main thread, after pl_shard_init and before the loop starts. 0 or a negative libuv error. */
int pl_metrics_listen(pl_shard_t *s, int fd);

/** 1 if `c` came in on the metrics-only listener. */
static inline int pl_metrics_only(const pl_conn_t *c)
{
    const pl_shard_t *s = pl_shard_of_conn(c);
    return s->metrics_listener >= 0 && c->sock.listener == (unsigned)s->metrics_listener;
}

#endif
