/*
 * metrics: the Prometheus exposition of the counts the shards, the
 * subscriber and the database workers keep; see the header. Families are
 * written in a fixed order, each with HELP and TYPE; per-shard series carry
 * shard="<i>", others are summed over the shards at the scrape.
 */
#include "parley/app/kv.h"
#include "parley/app/metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "parley/app/server.h"
#include "parley/app/wire.h"
#include "parley/base/config.h"
#include "parley/svc/cluster.h"
#include "parley/svc/db.h"

/* Why an authentication failed, by PL_AUTH_FAIL_TIMEOUT or -PL_JWT_E* (base/jwt.h). */
static const char *const auth_reasons[PL_AUTH_FAIL_N] = {
    "timeout",  "malformed", "algorithm", "signature", "expired", "subject",
    "too_long", "not_yet",   "issuer",    "audience",  "key_id",  "revoked",
};

static const char *const db_failures[PL_DB_FAIL_N] = {
    [PL_DB_FAIL_CONNECTION] = "connection",
    [PL_DB_FAIL_UNAVAILABLE] = "unavailable",
    [PL_DB_FAIL_STATEMENT] = "statement",
    [PL_DB_FAIL_CONFLICT] = "conflict",
};

/* A per-shard figure that is no counter: read by a function. */
typedef uint64_t (*shard_read_fn)(pl_shard_t *s);

static uint64_t rd_connections(pl_shard_t *s)
{
    return (uint64_t)atomic_load_explicit(&s->conns->sock->nsocks, memory_order_relaxed);
}
static uint64_t rd_rooms(pl_shard_t *s)
{
    return (uint64_t)atomic_load_explicit(&s->nrooms, memory_order_relaxed);
}

/* Where a family's per-shard value is: a counter in the shard's stats or in its sockets'
 * stats (at `off`), or what `rd` returns. */
enum { IN_SHARD, IN_SOCKS, BY_FN };

typedef struct {
    const char *name, *type, *help;
    int where;
    size_t off;
    shard_read_fn rd;
} shard_family_t;

#define SHARD(f) IN_SHARD, offsetof(pl_shard_stats_t, f), NULL
#define SOCKS(f) IN_SOCKS, offsetof(pl_sock_stats_t, f), NULL
#define FN(fn) BY_FN, 0, fn

static uint64_t shard_value(const shard_family_t *f, pl_shard_t *s)
{
    const char *base = f->where == IN_SHARD   ? (const char *)&s->stats
                       : f->where == IN_SOCKS ? (const char *)&s->conns->sock->stats
                                              : NULL;
    return base ? pl_counter_get((const pl_counter_t *)(base + f->off)) : f->rd(s);
}

static void shards(pl_buf_t *b, pl_server_t *srv)
{
    static const shard_family_t fams[] = {
        {"parley_connections", "gauge", "Open client connections (HTTP and WebSocket).",
         FN(rd_connections)},
        {"parley_connections_accepted_total", "counter", "Client connections accepted.",
         SOCKS(accepted)},
        {"parley_authentications_total", "counter", "WebSocket sessions authenticated.",
         SHARD(auths)},
        {"parley_sessions", "gauge", "Authenticated WebSocket sessions open.", SHARD(sessions)},
        {"parley_subscriptions", "gauge", "Room subscriptions held by connections.",
         SHARD(subscriptions)},
        {"parley_rooms", "gauge", "Rooms with at least one subscriber on the shard.", FN(rd_rooms)},
        {"parley_messages_received_total", "counter",
         "Message frames received from clients (room and direct).", SHARD(received)},
        {"parley_messages_published_total", "counter",
         "Messages published to Redis (resends of an accepted cid excluded).", SHARD(published)},
        {"parley_messages_delivered_total", "counter",
         "Messages and room events queued to recipients (one per recipient).", SHARD(delivered)},
        {"parley_frames_out_total", "counter",
         "Frames queued to clients: WebSocket frames and HTTP responses.", SOCKS(frames_out)},
        {"parley_bytes_out_total", "counter", "Bytes of the frames queued to clients.",
         SOCKS(bytes_out)},
        {"parley_slow_consumer_disconnects_total", "counter",
         "Connections closed (4008) for leaving too much output unread.", SOCKS(slow_consumers)},
    };
    /* One family with a series per shard. */
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        pl_metric_family(b, fams[f].name, fams[f].type, fams[f].help);
        for (int i = 0; i < srv->nshards; i++) {
            char label[24];
            snprintf(label, sizeof label, "shard=\"%d\"", i);
            pl_metric_sample(b, fams[f].name, label,
                             shard_value(&fams[f], pl_server_shard(srv, i)));
        }
    }
}

static void auth_and_errors(pl_buf_t *b, pl_server_t *srv)
{
    pl_metric_family(b, "parley_authentication_failures_total", "counter",
                     "Failed authentications by reason (the token's defect, or timeout).");
    for (int r = 0; r < PL_AUTH_FAIL_N; r++) {
        uint64_t n = 0;
        for (int i = 0; i < srv->nshards; i++)
            n += pl_counter_get(&pl_server_shard(srv, i)->stats.auth_failures[r]);
        char label[48];
        snprintf(label, sizeof label, "reason=\"%s\"", auth_reasons[r]);
        pl_metric_sample(b, "parley_authentication_failures_total", label, n);
    }
    pl_metric_family(b, "parley_errors_sent_total", "counter",
                     "Error frames sent to clients, by error code (docs/protocol.md).");
    for (int code = PL_ERR_NONE + 1; code < PL_ERR_COUNT; code++) {
        uint64_t n = 0;
        for (int i = 0; i < srv->nshards; i++)
            n += pl_counter_get(&pl_server_shard(srv, i)->stats.errors[code]);
        char label[48];
        snprintf(label, sizeof label, "code=\"%s\"", pl_wire_err_name(code));
        pl_metric_sample(b, "parley_errors_sent_total", label, n);
    }
}

/* A counter summed over the shards, one series per label. */
typedef uint64_t (*indexed_read_fn)(pl_shard_t *s, int i);

static void summed(pl_buf_t *b, pl_server_t *srv, const char *name, const char *help,
                   const char *key, const char *const *labels, int n, indexed_read_fn rd)
{
    pl_metric_family(b, name, "counter", help);
    for (int k = 0; k < n; k++) {
        uint64_t v = 0;
        for (int i = 0; i < srv->nshards; i++)
            v += rd(pl_server_shard(srv, i), k);
        char label[64];
        snprintf(label, sizeof label, "%s=\"%s\"", key, labels[k]);
        pl_metric_sample(b, name, label, v);
    }
}

static uint64_t rd_rate_limited(pl_shard_t *s, int k)
{
    return pl_counter_get(&s->stats.rate_limited[k]);
}
static uint64_t rd_refused(pl_shard_t *s, int k)
{
    return pl_counter_get(&s->stats.refused[k + 1]);
}
static uint64_t rd_http_refused(pl_shard_t *s, int k)
{
    return pl_counter_get(&s->conns->http_refused[k]);
}

/* The limits (app/limits.h, docs/security.md): what was refused, and why. */
static void limits(pl_buf_t *b, pl_server_t *srv)
{
    static const char *const kinds[] = {"frame", "subscribe"};
    summed(b, srv, "parley_rate_limited_total",
           "Client frames refused with rate_limited: frame (messages, typing, reads; "
           "PARLEY_RATE_LIMIT) or subscribe (rooms joined or left; PARLEY_SUBSCRIBE_RATE).",
           "kind", kinds, 2, rd_rate_limited);
    uint64_t closes = 0;
    for (int i = 0; i < srv->nshards; i++)
        closes += pl_counter_get(&pl_server_shard(srv, i)->stats.rate_closes);
    pl_metric_family(b, "parley_rate_limit_disconnects_total", "counter",
                     "Connections closed with 1008 for sending on past their refusals.");
    pl_metric_sample(b, "parley_rate_limit_disconnects_total", "", closes);
    static const char *const reasons[] = {"per_ip", "instance", "origin"};
    summed(b, srv, "parley_connections_refused_total",
           "WebSocket upgrades refused: per_ip (PARLEY_MAX_CONNS_PER_IP, 503), instance "
           "(PARLEY_MAX_CONNS, 503), origin (PARLEY_ALLOWED_ORIGINS, 403).",
           "reason", reasons, 3, rd_refused);
    static const char *const statuses[] = {"400", "408", "413", "431"};
    summed(b, srv, "parley_http_refused_total",
           "HTTP requests refused by the parser or the clock: 400 malformed, 408 too slow, "
           "413 body or 431 headers too large.",
           "status", statuses, 4, rd_http_refused);
    pl_metric_family(b, "parley_websockets", "gauge",
                     "WebSocket connections counted against PARLEY_MAX_CONNS.");
    pl_metric_sample(b, "parley_websockets", "",
                     atomic_load_explicit(&srv->conns->total, memory_order_relaxed));
    pl_metric_family(b, "parley_websockets_limit", "gauge", "PARLEY_MAX_CONNS.");
    pl_metric_sample(b, "parley_websockets_limit", "", srv->conns->total_max);
}

/* Cluster mode: what the shards' routers (svc/cluster.h) met, summed. */
static uint64_t cluster_stat(pl_shard_t *s, int k)
{
    const pl_cluster_stats_t *st = s->cluster ? &s->cluster->stats : NULL;
    const pl_counter_t *c[5] = {st ? &st->moved : NULL, st ? &st->ask : NULL,
                                st ? &st->retried : NULL, st ? &st->refreshes : NULL,
                                st ? &st->gave_up : NULL};
    return c[k] ? pl_counter_get(c[k]) : 0;
}

static void cluster(pl_buf_t *b, pl_server_t *srv)
{
    static const char *const what[5] = {"moved", "ask", "retried", "map_read", "gave_up"};
    summed(b, srv, "parley_redis_cluster_events_total",
           "Redis Cluster routing: MOVED and ASK redirections followed, commands retried after "
           "TRYAGAIN, CLUSTERDOWN or a lost master, slot maps read, and commands given up "
           "(answered unavailable).",
           "event", what, 5, cluster_stat);
}

static void redis(pl_buf_t *b, pl_server_t *srv)
{
    pl_metric_family(b, "parley_redis_connected", "gauge",
                     "1 while a Redis connection is up: the subscriber's and each shard's.");
    pl_metric_sample(b, "parley_redis_connected", "connection=\"subscriber\"",
                     (uint64_t)atomic_load_explicit(&srv->sub.connected, memory_order_relaxed));
    char label[40];
    for (int i = 0; i < srv->nshards; i++) {
        snprintf(label, sizeof label, "connection=\"shard-%d\"", i);
        pl_metric_sample(b, "parley_redis_connected", label,
                         (uint64_t)pl_kv_up(pl_server_shard(srv, i)));
    }
    pl_metric_family(b, "parley_redis_reconnects_total", "counter",
                     "Redis connections made again after a loss.");
    pl_metric_sample(b, "parley_redis_reconnects_total", "connection=\"subscriber\"",
                     pl_counter_get(&srv->sub.reconnects));
    pl_hist_snap_t lat = {0};
    uint64_t lost = 0;
    for (int i = 0; i < srv->nshards; i++) {
        pl_redis_t *r = &pl_server_shard(srv, i)->redis;
        snprintf(label, sizeof label, "connection=\"shard-%d\"", i);
        pl_metric_sample(b, "parley_redis_reconnects_total", label,
                         pl_counter_get(&r->stats.reconnects));
        pl_hist_snap_add(&lat, &r->stats.latency);
        lost += pl_counter_get(&r->stats.lost);
    }
    pl_metric_family(b, "parley_redis_command_duration_seconds", "histogram",
                     "Shard Redis commands, from issue to reply (publish script included).");
    pl_metric_hist(b, "parley_redis_command_duration_seconds", "", &pl_hist_seconds, &lat);
    pl_metric_family(b, "parley_redis_commands_lost_total", "counter",
                     "Shard Redis commands whose connection went before the reply.");
    pl_metric_sample(b, "parley_redis_commands_lost_total", "", lost);
    pl_metric_family(b, "parley_subscriber_messages_total", "counter",
                     "Pub/Sub messages the subscriber received.");
    pl_metric_sample(b, "parley_subscriber_messages_total", "", pl_counter_get(&srv->sub.messages));
    pl_metric_family(
        b, "parley_subscriber_channels", "gauge",
        "Room channels the subscriber holds a subscription to (PARLEY_SUBSCRIBE=rooms; "
        "0 in pattern mode).");
    pl_metric_sample(b, "parley_subscriber_channels", "", pl_counter_get(&srv->sub.channels));
    if (srv->cfg.redis_cluster) cluster(b, srv);
    pl_hist_snap_t lag = {0};
    pl_hist_snap_add(&lag, &srv->sub_lag);
    pl_metric_family(b, "parley_subscriber_lag_seconds", "histogram",
                     "Room and direct messages: from acceptance (their ts, on any instance) to "
                     "arrival at this instance's subscriber.");
    pl_metric_hist(b, "parley_subscriber_lag_seconds", "", &pl_hist_seconds, &lag);
}

static void db(pl_buf_t *b, pl_server_t *srv)
{
    struct pl_db *d = srv->db;
    pl_metric_family(b, "parley_db_connected", "gauge",
                     "1 while at least one database worker is connected (0 without a database).");
    pl_metric_sample(b, "parley_db_connected", "", d && pl_db_up(d));
    pl_metric_family(b, "parley_db_queue_depth", "gauge",
                     "Messages accepted and not yet stored (queued or being written).");
    pl_metric_sample(b, "parley_db_queue_depth", "", d ? pl_db_store_pending(d) : 0);
    pl_metric_family(b, "parley_db_queue_limit", "gauge",
                     "PARLEY_DB_QUEUE: at this depth sends are refused with unavailable.");
    pl_metric_sample(b, "parley_db_queue_limit", "", srv->cfg.db_queue);
    pl_hist_snap_t size = {0}, lat = {0};
    uint64_t fail[PL_DB_FAIL_N] = {0};
    for (int i = 0; d && i < pl_db_workers(d); i++) {
        const pl_db_stats_t *st = pl_db_stats(d, i);
        pl_hist_snap_add(&size, &st->batch_size);
        pl_hist_snap_add(&lat, &st->batch_latency);
        for (int k = 0; k < PL_DB_FAIL_N; k++)
            fail[k] += pl_counter_get(&st->failures[k]);
    }
    pl_metric_family(b, "parley_db_batch_messages", "histogram",
                     "Messages stored per INSERT batch.");
    pl_metric_hist(b, "parley_db_batch_messages", "", &pl_hist_sizes, &size);
    pl_metric_family(b, "parley_db_batch_duration_seconds", "histogram",
                     "Time to write one batch of messages (its transaction).");
    pl_metric_hist(b, "parley_db_batch_duration_seconds", "", &pl_hist_seconds, &lat);
    pl_metric_family(b, "parley_db_failures_total", "counter",
                     "Database failures: batches that lost the connection, jobs that failed.");
    for (int k = 0; k < PL_DB_FAIL_N; k++) {
        char label[40];
        snprintf(label, sizeof label, "kind=\"%s\"", db_failures[k]);
        pl_metric_sample(b, "parley_db_failures_total", label, fail[k]);
    }
}

void pl_metrics_render(pl_server_t *srv, pl_buf_t *b)
{
    pl_metric_family(b, "parley_build_info", "gauge", "The running build: always 1.");
    pl_buf_adds(b, "parley_build_info{version=");
    const char *v = pl_config_version();
    const char *sp = strchr(v, ' '); /* "parleyd <version>" */
    v = sp ? sp + 1 : v;
    /* Quoted and escaped: JSON's escapes of \\ and \" are the exposition's; the version and
     * the server id (1-64 of [A-Za-z0-9_.:-]) have nothing else to escape. */
    pl_buf_json_str(b, v, strlen(v));
    pl_buf_adds(b, ",server_id=");
    pl_buf_json_str(b, srv->cfg.server_id, strlen(srv->cfg.server_id));
    pl_buf_adds(b, "} 1\n");
    pl_metric_family(b, "parley_start_time_seconds", "gauge", "Unix time the process started.");
    pl_metric_sample_f(b, "parley_start_time_seconds", "", (double)srv->started_ms / 1000);
    pl_metric_family(b, "parley_shards", "gauge", "Event loops (PARLEY_SHARDS).");
    pl_metric_sample(b, "parley_shards", "", (uint64_t)srv->nshards);
    pl_metric_family(b, "parley_draining", "gauge",
                     "1 from the start of a drain (SIGTERM, POST /api/admin/drain) to the exit, "
                     "else 0.");
    pl_metric_sample(b, "parley_draining", "",
                     (uint64_t)(pl_server_state(srv) != PL_SERVER_RUNNING));
    shards(b, srv);
    auth_and_errors(b, srv);
    limits(b, srv);
    redis(b, srv);
    db(b, srv);
}

int pl_metrics_serve(pl_conn_t *c, int keep)
{
    pl_server_t *srv = pl_shard_of_conn(c)->srv;
    pl_buf_t b = {0};
    pl_metrics_render(srv, &b);
    pl_conn_respond(c, 200, PL_METRICS_CONTENT_TYPE, b.data, b.len, keep);
    pl_buf_free(&b);
    return keep;
}

int pl_metrics_listen(pl_shard_t *s, int fd)
{
    int rc = pl_sock_listen(s->conns->sock, fd, &pl_sock_tcp, NULL);
    if (rc < 0) return rc;
    s->metrics_listener = rc;
    return 0;
}
