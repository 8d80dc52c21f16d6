/*
 * subscriber: blocking hiredis in a thread of its own; see the header.
 */
#include "parley/svc/subscriber.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "parley/base/log.h"
#include "parley/svc/reply.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* Guards `fd` against pl_subscriber_stop shutting down a socket being closed or reused. */
static pthread_mutex_t fd_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_fd(pl_subscriber_t *s, int fd)
{
    pthread_mutex_lock(&fd_lock);
    atomic_store(&s->fd, fd);
    pthread_mutex_unlock(&fd_lock);
}

/* Sleep in short steps so a stop request is seen promptly. */
static void backoff_sleep(pl_subscriber_t *s, int ms)
{
    for (int slept = 0; slept < ms && !atomic_load(&s->stop); slept += 50) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ["pmessage", pattern, chan, payload] or ["message", chan, payload]: to the application.
 * Returns 1 for a (p)subscribe confirmation. */
static int dispatch(pl_subscriber_t *s, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    const char *what = r->element[0]->str;
    int pm = r->elements == 4 && strcmp(what, "pmessage") == 0;
    if (pm || (r->elements == 3 && strcmp(what, "message") == 0)) pl_counter_add(&s->messages, 1);
    if (pm)
        s->h->on_message(s->ud, r->element[2]->str, r->element[2]->len, r->element[3]->str,
                         r->element[3]->len, 1);
    else if (r->elements == 3 && strcmp(what, "message") == 0)
        s->h->on_message(s->ud, r->element[1]->str, r->element[1]->len, r->element[2]->str,
                         r->element[2]->len, 0);
    else
        return strcmp(what, "psubscribe") == 0 || strcmp(what, "subscribe") == 0;
    return 0;
}

static void serve(pl_subscriber_t *s, redisContext *c)
{
    for (;;) {
        void *reply = NULL;
        /* Hand over what is already buffered, then say so and block. */
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) return;
        if (!reply) {
            s->h->on_idle(s->ud);
            if (redisGetReply(c, &reply) != REDIS_OK || !reply) return;
        }
        dispatch(s, reply);
        pl_reply_free(reply);
    }
}

/* Send the subscribe commands and wait for their confirmations (handing over any message that
 * arrives meanwhile). */
static int subscribe_all(pl_subscriber_t *s, redisContext *c)
{
    for (int i = 0; i < s->ncmds; i++) {
        /* Split on spaces ourselves: the command is data, never a format string. */
        const char *argv[8];
        size_t lens[8];
        int argc = 0;
        for (const char *p = s->cmds[i]; *p && argc < 8;) {
            while (*p == ' ')
                p++;
            if (!*p) break;
            size_t len = strcspn(p, " ");
            argv[argc] = p;
            lens[argc++] = len;
            p += len;
        }
        if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK) return -1;
    }
    for (int confirmed = 0; confirmed < s->ncmds;) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK || !reply) return -1;
        redisReply *rr = reply;
        int err = rr->type == REDIS_REPLY_ERROR;
        if (err)
            pl_error("subscriber: %s", rr->str);
        else
            confirmed += dispatch(s, rr);
        pl_reply_free(reply);
        if (err) return -1;
    }
    return 0;
}

static void *sub_main(void *arg)
{
    pl_subscriber_t *s = arg;
    pl_log_set_thread("redis-sub");
    /* Replies are built in one arena, emptied after each: no allocation per message. */
    pl_reply_arena_t *arena = pl_reply_arena_new();
    int backoff = BACKOFF_MIN_MS, logged_down = 0, ever_up = 0;
    if (!arena) pl_error("subscriber: out of memory; not subscribing");
    while (arena && !atomic_load(&s->stop)) {
        char err[256];
        /* A short timeout: a shutdown waits for it. */
        redisContext *c = pl_redis_connect_sync(s->addr, 1000, err, sizeof err);
        if (!c) {
            if (!logged_down) pl_warn("subscriber: redis %s; retrying", err);
            logged_down = 1;
            backoff_sleep(s, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        set_fd(s, c->fd);
        if (s->h->on_connected) s->h->on_connected(s->ud, c, ever_up);
        /* Only now: what on_connected read was allocated by hiredis, not the arena. */
        pl_reply_attach(c->reader, arena);
        redisEnableKeepAlive(c); /* notice a Redis that vanished without closing */
        if (subscribe_all(s, c) == 0) {
            struct timeval none = {0, 0}; /* block for as long as Redis is quiet */
            redisSetTimeout(c, none);
            atomic_store(&s->connected, 1);
            if (ever_up) pl_counter_add(&s->reconnects, 1);
            if (s->h->on_subscribed) s->h->on_subscribed(s->ud, ever_up);
            ever_up = 1;
            backoff = BACKOFF_MIN_MS;
            logged_down = 0;
            pl_info("subscriber: %d subscription(s) on %s:%d", s->ncmds, s->addr->host,
                    s->addr->port);
            serve(s, c);
            atomic_store(&s->connected, 0);
            s->h->on_idle(s->ud);
            if (!atomic_load(&s->stop))
                pl_warn("subscriber: redis connection lost (%s); reconnecting",
                        c->errstr[0] ? c->errstr : "closed");
        }
        set_fd(s, -1);
        redisFree(c);
        if (!atomic_load(&s->stop)) backoff_sleep(s, backoff);
    }
    pl_reply_arena_free(arena); /* after redisFree: it frees a partly read reply through it */
    return NULL;
}

int pl_subscriber_start(pl_subscriber_t *s, const pl_redis_addr_t *addr, const char *const *cmds,
                        int ncmds, const pl_subscriber_handlers_t *h, void *ud)
{
    if (ncmds > PL_SUBSCRIBER_CMDS) return -EINVAL;
    s->addr = addr;
    s->h = h;
    s->ud = ud;
    s->ncmds = ncmds;
    for (int i = 0; i < ncmds; i++)
        s->cmds[i] = cmds[i];
    atomic_init(&s->connected, 0);
    atomic_init(&s->stop, 0);
    atomic_init(&s->fd, -1);
    int rc = pthread_create(&s->thread, NULL, sub_main, s);
    return rc ? -rc : 0;
}

void pl_subscriber_stop(pl_subscriber_t *s)
{
    atomic_store(&s->stop, 1);
    pthread_mutex_lock(&fd_lock);
    int fd = atomic_load(&s->fd);
    if (fd >= 0) shutdown(fd, SHUT_RDWR); /* unblocks redisGetReply */
    pthread_mutex_unlock(&fd_lock);
    pthread_join(s->thread, NULL);
}
