/*
 * server: start-up and shutdown of one parleyd process.
 *
 * Start-up binds one SO_REUSEPORT socket per shard here, in the main thread,
 * so a port in use is reported before anything runs. Shutdown (SIGTERM or
 * SIGINT) stops the subscriber, tells every shard to send server_notice and
 * close 1001, and exits when the shards are done or after a deadline.
 */
#include "parley/server.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "parley/db.h"
#include "parley/log.h"
#include "parley/script.h"

/* The whole shutdown must end within 5 s; shards get this long to drain. */
#define SHUTDOWN_DEADLINE_MS 4500
/* Of which the database pool gets this long to store what is queued. */
#define DB_DRAIN_MS 2500

int64_t pl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pl_server_redis_ok(pl_server_t *srv)
{
    if (!atomic_load_explicit(&srv->sub.connected, memory_order_relaxed)) return 0;
    for (int i = 0; i < srv->nshards; i++)
        if (!atomic_load_explicit(&srv->shards[i]->redis.connected, memory_order_relaxed)) return 0;
    return 1;
}

/* A bound (not yet listening) SO_REUSEPORT socket, or -errno. TCP_NODELAY is set here
 * because Linux copies it to every accepted socket: one setsockopt per connection saved. */
static int bind_reuseport(const char *host, int port)
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
        return -EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, err = 0;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0)
        err = -errno;
    freeaddrinfo(res);
    if (err) {
        if (fd >= 0) close(fd);
        return err;
    }
    return fd;
}

/*
 * Id generator nodes must differ between every shard of every live instance:
 * Redis hands out a block of them. Without Redis, a random block keeps
 * collisions unlikely (and is logged).
 */
static uint32_t alloc_id_nodes(const pl_config_t *cfg)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, tv);
    long long v = -1;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "INCRBY parley:id_nodes %d", cfg->shards);
        if (r && r->type == REDIS_REPLY_INTEGER) v = r->integer - cfg->shards;
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    if (v < 0) {
        srandom((unsigned)(getpid() ^ time(NULL)));
        v = random();
        pl_warn("redis unreachable at start-up: id node block chosen at random (%lld)",
                v % (1 << PL_IDGEN_NODE_BITS));
    }
    return (uint32_t)(v % (1 << PL_IDGEN_NODE_BITS));
}

/* An instance restarting under the same id: forget what its previous life left in Redis. */
static void reset_presence(const pl_config_t *cfg)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return; /* unreachable: the other instances' sweep will do it once our heartbeat lapses */
    }
    redisReply *r = cfg->redis_db ? redisCommand(c, "SELECT %d", cfg->redis_db) : NULL;
    if (r) freeReplyObject(r);
    r = redisCommand(c, "EVAL %s 0 %s %s", pl_script_source(PL_SCRIPT_RESET), cfg->redis_prefix,
                     cfg->server_id);
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        pl_info(
            "presence: %lld user(s) left online by this server id's previous run reported offline",
            r->integer);
    else if (r && r->type == REDIS_REPLY_ERROR)
        pl_warn("presence reset: %s", r->str);
    if (r) freeReplyObject(r);
    redisFree(c);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) pl_warn("setrlimit(NOFILE): %s", strerror(errno));
    }
    pl_info("open files limit %llu (at most ~%llu connections per process)",
            (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_cur - 100);
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

static void on_signal(uv_signal_t *h, int signum)
{
    pl_server_t *srv = h->data;
    if (srv->stopping) return;
    srv->stopping = 1;
    pl_info("%s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_timer_start(&srv->deadline, on_deadline, SHUTDOWN_DEADLINE_MS, 0);
    /* Stop the subscriber first: after it is joined it posts nothing more. */
    pl_subscriber_stop(&srv->sub);
    for (int i = 0; i < srv->nshards; i++)
        pl_shard_post(srv->shards[i], &srv->shards[i]->shutdown_ev);
    /* Then let the database pool store what it holds (acks still reach clients being closed,
     * if they are still there), and only then tell the shards that nothing more will come. */
    if (srv->db) {
        pl_db_stop(srv->db, DB_DRAIN_MS);
        srv->db = NULL;
    }
    for (int i = 0; i < srv->nshards; i++)
        pl_shard_post(srv->shards[i], &srv->shards[i]->finish_ev);
}

int pl_server_run(pl_config_t *cfg)
{
    static pl_server_t server;
    pl_server_t *srv = &server;
    srv->cfg = *cfg;
    srv->nshards = cfg->shards;
    srv->started_ms = pl_now_ms();
    srv->loop = uv_default_loop();
    raise_nofile();

    int fds[64];
    for (int i = 0; i < srv->nshards; i++) {
        fds[i] = bind_reuseport(cfg->listen_host, cfg->listen_port);
        if (fds[i] < 0) {
            pl_error("cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                     strerror(-fds[i]));
            return 1;
        }
    }
    uint32_t node = alloc_id_nodes(cfg);
    if (pl_script_init() != 0) {
        pl_error("cannot hash the Redis scripts");
        return 1;
    }
    reset_presence(cfg);
    if (cfg->database_url) {
        srv->db = pl_db_start(cfg->database_url, cfg->db_workers, cfg->db_queue, cfg->redis_host,
                              cfg->redis_port, cfg->redis_db, cfg->redis_prefix);
        if (!srv->db) {
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

    srv->rooms_mask = calloc(1, sizeof *srv->rooms_mask);
    srv->shards = calloc((size_t)srv->nshards, sizeof *srv->shards);
    if (!srv->shards || !srv->rooms_mask) return 1;
    atomic_init(&srv->shards_running, 0);
    for (int i = 0; i < srv->nshards; i++) {
        srv->shards[i] = calloc(1, sizeof(pl_shard_t));
        if (!srv->shards[i]) return 1;
    }
    /* The subscriber reads srv->shards, so every shard exists before it starts. */
    for (int i = 0; i < srv->nshards; i++) {
        int rc = pl_shard_start(srv->shards[i], srv, i, fds[i], node + (uint32_t)i);
        if (rc != 0) {
            pl_error("shard %d: %s", i, uv_strerror(rc));
            return 1;
        }
        atomic_fetch_add(&srv->shards_running, 1);
    }
    int rc = pl_subscriber_start(&srv->sub, srv);
    if (rc != 0) {
        pl_error("subscriber thread: %s", strerror(-rc));
        return 1;
    }

    uv_signal_init(srv->loop, &srv->sigterm);
    uv_signal_init(srv->loop, &srv->sigint);
    srv->sigterm.data = srv->sigint.data = srv;
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv->sigint, on_signal, SIGINT);

    pl_info("parleyd %s listening on %s:%d with %d shard(s); redis %s:%d db %d", cfg->server_id,
            cfg->listen_host, cfg->listen_port, srv->nshards, cfg->redis_host, cfg->redis_port,
            cfg->redis_db);
    uv_run(srv->loop, UV_RUN_DEFAULT);

    if (atomic_load(&srv->shards_running) == 0) {
        for (int i = 0; i < srv->nshards; i++) {
            pl_shard_join(srv->shards[i]);
            free(srv->shards[i]);
        }
        free(srv->shards);
        free(srv->rooms_mask); /* the subscriber and every shard are gone */
        pl_info("stopped");
    }
    /* Otherwise a shard is stuck: returning from main ends the process regardless. */
    return 0;
}
