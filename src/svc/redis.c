/* redis: hiredis async + libuv adapter, with reconnect; see the header. */
#include "parley/svc/redis.h"

#include "parley/svc/reply.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/base/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* hiredis gives no privdata for context callbacks; ac->data carries the pl_redis_t. */

/*
 * hiredis 0.14's libuv adapter ignores a poll callback with an error status.
 * libuv reports POLLERR that way (and stops watching), which is exactly what
 * a refused connect or a reset connection produces, so with the stock
 * callbacks a reconnect attempt hangs forever. We keep the adapter's attach
 * and cleanup and replace its event callbacks: on an error status, hiredis is
 * told the socket is ready for whatever we waited for and finds the error
 * itself.
 */
static void poll_cb(uv_poll_t *h, int status, int events)
{
    redisLibuvEvents *p = h->data;
    if (status < 0) events = p->events;
    if (p->context && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
    if (p->context && (events & UV_READABLE)) redisAsyncHandleRead(p->context);
}

static void poll_update(redisLibuvEvents *p, int add, int del)
{
    int events = (p->events | add) & ~del;
    /* hiredis asks for reads after every write: an unchanged set costs no epoll_ctl. */
    if (events == p->events && uv_is_active((uv_handle_t *)&p->handle) == (events != 0)) return;
    p->events = events;
    if (p->events)
        uv_poll_start(&p->handle, p->events, poll_cb);
    else
        uv_poll_stop(&p->handle);
}

static void ev_add_read(void *pd)
{
    poll_update(pd, UV_READABLE, 0);
}

static void ev_del_read(void *pd)
{
    poll_update(pd, 0, UV_READABLE);
}

/*
 * Commands are not written as they are issued: hiredis would ask for
 * POLLOUT (an epoll_ctl), wait a loop turn for it, write one command and
 * drop POLLOUT again (another epoll_ctl). Instead the shard writes everything
 * issued during a loop turn with one write in its check phase
 * (pl_redis_flush). Only a connect in progress, or a write the kernel did not
 * take whole, waits for POLLOUT.
 */
static void ev_add_write(void *pd)
{
    redisLibuvEvents *p = pd;
    pl_redis_t *r = p->context ? p->context->data : NULL;
    if (r && (p->context->c.flags & REDIS_CONNECTED) && !r->flushing) {
        r->flush_pending = 1;
        return;
    }
    poll_update(pd, UV_WRITABLE, 0);
}

static void ev_del_write(void *pd)
{
    poll_update(pd, 0, UV_WRITABLE);
}

static void connect_now(pl_redis_t *r);

static void retry_cb(uv_timer_t *t)
{
    connect_now(t->data);
}

static void lost(pl_redis_t *r, const char *why)
{
    r->ac = NULL;
    r->flush_pending = 0;
    atomic_store(&r->connected, 0);
    if (r->was_up && !r->stopping)
        pl_warn("redis %s:%d lost (%s); reconnecting", r->addr->host, r->addr->port, why);
    r->was_up = 0;
    if (r->stopping) return;
    uv_timer_start(&r->retry, retry_cb, (uint64_t)r->backoff_ms, 0);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    pl_redis_t *r = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        pl_debug("redis connect to %s:%d failed: %s", r->addr->host, r->addr->port, ac->errstr);
        lost(r, ac->errstr);
        return;
    }
    atomic_store(&r->connected, 1);
    pl_info("redis %s:%d connected", r->addr->host, r->addr->port);
    if (r->ever_up) pl_counter_add(&r->stats.reconnects, 1);
    r->ever_up = 1;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->was_up = 1;
    if (r->on_connect) r->on_connect(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    pl_redis_t *r = ac->data;
    lost(r, status == REDIS_OK ? "closed" : ac->errstr);
}

/* The login's answer: a refusal (wrong password, unknown user) ends this connection; the retry
 * timer tries again, so a password fixed on the Redis side is picked up. */
static void auth_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_redis_t *r = privdata;
    redisReply *rep = reply;
    if (!rep) return;
    if (rep->type != REDIS_REPLY_ERROR) {
        r->auth_refused = 0;
        return;
    }
    if (!r->auth_refused)
        pl_error("redis %s:%d refused the login (retrying): %.200s", r->addr->host, r->addr->port,
                 rep->str);
    r->auth_refused = 1;
    redisAsyncDisconnect(ac);
}

/* AUTH [user] password and SELECT db: queued first, so they go before any command. */
static void login(pl_redis_t *r, redisAsyncContext *ac)
{
    const pl_redis_addr_t *a = r->addr;
    if (a->password) {
        const char *argv[3] = {"AUTH", a->user ? a->user : a->password, a->password};
        size_t lens[3] = {4, strlen(argv[1]), strlen(a->password)};
        redisAsyncCommandArgv(ac, auth_reply, r, a->user ? 3 : 2, argv, lens);
    }
    if (a->db) redisAsyncCommand(ac, NULL, NULL, "SELECT %d", a->db);
}

static void connect_now(pl_redis_t *r)
{
    if (r->stopping) return;
    redisAsyncContext *ac = redisAsyncConnect(r->addr->host, r->addr->port);
    if (!ac || ac->err) {
        pl_debug("redis connect to %s:%d: %s", r->addr->host, r->addr->port,
                 ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        r->was_up = 0;
        uv_timer_start(&r->retry, retry_cb, (uint64_t)r->backoff_ms, 0);
        r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
        return;
    }
    ac->data = r;
    pl_reply_attach(ac->c.reader, r->arena);
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        uv_timer_start(&r->retry, retry_cb, BACKOFF_MAX_MS, 0);
        return;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    login(r, ac);
}

/* One command on a blocking connection; 0, or -1 with why in err. */
static int sync_cmd(redisContext *c, const pl_redis_addr_t *a, int argc, const char **argv,
                    const size_t *lens, char *err, size_t n)
{
    redisReply *rep = redisCommandArgv(c, argc, argv, lens);
    int ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (!ok)
        snprintf(err, n, "%s:%d: %s refused: %.200s", a->host, a->port, argv[0],
                 rep ? rep->str : c->errstr);
    if (rep) freeReplyObject(rep);
    return ok ? 0 : -1;
}

redisContext *pl_redis_connect_sync(const pl_redis_addr_t *a, int timeout_ms, char *err, size_t n)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
    if (!c || c->err) {
        snprintf(err, n, "%s:%d: %s", a->host, a->port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    if (a->password) {
        const char *argv[3] = {"AUTH", a->user ? a->user : a->password, a->password};
        size_t lens[3] = {4, strlen(argv[1]), strlen(a->password)};
        if (sync_cmd(c, a, a->user ? 3 : 2, argv, lens, err, n) != 0) goto fail;
    }
    if (a->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", a->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        if (sync_cmd(c, a, 2, argv, lens, err, n) != 0) goto fail;
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

int pl_redis_start(pl_redis_t *r, uv_loop_t *loop, const pl_redis_addr_t *addr)
{
    r->loop = loop;
    r->addr = addr;
    r->ac = NULL;
    atomic_init(&r->connected, 0);
    r->backoff_ms = BACKOFF_MIN_MS;
    r->stopping = 0;
    r->was_up = 1; /* so the first failure is logged */
    r->cmd = (pl_buf_t){0};
    r->arena = pl_reply_arena_new();
    if (!r->arena) return UV_ENOMEM;
    int rc = uv_timer_init(loop, &r->retry);
    if (rc != 0) {
        pl_reply_arena_free(r->arena);
        r->arena = NULL;
        return rc;
    }
    r->retry.data = r;
    connect_now(r);
    return 0;
}

/*
 * Every command's reply comes here first. A connection that is not subscribed answers in the
 * order it was asked, and hiredis calls each command's callback exactly once (with NULL if the
 * connection went), so the oldest entry of the ring is this reply's command: its latency is
 * measured without an allocation or a lookup per command. AUTH and SELECT at connect time have
 * their own callbacks and are not in the ring.
 */
static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_redis_t *r = privdata;
    pl_redis_pending_t p = r->pend[r->pend_head];
    r->pend_head = (r->pend_head + 1) & (r->pend_cap - 1);
    r->pend_n--;
    if (reply)
        pl_hist_observe(&r->stats.latency, &pl_hist_seconds, (uv_hrtime() - p.t0) / 1000);
    else
        pl_counter_add(&r->stats.lost, 1);
    if (p.cb) p.cb(ac, reply, p.privdata);
}

/* Room for one more command in flight; -1 on out of memory. */
static int pend_reserve(pl_redis_t *r)
{
    if (r->pend_n < r->pend_cap) return 0;
    uint32_t cap = r->pend_cap ? r->pend_cap * 2 : 64;
    pl_redis_pending_t *p = malloc(cap * sizeof *p);
    if (!p) return -1;
    for (uint32_t i = 0; i < r->pend_n; i++)
        p[i] = r->pend[(r->pend_head + i) & (r->pend_cap - 1)];
    free(r->pend);
    r->pend = p;
    r->pend_head = 0;
    r->pend_cap = cap;
    return 0;
}

void pl_redis_format(pl_buf_t *b, int argc, const char **argv, const size_t *lens)
{
    /* RESP by hand into a reused buffer: hiredis' own formatting (sdscatfmt per argument, two
     * allocations per command) was a fifth of a published message's instructions. */
    size_t need = 16;
    for (int i = 0; i < argc; i++)
        need += lens[i] + 24;
    pl_buf_reset(b);
    pl_buf_reserve(b, need);
    pl_buf_add(b, "*", 1);
    pl_buf_uint(b, (uint64_t)argc);
    pl_buf_add(b, "\r\n", 2);
    for (int i = 0; i < argc; i++) {
        pl_buf_add(b, "$", 1);
        pl_buf_uint(b, lens[i]);
        pl_buf_add(b, "\r\n", 2);
        pl_buf_add(b, argv[i], lens[i]);
        pl_buf_add(b, "\r\n", 2);
    }
}

int pl_redis_command(pl_redis_t *r, pl_redis_cb cb, void *privdata, int argc, const char **argv,
                     const size_t *lens)
{
    if (!r->ac || !atomic_load_explicit(&r->connected, memory_order_relaxed)) return -1;
    pl_redis_format(&r->cmd, argc, argv, lens);
    return pl_redis_command_raw(r, cb, privdata, r->cmd.data, r->cmd.len);
}

int pl_redis_command_raw(pl_redis_t *r, pl_redis_cb cb, void *privdata, const char *resp,
                         size_t len)
{
    if (!r->ac || !atomic_load_explicit(&r->connected, memory_order_relaxed)) return -1;
    if (pend_reserve(r) != 0 ||
        redisAsyncFormattedCommand(r->ac, reply_cb, r, resp, len) != REDIS_OK)
        return -1;
    /* Queued, not yet written (pl_redis_flush): no reply can have come before this entry. */
    r->pend[(r->pend_head + r->pend_n) & (r->pend_cap - 1)] =
        (pl_redis_pending_t){cb, privdata, uv_hrtime()};
    r->pend_n++;
    return 0;
}

void pl_redis_flush(pl_redis_t *r)
{
    if (!r->flush_pending || !r->ac) return;
    r->flush_pending = 0;
    r->flushing = 1;
    redisAsyncHandleWrite(r->ac); /* may free the context on a write error */
    r->flushing = 0;
}

pl_redis_t *pl_redis_of(struct redisAsyncContext *ac)
{
    return ac ? ac->data : NULL;
}

void pl_redis_stop(pl_redis_t *r)
{
    r->stopping = 1;
    uv_timer_stop(&r->retry);
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks get NULL; on_disconnect runs */
    }
    pl_reply_arena_free(r->arena); /* after the context: freeing it may free a partial reply */
    r->arena = NULL;
    pl_buf_free(&r->cmd);
    free(r->pend); /* after the context: its pending callbacks emptied the ring */
    r->pend = NULL;
    r->pend_n = r->pend_cap = r->pend_head = 0;
    atomic_store(&r->connected, 0);
    if (!uv_is_closing((uv_handle_t *)&r->retry)) uv_close((uv_handle_t *)&r->retry, NULL);
}
