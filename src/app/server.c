/*
 * server: start-up and shutdown of one parleyd process.
 *
 * Start-up, in the main thread and before any connection is accepted:
 * refuse an address another process listens on and a server id a live
 * instance holds; bind one SO_REUSEPORT socket per shard; get the id
 * generators' node numbers from Redis and register the instance there
 * (forgetting what a previous run under this id left); check that the
 * database is reachable and at this build's schema. A drain (SIGTERM, SIGINT
 * or POST /api/admin/drain) has the shards stop accepting and close their
 * clients over PARLEY_DRAIN_SECONDS (drain.h); then, or at the drain's
 * deadline, the shutdown stops the subscriber, closes what is left, lets the
 * database pool store what it holds, exits when the shards are done or after a
 * deadline, and unregisters the instance. A second signal exits at once.
 */
#include "parley/app/server.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "parley/app/chat.h"
#include "parley/app/deliver.h"
#include "parley/app/metrics.h"
#include "parley/app/shard.h"
#include "parley/app/static.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/net/tls.h"
#include "parley/svc/db.h"
#include "parley/svc/migrate.h"
#include "parley/svc/script.h"

/* The whole shutdown must end within 5 s; shards get this long to drain. */
#define SHUTDOWN_DEADLINE_MS 4500
/* Of which the database pool gets this long to store what is queued. */
#define DB_DRAIN_MS 2500

/* The listen address, resolved; NULL after logging why. */
static struct addrinfo *resolve(const char *host, int port)
{
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        pl_error("listen address %s: %s", host, gai_strerror(rc));
        return NULL;
    }
    return res;
}

/*
 * 0 if nobody else listens on the address, else -errno. Every shard socket has SO_REUSEPORT, so
 * a second parleyd on the same host:port would bind too and silently take half the
 * connections; a plain bind (no SO_REUSEPORT) is refused by any listener there. SO_REUSEADDR
 * keeps connections of our own previous run in TIME_WAIT from counting.
 */
static int address_free(const struct addrinfo *a)
{
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, err = 0;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, a->ai_addr, a->ai_addrlen) != 0)
        err = -errno;
    if (fd >= 0) close(fd);
    return err;
}

/* A bound (not yet listening) SO_REUSEPORT socket, or -errno. TCP_NODELAY is set here
 * because Linux copies it to every accepted socket: one setsockopt per connection saved. */
static int bind_reuseport(const struct addrinfo *a)
{
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, err = 0;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        bind(fd, a->ai_addr, a->ai_addrlen) != 0)
        err = -errno;
    if (err) {
        if (fd >= 0) close(fd);
        return err;
    }
    return fd;
}

/* Bind one socket per shard on host:port into fds (all -1 when host is NULL: that listener is
 * off); -1 after logging why. `what` names the setting in messages. */
static int bind_all(const char *host, int port, int shards, int *fds, const char *what)
{
    for (int i = 0; i < shards; i++)
        fds[i] = -1;
    if (!host) return 0;
    struct addrinfo *res = resolve(host, port);
    if (!res) return -1;
    int rc = address_free(res);
    if (rc == -EADDRINUSE) {
        pl_error("cannot listen on %s:%d: another process is listening there (a second parleyd? "
                 "give each instance its own %s)",
                 host, port, what);
    } else if (rc != 0) {
        pl_error("cannot listen on %s:%d: %s", host, port, strerror(-rc));
    }
    for (int i = 0; rc == 0 && i < shards; i++) {
        if ((fds[i] = bind_reuseport(res)) < 0) {
            rc = fds[i];
            pl_error("cannot listen on %s:%d: %s", host, port, strerror(-rc));
            while (i--) {
                close(fds[i]);
                fds[i] = -1;
            }
        }
    }
    freeaddrinfo(res);
    return rc == 0 ? 0 : -1;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
}

/* Subscribers of server:{id}: a running instance with this id has one. */
static long long id_subscribers(redisContext *c, const char *id)
{
    redisReply *r = redisCommand(c, "PUBSUB NUMSUB server:%s", id);
    long long n = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                          r->element[1]->type == REDIS_REPLY_INTEGER
                      ? r->element[1]->integer
                      : 0;
    if (r) freeReplyObject(r);
    return n;
}

/* The heartbeat's value (the time it was written) into out, "" if there is none. */
static void heartbeat_of(redisContext *c, const pl_config_t *cfg, char *out, size_t n)
{
    char key[128];
    snprintf(key, sizeof key, "%sserver:%s", cfg->redis_prefix, cfg->server_id);
    redisReply *r = redisCommand(c, "GET %s", key);
    snprintf(out, n, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    if (r) freeReplyObject(r);
}

/*
 * 0 if PARLEY_SERVER_ID is free, -1 (logged) if a live instance holds it: the id names the
 * instance's channel and its presence records, so two would steal each other's direct
 * messages and undo each other's presence. A live instance is subscribed to server:{id}; one
 * whose subscriber is reconnecting still refreshes its heartbeat, so a heartbeat without a
 * subscriber is watched for one interval (a run killed moments ago leaves one behind).
 */
static int check_server_id(const pl_config_t *cfg, redisContext *c)
{
    const char *id = cfg->server_id;
    if (id_subscribers(c, id) > 0) goto taken;
    char first[64], now[64];
    heartbeat_of(c, cfg, first, sizeof first);
    if (!*first) return 0;
    pl_info("server id %s has a heartbeat but no subscriber: watching it for %d s in case that "
            "instance is still alive",
            id, PL_HEARTBEAT_EVERY_MS / 1000 + 1);
    for (int waited = 0; waited < PL_HEARTBEAT_EVERY_MS + 1000; waited += 250) {
        struct timespec ts = {0, 250 * 1000000L};
        nanosleep(&ts, NULL);
        heartbeat_of(c, cfg, now, sizeof now);
        if (!*now) return 0; /* expired: it was a run that died */
        if (strcmp(now, first) != 0 || id_subscribers(c, id) > 0) goto taken;
    }
    pl_info("server id %s: no sign of life from its previous holder; taking it over", id);
    return 0;
taken:
    pl_error("PARLEY_SERVER_ID %s belongs to a running instance (its heartbeat or channel is live "
             "in Redis): give each instance its own id",
             id);
    return -1;
}

/* A Redis Cluster node: the scripts' keys span slots there (CROSSSLOT), and PUBLISH is not
 * sharded. Refused with a clear message rather than half working. */
/* 1 if the Redis behind c is a Redis Cluster node, 0 if not, -1 if it did not say. */
static int is_cluster_node(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO cluster");
    int cluster =
        r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "cluster_enabled:1") != NULL : -1;
    if (r) freeReplyObject(r);
    return cluster;
}

static int refuse_cluster(pl_server_t *srv, redisContext *c)
{
    if (is_cluster_node(c) != 1) return 0;
    pl_error("redis at %s:%d is a Redis Cluster node (cluster_enabled:1): set "
             "PARLEY_REDIS_CLUSTER=1 to use it as one (docs/redis.md), or point PARLEY_REDIS_URL "
             "at a standalone Redis",
             srv->redis_addr.host, srv->redis_addr.port);
    return -1;
}

/*
 * Redis at start-up: a standalone Redis, the server id is free, the id generators' node block
 * (nodes must differ between every shard of every live instance: Redis hands them out), and the
 * instance is registered, having forgotten what a previous run under this id left. If Redis cannot
 * be reached, *node stays -1: each shard gets its node, and registers, when it connects, and
 * publishes nothing before. Returns -1 to refuse to start.
 */
static int redis_startup(pl_server_t *srv, int64_t *node)
{
    const pl_config_t *cfg = &srv->cfg;
    char err[256];
    *node = -1;
    if (cfg->redis_cluster) {
        /* Each shard's router reads the slot map, gets its id node and registers the instance
         * (app/kv.h, split.h); nothing here needs one node in particular. */
        pl_key_set_cluster(1);
        for (int i = 0; i < srv->redis_nseeds; i++) {
            /* A standalone Redis among the seeds would never give a slot map: refuse now. */
            pl_redis_addr_t a = srv->redis_addr;
            a.host = srv->redis_seeds[i].host;
            a.port = srv->redis_seeds[i].port;
            redisContext *c = pl_redis_connect_sync(&a, 1000, err, sizeof err);
            int cluster = c ? is_cluster_node(c) : -1;
            if (c) redisFree(c);
            if (cluster == 0) {
                pl_error("PARLEY_REDIS_CLUSTER=1, but redis at %s:%d is not a Redis Cluster node "
                         "(cluster_enabled:0): point PARLEY_REDIS_URL at the cluster's nodes, or "
                         "unset PARLEY_REDIS_CLUSTER",
                         a.host, a.port);
                return -1;
            }
        }
        pl_info("redis cluster mode: %d seed node(s); every room on its slot's master with "
                "sharded pub/sub (docs/redis.md)",
                srv->redis_nseeds);
        return 0;
    }
    redisContext *c = pl_redis_connect_sync(&srv->redis_addr, 1000, err, sizeof err);
    if (!c) {
        pl_warn("redis unreachable at start-up (%s): each shard registers and gets its id node "
                "when it connects",
                err);
        return 0;
    }
    if (refuse_cluster(srv, c) != 0 || check_server_id(cfg, c) != 0) {
        redisFree(c);
        return -1;
    }
    redisReply *r = redisCommand(c, "INCRBY parley:id_nodes %d", cfg->shards);
    if (r && r->type == REDIS_REPLY_INTEGER)
        *node = (r->integer - cfg->shards) % (1 << PL_IDGEN_NODE_BITS);
    if (r) freeReplyObject(r);
    char now[24], ttl[8];
    snprintf(now, sizeof now, "%lld", (long long)pl_now_ms());
    snprintf(ttl, sizeof ttl, "%d", PL_HEARTBEAT_TTL_S);
    const char *argv[7] = {
        "EVAL", pl_script_source(PL_SCRIPT_RESET), "0", cfg->redis_prefix, cfg->server_id, now,
        ttl};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    r = redisCommandArgv(c, 7, argv, lens);
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        pl_info(
            "presence: %lld user(s) left online by this server id's previous run reported offline",
            r->integer);
    else if (!r || r->type == REDIS_REPLY_ERROR)
        pl_warn("registering in redis: %s", r ? r->str : c->errstr);
    if (r) freeReplyObject(r);
    redisFree(c);
    return 0;
}

/* At a clean exit: the heartbeat goes, so a restart under this id does not wait for it. */
static void redis_unregister(pl_server_t *srv)
{
    const pl_config_t *cfg = &srv->cfg;
    if (cfg->redis_cluster) return; /* the heartbeat expires (PL_HEARTBEAT_TTL_S) */
    char err[256];
    redisContext *c = pl_redis_connect_sync(&srv->redis_addr, 1000, err, sizeof err);
    if (!c) return; /* the others' sweep does it once the heartbeat expires */
    const char *argv[5] = {"EVAL", pl_script_source(PL_SCRIPT_UNREGISTER), "0", cfg->redis_prefix,
                           cfg->server_id};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r = redisCommandArgv(c, 5, argv, lens);
    if (!r || r->type == REDIS_REPLY_ERROR) pl_warn("unregistering: %s", r ? r->str : c->errstr);
    if (r) freeReplyObject(r);
    redisFree(c);
}

/* The database at start-up: a usable URL, reachable (or PARLEY_DB_REQUIRED=0), at this build's
 * schema. Returns -1 (logged, one line) to refuse to start. */
static int db_startup(const pl_config_t *cfg)
{
    char why[512];
    int rc = pl_migrate_check(cfg->database_url, why, sizeof why);
    if (rc == PL_MIGRATE_OK) return 0;
    if (rc == PL_MIGRATE_UNREACHABLE && !cfg->db_required) {
        pl_warn("database: %s; starting anyway (PARLEY_DB_REQUIRED=0): messages are delivered, "
                "their acks wait for it",
                why);
        return 0;
    }
    pl_error("database: %s%s", why,
             rc == PL_MIGRATE_UNREACHABLE
                 ? " (set PARLEY_DB_REQUIRED=0 to start without it and store once it is up)"
                 : "");
    return -1;
}

/* Raise the open-files limit to its hard limit; returns the limit (0 if unknown). */
static unsigned long long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
        else
            pl_warn("setrlimit(NOFILE): %s", strerror(errno));
    }
    return (unsigned long long)rl.rlim_cur;
}

/*
 * The WebSocket limits: PARLEY_MAX_CONNS defaults to what the open files allow, less 100 for
 * Redis, the database, listeners and HTTP requests, so that past it an upgrade gets a clear 503
 * instead of accept(2) failing with EMFILE for everyone (HTTP included).
 */
static int setup_limits(pl_server_t *srv, unsigned long long nofile)
{
    pl_config_t *cfg = &srv->cfg;
    unsigned long long fit = nofile > 200 ? nofile - 100 : nofile / 2;
    if (nofile)
        pl_info("open files limit %llu (at most ~%llu connections per process)", nofile, fit);
    if (!cfg->max_conns)
        cfg->max_conns = fit && fit < 100000000 ? (int)fit : 100000000;
    else if (fit && (unsigned long long)cfg->max_conns > fit)
        pl_warn("PARLEY_MAX_CONNS=%d is more than the open-files limit lets this process hold "
                "(about %llu): accepts will fail with EMFILE before it is reached",
                cfg->max_conns, fit);
    if (!(srv->conns = calloc(1, sizeof *srv->conns))) return -1;
    pl_limits_conns_init(srv->conns, (uint32_t)cfg->max_conns_per_ip, (uint32_t)cfg->max_conns);
    if (!cfg->allowed_origins)
        pl_info("PARLEY_ALLOWED_ORIGINS unset: WebSocket upgrades from pages of any origin are "
                "accepted (clients authenticate with tokens, never cookies)");
    return 0;
}

static void on_shard_done(uv_async_t *a)
{
    pl_server_t *srv = a->data;
    if (atomic_load(&srv->shards_running) == 0) uv_stop(srv->loop);
}

static void on_deadline(uv_timer_t *t)
{
    pl_server_t *srv = t->data;
    pl_warn("shutdown deadline reached with %d shard(s) still closing; exiting",
            atomic_load(&srv->shards_running));
    uv_stop(srv->loop);
}

/* The end of a drain (or of nothing, for SIGINT's second coming): close what is left, let the
 * database pool store what it holds, and end the loops. */
static void shut_down(pl_server_t *srv, const char *why)
{
    if (atomic_exchange(&srv->state, PL_SERVER_STOPPING) == PL_SERVER_STOPPING) return;
    pl_info("%s: shutting down", why);
    uv_timer_stop(&srv->drain_deadline);
    uv_timer_start(&srv->deadline, on_deadline, SHUTDOWN_DEADLINE_MS, 0);
    /* Stop the subscriber first: after it is joined it posts nothing more. */
    pl_subscriber_stop(&srv->sub);
    for (int i = 0; i < srv->nshards; i++)
        pl_loop_post(srv->loops[i], &pl_server_shard(srv, i)->shutdown_ev);
    /* Then let the database pool store what it holds (acks still reach clients being closed,
     * if they are still there), and only then tell the shards that nothing more will come. */
    if (srv->db) {
        pl_db_stop(srv->db, DB_DRAIN_MS);
        srv->db = NULL;
    }
    for (int i = 0; i < srv->nshards; i++)
        pl_loop_post(srv->loops[i], &pl_server_shard(srv, i)->finish_ev);
}

static void on_drain_deadline(uv_timer_t *t)
{
    pl_server_t *srv = t->data;
    pl_warn("drain deadline: %d shard(s) still have clients; closing them now",
            atomic_load(&srv->shards_draining));
    shut_down(srv, "drain deadline");
}

/* A drain was asked for (signal, API), or a shard closed its last client. */
static void on_drain_wake(uv_async_t *a)
{
    pl_server_t *srv = a->data;
    if (pl_server_state(srv) != PL_SERVER_DRAINING) return;
    if (!srv->drain_posted) {
        srv->drain_posted = 1;
        pl_info("draining: /health answers 503; clients are closed over %d s",
                srv->cfg.drain_seconds);
        atomic_store(&srv->shards_draining, srv->nshards);
        for (int i = 0; i < srv->nshards; i++)
            pl_loop_post(srv->loops[i], &pl_server_shard(srv, i)->drain_ev);
        /* A client being closed gets PL_DRAIN_WAIT_MS for its messages in flight. */
        uv_timer_start(&srv->drain_deadline, on_drain_deadline,
                       (uint64_t)srv->cfg.drain_seconds * 1000 + PL_DRAIN_WAIT_MS + 1000, 0);
    } else if (atomic_load(&srv->shards_draining) == 0) {
        shut_down(srv, "drained");
    }
}

/* SIGTERM or SIGINT: drain; the second one: exit now. */
static void on_signal(uv_signal_t *h, int signum)
{
    pl_server_t *srv = h->data;
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (pl_server_drain(srv)) {
        pl_info("%s: draining over %d s (send it again to exit at once)", name,
                srv->cfg.drain_seconds);
        return;
    }
    pl_warn("%s again: exiting at once", name);
    uv_stop(srv->loop);
}

/* SIGHUP: the TLS certificate and key are read again; new handshakes use them. A file that
 * does not load is logged and the pair in use kept. */
static void on_sighup(uv_signal_t *h, int signum)
{
    pl_server_t *srv = h->data;
    if (!srv->tls) {
        pl_info("SIGHUP: no TLS listener; nothing to reload");
        return;
    }
    char err[256];
    if (pl_tls_reload(srv->tls, err, sizeof err) == 0)
        pl_info("SIGHUP: TLS certificate and key reloaded from %s and %s", srv->cfg.tls_cert,
                srv->cfg.tls_key);
    else
        pl_error("SIGHUP: TLS reload failed, the certificate in use is kept: %s", err);
}

/* Start every loop with its shard; the subscriber after them (it posts to them). Shard 0 also
 * takes PARLEY_METRICS_LISTEN's socket, if there is one (metrics_fd >= 0): a scrape is cheap and
 * rare, one loop serves it. */
static int start_loops(pl_server_t *srv, const int *fds, const int *tls_fds, int metrics_fd,
                       int64_t node)
{
    if (!(srv->rooms_mask = pl_shardmask_new(srv->nshards)) ||
        !(srv->loops = calloc((size_t)srv->nshards, sizeof *srv->loops)) ||
        !(srv->owe = calloc((size_t)srv->nshards, 1))) {
        pl_error("out of memory");
        return -1;
    }
    /* The subscriber's requests queue from the first room a shard holds; its thread starts
     * once every loop it posts to exists. Direct messages come only for the users connected
     * here; rooms from everyone (pattern mode), or the rooms held here (rooms mode, roomsub.h). */
    snprintf(srv->sub_cmd, sizeof srv->sub_cmd, "SUBSCRIBE server:%s", srv->cfg.server_id);
    if (pl_srvlog_init(&srv->srvlog, srv->cfg.redis_prefix, srv->cfg.server_id) != 0) {
        pl_error("PARLEY_REDIS_PREFIX and PARLEY_SERVER_ID are too long together");
        return -1;
    }
    const char *cmds[2] = {srv->sub_cmd, "PSUBSCRIBE room:*"};
    int rc = srv->cfg.redis_cluster
                 ? pl_subscriber_init_cluster(&srv->sub, &srv->redis_addr, srv->redis_seeds,
                                              srv->redis_nseeds, &pl_deliver_handlers, srv)
                 : pl_subscriber_init(&srv->sub, &srv->redis_addr, cmds,
                                      srv->cfg.subscribe_rooms ? 1 : 2, &pl_deliver_handlers, srv);
    if (rc != 0) {
        pl_error("subscriber: %s", strerror(-rc));
        return -1;
    }
    if (srv->cfg.redis_cluster) {
        /* A cluster has no fixed subscriptions: the instance's channel is a counted one on its
         * slot's master, and its log is there too; where the log stands is read before the
         * channel is asked for (srvlog.h). */
        pl_srvlog_use_cluster(&srv->srvlog, srv->cfg.redis_prefix, srv->cfg.server_id,
                              srv->redis_seeds, srv->redis_nseeds);
        pl_srvlog_baseline_connect(&srv->srvlog, &srv->redis_addr);
        pl_buf_t b = {0};
        pl_key_server_chan(&b, srv->cfg.server_id);
        srv->server_chan.add = 1;
        srv->server_chan.len = b.len < PL_SUBSCRIBER_CHAN_MAX ? b.len : PL_SUBSCRIBER_CHAN_MAX;
        memcpy(srv->server_chan.name, b.data, srv->server_chan.len);
        pl_buf_free(&b);
        pl_subscriber_chan(&srv->sub, &srv->server_chan);
    }
    atomic_init(&srv->shards_running, 0);
    for (int i = 0; i < srv->nshards; i++) {
        char tag[24];
        snprintf(tag, sizeof tag, "shard-%d", i);
        rc = UV_ENOMEM;
        if (!(srv->loops[i] = pl_loop_new(i, sizeof(pl_shard_t))) ||
            (rc = pl_shard_init(srv->loops[i], srv, fds[i], tls_fds[i], srv->tls,
                                node < 0 ? -1 : node + i)) != 0 ||
            (i == 0 && metrics_fd >= 0 &&
             (rc = pl_metrics_listen(pl_server_shard(srv, 0), metrics_fd)) != 0) ||
            (rc = pl_loop_start(srv->loops[i], tag, pl_shard_exit)) != 0) {
            pl_error("shard %d: %s", i, uv_strerror(rc));
            return -1;
        }
        atomic_fetch_add(&srv->shards_running, 1);
    }
    rc = pl_subscriber_start(&srv->sub);
    if (rc != 0) {
        pl_error("subscriber thread: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

int pl_server_run(pl_config_t *cfg)
{
    static pl_server_t server;
    pl_server_t *srv = &server;
    srv->cfg = *cfg;
    srv->nshards = cfg->shards;
    srv->started_ms = pl_now_ms();
    srv->loop = uv_default_loop();
    cfg = &srv->cfg;
    srv->redis_addr = (pl_redis_addr_t){cfg->redis_host, cfg->redis_port, cfg->redis_db,
                                        cfg->redis_user, cfg->redis_password};
    for (int i = 0; i < cfg->redis_nhosts; i++) {
        snprintf(srv->redis_seeds[i].host, sizeof srv->redis_seeds[i].host, "%s",
                 cfg->redis_hosts[i]);
        srv->redis_seeds[i].port = cfg->redis_ports[i];
    }
    srv->redis_nseeds = cfg->redis_nhosts;
    uint64_t run;
    if (getrandom(&run, sizeof run, 0) != (ssize_t)sizeof run)
        run = (uint64_t)pl_now_ms() ^ (uint64_t)getpid() << 40;
    snprintf(srv->run_id, sizeof srv->run_id, "%016llx", (unsigned long long)run);
    if (setup_limits(srv, raise_nofile()) != 0) {
        pl_error("out of memory");
        return 1;
    }
    if (pl_script_init() != 0) {
        pl_error("cannot hash the Redis scripts");
        return 1;
    }
    if (cfg->tls_listen_host) {
        char err[256];
        if (!(srv->tls = pl_tls_new(cfg->tls_cert, cfg->tls_key, cfg->tls_ticket_lifetime, err,
                                    sizeof err))) {
            pl_error("TLS: %s", err);
            return 1;
        }
    }
    if (cfg->web_root && *cfg->web_root) {
        char err[512];
        if (!(srv->web = pl_static_new(cfg->web_root, err, sizeof err))) {
            pl_error("%s", err);
            return 1;
        }
    }
    if (cfg->dev)
        pl_warn("PARLEY_DEV=1: POST /api/dev/token mints a token for anyone; never on a server "
                "others can reach");

    int fds[64], tls_fds[64], metrics_fd = -1;
    int64_t node;
    if (bind_all(cfg->listen_host, cfg->listen_port, cfg->shards, fds, "PARLEY_LISTEN") != 0)
        return 1;
    if (bind_all(cfg->tls_listen_host, cfg->tls_listen_port, cfg->shards, tls_fds,
                 "PARLEY_TLS_LISTEN") != 0 ||
        bind_all(cfg->metrics_listen_host, cfg->metrics_listen_port, 1, &metrics_fd,
                 "PARLEY_METRICS_LISTEN") != 0 ||
        redis_startup(srv, &node) != 0 || (cfg->database_url && db_startup(cfg) != 0)) {
        close_all(fds, srv->nshards);
        close_all(tls_fds, srv->nshards);
        close_all(&metrics_fd, 1);
        return 1;
    }
    if (cfg->database_url) {
        if (!(srv->db = pl_db_start(cfg->database_url, cfg->db_workers, cfg->db_queue))) {
            pl_error("cannot start the database pool");
            return 1;
        }
    } else {
        pl_warn(
            "PARLEY_DATABASE_URL is not set: messages are delivered but not stored, and not acked");
    }

    uv_async_init(srv->loop, &srv->shard_done, on_shard_done);
    srv->shard_done.data = srv;
    uv_timer_init(srv->loop, &srv->deadline);
    srv->deadline.data = srv;
    uv_unref((uv_handle_t *)&srv->deadline);
    uv_async_init(srv->loop, &srv->drain_wake, on_drain_wake);
    srv->drain_wake.data = srv;
    uv_timer_init(srv->loop, &srv->drain_deadline);
    srv->drain_deadline.data = srv;
    uv_unref((uv_handle_t *)&srv->drain_deadline);
    if (start_loops(srv, fds, tls_fds, metrics_fd, node) != 0) return 1;

    uv_signal_init(srv->loop, &srv->sigterm);
    uv_signal_init(srv->loop, &srv->sigint);
    uv_signal_init(srv->loop, &srv->sighup);
    srv->sigterm.data = srv->sigint.data = srv->sighup.data = srv;
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sighup, on_sighup, SIGHUP);

    char where[160] = "";
    if (cfg->listen_host)
        snprintf(where, sizeof where, "%s:%d", cfg->listen_host, cfg->listen_port);
    if (cfg->tls_listen_host)
        snprintf(where + strlen(where), sizeof where - strlen(where), "%s%s:%d (TLS)",
                 *where ? " and " : "", cfg->tls_listen_host, cfg->tls_listen_port);
    pl_info("parleyd %s listening on %s with %d shard(s); redis %s:%d db %d", cfg->server_id, where,
            srv->nshards, cfg->redis_host, cfg->redis_port, cfg->redis_db);
    if (cfg->metrics_listen_host)
        pl_info("metrics on http://%s:%d/metrics", cfg->metrics_listen_host,
                cfg->metrics_listen_port);
    uv_run(srv->loop, UV_RUN_DEFAULT);

    if (atomic_load(&srv->shards_running) == 0) {
        for (int i = 0; i < srv->nshards; i++) {
            pl_loop_join(srv->loops[i]);
            pl_loop_free(srv->loops[i]);
        }
        free(srv->loops);
        free(srv->owe);
        free(srv->rooms_mask); /* the subscriber and every loop are gone */
        free(srv->conns);
        pl_tls_free(srv->tls);
        pl_static_free(srv->web);
        redis_unregister(srv);
        pl_info("stopped");
    }
    /* Otherwise a shard is stuck: returning from main ends the process regardless. */
    return 0;
}
