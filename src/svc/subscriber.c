/*
 * subscriber: blocking hiredis under poll, in a thread of its own; see the header.
 */
#include "parley/svc/subscriber.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/reply.h"
#include "parley/svc/slots.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* Channels per SUBSCRIBE when resubscribing: one command per few hundred keeps each small. */
#define RESUB_BATCH 256

/* Guards `fd` against pl_subscriber_stop shutting down a socket being closed or reused. */
static pthread_mutex_t fd_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_fd(pl_subscriber_t *s, int fd)
{
    pthread_mutex_lock(&fd_lock);
    atomic_store(&s->fd, fd);
    pthread_mutex_unlock(&fd_lock);
}

/* ---- counted channels (the thread's alone) ---- */

/* One channel asked for. Redis's view of it is `on` (the last confirmation); commands sent
 * and not confirmed yet are counted, since an add, a drop and an add in quick succession put
 * SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE on the wire and only the last confirmation means "in
 * effect for the add now waiting". */
typedef struct chan {
    struct chan *next;
    uint32_t hash;
    int refs;        /* adds minus drops */
    int subs_sent;   /* SUBSCRIBEs not confirmed yet */
    int unsubs_sent; /* UNSUBSCRIBEs not confirmed yet */
    int on;          /* subscribed, as of the last confirmation */
    int node;        /* cluster mode: the node its SSUBSCRIBE went to, -1 if none holds it */
    int gap;         /* cluster mode: subscribed again after its slot moved; its catch-up is owed */
    pl_subscriber_chan_t *waiters, *waiters_tail; /* adds waiting for subs_sent to reach 0 */
    size_t len;
    char name[];
} chan_t;

struct pl_subscriber_chans {
    chan_t **b;
    size_t nb; /* a power of two */
    size_t n;
    long on; /* channels with `on` set */
};

static uint32_t chan_hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static chan_t **chan_slot(struct pl_subscriber_chans *t, const char *name, size_t len, uint32_t h)
{
    chan_t **pp = &t->b[h & (t->nb - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->name, name, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

/* Double the buckets once there are more channels than buckets. A failed grow only makes the
 * chains longer. */
static void chans_grow(struct pl_subscriber_chans *t)
{
    size_t nb = t->nb * 2;
    chan_t **b = calloc(nb, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < t->nb; i++)
        for (chan_t *e = t->b[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

/* The channel's entry; a new one if `create` (NULL if absent, or out of memory). */
static chan_t *chan_get(struct pl_subscriber_chans *t, const char *name, size_t len, int create)
{
    uint32_t h = chan_hash(name, len);
    chan_t **pp = chan_slot(t, name, len, h);
    if (*pp || !create) return *pp;
    chan_t *e = calloc(1, sizeof *e + len + 1);
    if (!e) return NULL;
    e->hash = h;
    e->node = -1;
    e->len = len;
    memcpy(e->name, name, len);
    *pp = e;
    if (++t->n > t->nb) chans_grow(t);
    return e;
}

/* Forget a channel nobody holds and Redis has no command of ours for. */
static void chan_maybe_free(struct pl_subscriber_chans *t, chan_t *e)
{
    if (e->refs || e->subs_sent || e->unsubs_sent || e->on || e->waiters) return;
    chan_t **pp = chan_slot(t, e->name, e->len, e->hash);
    *pp = e->next;
    t->n--;
    free(e);
}

static void chan_set_on(pl_subscriber_t *s, chan_t *e, int on)
{
    if (e->on == on) return;
    e->on = on;
    s->chans->on += on ? 1 : -1;
    pl_counter_set(&s->channels, (unsigned long)s->chans->on);
}

/* Hand every waiting add of `e` back. */
static void chan_answer(pl_subscriber_t *s, chan_t *e, int ok)
{
    pl_subscriber_chan_t *w = e->waiters;
    e->waiters = e->waiters_tail = NULL;
    while (w) {
        pl_subscriber_chan_t *next = w->wnext;
        s->h->on_chan(s->ud, w, ok);
        w = next;
    }
}

static void chans_each(struct pl_subscriber_chans *t, void (*fn)(pl_subscriber_t *, chan_t *),
                       pl_subscriber_t *s)
{
    for (size_t i = 0; t && i < t->nb; i++)
        for (chan_t *e = t->b[i], *next; e; e = next) {
            next = e->next; /* fn may free e */
            fn(s, e);
        }
}

static int send_one(redisContext *c, const char *verb, const chan_t *e)
{
    const char *argv[2] = {verb, e->name};
    size_t lens[2] = {strlen(verb), e->len};
    return redisAppendCommandArgv(c, 2, argv, lens) == REDIS_OK ? 0 : -1;
}

/* A (un)subscribe confirmation of a counted channel (others are not in the table). */
static void chan_confirmed(pl_subscriber_t *s, const char *name, size_t len, int subscribed)
{
    chan_t *e = s->chans ? chan_get(s->chans, name, len, 0) : NULL;
    if (!e) return;
    if (subscribed) {
        if (e->subs_sent > 0) e->subs_sent--;
        chan_set_on(s, e, 1);
        if (!e->subs_sent) chan_answer(s, e, 1);
    } else {
        if (e->unsubs_sent > 0) e->unsubs_sent--;
        chan_set_on(s, e, 0);
    }
    chan_maybe_free(s->chans, e);
}

/* A request, with `c` the connection (its commands are appended, not flushed) or NULL while
 * there is none. */
static redisContext *cluster_conn(pl_subscriber_t *s, chan_t *e, int add, int *node);

static void chan_request(pl_subscriber_t *s, redisContext *c, pl_subscriber_chan_t *req)
{
    chan_t *e = s->chans ? chan_get(s->chans, req->name, req->len, req->add) : NULL;
    int node = -1;
    /* Cluster mode: the channel's command goes to the node its slot (or its subscription) is on. */
    if (s->cluster) c = e ? cluster_conn(s, e, req->add, &node) : NULL;
    if (!req->add) {
        if (!e || e->refs == 0) {
            pl_error("subscriber: channel %.*s dropped more often than added", (int)req->len,
                     req->name);
        } else if (--e->refs == 0 && c) {
            if (send_one(c, s->cluster ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", e) == 0) e->unsubs_sent++;
        }
        if (e) chan_maybe_free(s->chans, e);
        s->h->on_chan(s->ud, req, 1);
        return;
    }
    if (!e) {
        pl_error("subscriber: out of memory: channel %.*s not subscribed", (int)req->len,
                 req->name);
        s->h->on_chan(s->ud, req, 0);
        return;
    }
    /* Down: the resubscription after the reconnect includes it, and on_subscribed tells. */
    if (++e->refs == 1 && c && send_one(c, s->cluster ? "SSUBSCRIBE" : "SUBSCRIBE", e) == 0) {
        e->subs_sent++;
        e->node = node;
    }
    if (!c || (e->on && !e->subs_sent)) {
        s->h->on_chan(s->ud, req, 1);
        return;
    }
    req->wnext = NULL;
    if (e->waiters_tail)
        e->waiters_tail->wnext = req;
    else
        e->waiters = req;
    e->waiters_tail = req;
}

/* Take the queued requests; with a connection, send what they need. Returns 0, or -1 if the
 * connection failed. */
static int take_requests(pl_subscriber_t *s, redisContext *c)
{
    uint64_t v;
    if (read(s->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
        pl_warn("subscriber: eventfd read: %s", strerror(errno));
    for (pl_mpsc_node_t *n = pl_mpsc_take_all(&s->requests), *next; n; n = next) {
        next = n->next;
        chan_request(s, c, (pl_subscriber_chan_t *)n);
    }
    if (!c) return 0;
    for (int done = 0; !done;)
        if (redisBufferWrite(c, &done) != REDIS_OK) return -1;
    return 0;
}

/* The connection is gone: Redis forgot every subscription; waiting adds are answered (the
 * resubscription covers them), or, when the thread is stopping, handed back unheard. */
static void chan_lost(pl_subscriber_t *s, chan_t *e)
{
    e->subs_sent = e->unsubs_sent = 0;
    chan_set_on(s, e, 0);
    chan_answer(s, e, !atomic_load(&s->stop));
    chan_maybe_free(s->chans, e);
}

static void chan_stopped(pl_subscriber_t *s, chan_t *e)
{
    chan_answer(s, e, 0);
    free(e);
}

/* ---- the connection ---- */

/* Wait up to `ms` in short steps, taking requests as they come (there is no connection, so adds
 * are answered at once), until a stop request. */
static void backoff_sleep(pl_subscriber_t *s, int ms)
{
    int64_t until = pl_now_ms() + ms;
    for (int64_t now; !atomic_load(&s->stop) && (now = pl_now_ms()) < until;) {
        struct pollfd p = {s->wake_fd, POLLIN, 0};
        if (poll(&p, 1, (int)(until - now)) > 0) take_requests(s, NULL);
    }
}

/* ["pmessage", pattern, chan, payload] or ["message", chan, payload]: to the application.
 * Confirmations of counted channels update their table. Returns 1 for a (p)subscribe
 * confirmation. */
static int dispatch(pl_subscriber_t *s, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    const char *what = r->element[0]->str;
    int pm = r->elements == 4 && strcmp(what, "pmessage") == 0;
    if (pm || (r->elements == 3 && strcmp(what, "message") == 0)) pl_counter_add(&s->messages, 1);
    if (pm) {
        s->h->on_message(s->ud, r->element[2]->str, r->element[2]->len, r->element[3]->str,
                         r->element[3]->len, 1);
    } else if (r->elements == 3 && strcmp(what, "message") == 0) {
        s->h->on_message(s->ud, r->element[1]->str, r->element[1]->len, r->element[2]->str,
                         r->element[2]->len, 0);
    } else if (r->element[1]->type == REDIS_REPLY_STRING) {
        int sub = strcmp(what, "subscribe") == 0;
        if (sub || strcmp(what, "unsubscribe") == 0)
            chan_confirmed(s, r->element[1]->str, r->element[1]->len, sub);
        return sub || strcmp(what, "psubscribe") == 0;
    }
    return 0;
}

/* Hand over what is already read, then wait for Redis or for requests. Returns when the
 * connection fails or a stop is asked for. */
static void serve(pl_subscriber_t *s, redisContext *c)
{
    struct pollfd p[2] = {{c->fd, POLLIN, 0}, {s->wake_fd, POLLIN, 0}};
    while (!atomic_load(&s->stop)) {
        void *reply = NULL;
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) return;
        if (reply) {
            dispatch(s, reply);
            pl_reply_free(reply);
            continue;
        }
        s->h->on_idle(s->ud);
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            c->err = REDIS_ERR_IO;
            snprintf(c->errstr, sizeof c->errstr, "poll: %s", strerror(errno));
            return;
        }
        if (p[1].revents && take_requests(s, c) != 0) return;
        if (p[0].revents && redisBufferRead(c) != REDIS_OK) return;
    }
}

/* Split a fixed command on spaces ourselves (it is data, never a format string) and append it. */
static int append_fixed(redisContext *c, const char *cmd)
{
    const char *argv[8];
    size_t lens[8];
    int argc = 0;
    for (const char *p = cmd; *p && argc < 8;) {
        while (*p == ' ')
            p++;
        if (!*p) break;
        size_t len = strcspn(p, " ");
        argv[argc] = p;
        lens[argc++] = len;
        p += len;
    }
    return redisAppendCommandArgv(c, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

/* The counted channels still held, as SUBSCRIBE commands of up to RESUB_BATCH channels.
 * Returns how many channels were sent, or -1. */
static long resubscribe(pl_subscriber_t *s, redisContext *c)
{
    struct pl_subscriber_chans *t = s->chans;
    const char *argv[RESUB_BATCH + 1];
    size_t lens[RESUB_BATCH + 1];
    chan_t *batch[RESUB_BATCH];
    long sent = 0;
    int n = 0;
    argv[0] = "SUBSCRIBE";
    lens[0] = 9;
    for (size_t i = 0; i <= t->nb; i++) {
        for (chan_t *e = i < t->nb ? t->b[i] : NULL; e; e = e->next) {
            if (!e->refs) continue;
            batch[n] = e;
            argv[n + 1] = e->name;
            lens[n + 1] = e->len;
            n++;
            if (n < RESUB_BATCH) continue;
            if (redisAppendCommandArgv(c, n + 1, argv, lens) != REDIS_OK) return -1;
            for (int k = 0; k < n; k++)
                batch[k]->subs_sent++;
            sent += n;
            n = 0;
        }
        if (i == t->nb && n > 0) {
            if (redisAppendCommandArgv(c, n + 1, argv, lens) != REDIS_OK) return -1;
            for (int k = 0; k < n; k++)
                batch[k]->subs_sent++;
            sent += n;
        }
    }
    return sent;
}

/* Send the fixed commands and the counted channels, and wait for their confirmations (handing
 * over any message that arrives meanwhile). */
static int subscribe_all(pl_subscriber_t *s, redisContext *c, long *nchans)
{
    for (int i = 0; i < s->ncmds; i++)
        if (append_fixed(c, s->cmds[i]) != 0) return -1;
    long n = resubscribe(s, c);
    if (n < 0) return -1;
    *nchans = n;
    for (long confirmed = 0; confirmed < s->ncmds + n;) {
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

/* ---- cluster mode: one connection per master, SSUBSCRIBE per channel ---- */

/* A master's connection. The thread's alone. */
typedef struct {
    char host[64];
    int port;
    redisContext *c;         /* NULL while down */
    pl_reply_arena_t *arena; /* its reader's: replies of two nodes may be half-read at once */
    int64_t retry_at;        /* when down: when to connect again, pl_now_ms */
    int backoff;             /* ms */
    long resub_left;         /* SSUBSCRIBE confirmations of the resubscription to come */
    int logged_down;
    int refuse; /* it redirected an SSUBSCRIBE: to be reconnected */
} snode_t;

struct pl_subscriber_nodes {
    snode_t n[PL_SLOTS_NODES_MAX];
    int nn;
    pl_slots_map_t map; /* owner[] indexes map.nodes, not n: see owner_node */
    int have_map;
    int refresh; /* the map must be read again (a node went, a slot moved) */
    int64_t refreshed_at;
    int synced_once; /* every master was subscribed once: later resubscriptions are gaps */
    int gap_owed;    /* a resubscription after a loss or a move is confirmed: tell the app */
    int lost;        /* chan_lost_node's node */
};

#define CLUSTER_REFRESH_MIN_MS 100

static int node_find(struct pl_subscriber_nodes *t, const char *host, int port)
{
    for (int i = 0; i < t->nn; i++)
        if (t->n[i].port == port && strcmp(t->n[i].host, host) == 0) return i;
    if (t->nn == PL_SLOTS_NODES_MAX || strlen(host) >= sizeof t->n[0].host) return -1;
    snode_t *n = &t->n[t->nn];
    memset(n, 0, sizeof *n);
    memcpy(n->host, host, strlen(host) + 1);
    n->port = port;
    n->backoff = BACKOFF_MIN_MS;
    n->resub_left = -1;
    return t->nn++;
}

/* The node serving `slot` as of the map, or -1. */
static int owner_node(struct pl_subscriber_nodes *t, uint16_t slot)
{
    const pl_slots_node_t *o = t->have_map ? pl_slots_node(&t->map, slot) : NULL;
    return o ? node_find(t, o->host, o->port) : -1;
}

/* A node is synced when connected and its resubscription is confirmed. */
static int node_synced(const snode_t *n)
{
    return n->c && n->resub_left == 0;
}

static int all_synced(struct pl_subscriber_nodes *t)
{
    if (!t->have_map) return 0;
    for (int k = 0; k < t->map.nnodes; k++) {
        int i = node_find(t, t->map.nodes[k].host, t->map.nodes[k].port);
        if (i < 0 || !node_synced(&t->n[i])) return 0;
    }
    return 1;
}

/* Node k serves slots in the current map. */
static int owner_known(struct pl_subscriber_nodes *t, int k)
{
    for (int m = 0; t->have_map && m < t->map.nnodes; m++)
        if (t->map.nodes[m].port == t->n[k].port && !strcmp(t->map.nodes[m].host, t->n[k].host))
            return 1;
    return 0;
}

static redisContext *cluster_conn(pl_subscriber_t *s, chan_t *e, int add, int *node)
{
    struct pl_subscriber_nodes *t = s->nodes;
    int k = add && e->refs == 0 ? owner_node(t, pl_slots_key(e->name, e->len)) : e->node;
    *node = k;
    return k >= 0 ? t->n[k].c : NULL;
}

static void chan_lost_node(pl_subscriber_t *s, chan_t *e)
{
    if (e->node != s->nodes->lost) return;
    e->node = -1;
    chan_lost(s, e);
}

static void node_down(pl_subscriber_t *s, int k, const char *why)
{
    struct pl_subscriber_nodes *t = s->nodes;
    snode_t *n = &t->n[k];
    if (n->c) {
        if (!atomic_load(&s->stop))
            pl_warn("subscriber: redis %s:%d lost (%s); reconnecting", n->host, n->port, why);
        redisFree(n->c);
        n->c = NULL;
    } else if (!n->logged_down) {
        pl_warn("subscriber: redis %s:%d: %s; retrying", n->host, n->port, why);
        n->logged_down = 1;
    }
    n->resub_left = -1;
    n->retry_at = pl_now_ms() + n->backoff;
    n->backoff = n->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : n->backoff * 2;
    atomic_store(&s->connected, 0);
    t->lost = k;
    chans_each(s->chans, chan_lost_node, s);
    t->refresh = 1; /* a lost master is how a failover starts */
}

/* Read the map with a connection of its own (a subscribed connection runs no other commands):
 * from a known master first, else a seed. */
static void read_map(pl_subscriber_t *s)
{
    struct pl_subscriber_nodes *t = s->nodes;
    int64_t now = pl_now_ms();
    if (now < t->refreshed_at + CLUSTER_REFRESH_MIN_MS) return;
    t->refreshed_at = now;
    int tried = 0;
    for (int pass = 0; pass < 2; pass++) {
        int count = pass == 0 ? t->nn : s->nseeds;
        for (int i = 0; i < count; i++) {
            pl_redis_addr_t a = *s->addr;
            a.db = 0;
            a.host = pass == 0 ? t->n[i].host : s->seeds[i].host;
            a.port = pass == 0 ? t->n[i].port : s->seeds[i].port;
            if (pass == 0 && !t->n[i].c) continue;
            char err[256];
            tried++;
            redisContext *c = pl_redis_connect_sync(&a, 1000, err, sizeof err);
            if (!c) continue;
            redisReply *r = redisCommand(c, "CLUSTER SLOTS");
            int owned = r ? pl_slots_parse(&t->map, r) : -1;
            if (r) freeReplyObject(r);
            redisFree(c);
            if (owned > 0) {
                if (!t->have_map) pl_info("subscriber: redis cluster of %d masters", t->map.nnodes);
                t->have_map = 1;
                t->refresh = 0;
                return;
            }
        }
    }
    if (tried) pl_warn("subscriber: no redis cluster node gave a slot map; retrying");
}

/* Connect to master k and SSUBSCRIBE the channels its slots hold, in batches. */
static void node_up(pl_subscriber_t *s, int k)
{
    struct pl_subscriber_nodes *t = s->nodes;
    snode_t *n = &t->n[k];
    pl_redis_addr_t a = *s->addr;
    a.db = 0;
    a.host = n->host;
    a.port = n->port;
    char err[256];
    if (!n->arena && !(n->arena = pl_reply_arena_new())) {
        node_down(s, k, "out of memory");
        return;
    }
    redisContext *c = pl_redis_connect_sync(&a, 1000, err, sizeof err);
    if (!c) {
        node_down(s, k, err);
        return;
    }
    pl_reply_attach(c->reader, n->arena);
    redisEnableKeepAlive(c);
    struct timeval none = {0, 0};
    redisSetTimeout(c, none);
    n->c = c;
    n->logged_down = 0;
    /* One SSUBSCRIBE per channel: it takes channels of one slot only. */
    long sent = 0;
    for (size_t i = 0; i < s->chans->nb; i++)
        for (chan_t *e = s->chans->b[i]; e; e = e->next) {
            if (!e->refs || e->node >= 0 || owner_node(t, pl_slots_key(e->name, e->len)) != k)
                continue;
            if (send_one(c, "SSUBSCRIBE", e) != 0) {
                node_down(s, k, "out of memory");
                return;
            }
            e->subs_sent++;
            e->node = k;
            e->gap = t->synced_once; /* held before: what it missed is owed */
            sent++;
        }
    n->resub_left = sent;
    for (int done = 0; !done;)
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            node_down(s, k, c->errstr);
            return;
        }
    pl_info("subscriber: %ld channel(s) on %s:%d", sent, n->host, n->port);
}

/* A node's resubscription is confirmed. */
static void node_synced_now(pl_subscriber_t *s, int k)
{
    struct pl_subscriber_nodes *t = s->nodes;
    t->n[k].backoff = BACKOFF_MIN_MS;
    if (t->synced_once) {
        if (!s->h->on_chan_gap) t->gap_owed = 1; /* else each channel's confirmation tells */
        if (all_synced(t)) atomic_store(&s->connected, 1);
    } else if (all_synced(t)) {
        t->synced_once = 1;
        atomic_store(&s->connected, 1);
        if (s->h->on_subscribed) s->h->on_subscribed(s->ud, 0);
    }
}

/* A reply on node k: a message, or a confirmation, or Redis ending a subscription because its
 * slot moved (an sunsubscribe nobody asked for). */
static void dispatch_node(pl_subscriber_t *s, int k, const redisReply *r)
{
    struct pl_subscriber_nodes *t = s->nodes;
    if (r->type == REDIS_REPLY_ERROR) {
        /* A refused SSUBSCRIBE does not say which channel it was for. A redirection means the
         * map was stale: this node's subscriptions start again from a fresh one (and catch up),
         * at once. */
        int redirected = !strncmp(r->str, "MOVED ", 6) || !strncmp(r->str, "ASK ", 4) ||
                         !strncmp(r->str, "TRYAGAIN", 8) || !strncmp(r->str, "CLUSTERDOWN", 11);
        pl_warn("subscriber: redis %s:%d refused: %.200s", t->n[k].host, t->n[k].port, r->str);
        if (redirected) t->n[k].refuse = 1;
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *what = r->element[0]->str;
    const redisReply *name = r->element[1];
    if (strcmp(what, "smessage") == 0) {
        pl_counter_add(&s->messages, 1);
        s->h->on_message(s->ud, name->str, name->len, r->element[2]->str, r->element[2]->len, 0);
        return;
    }
    chan_t *e = chan_get(s->chans, name->str, name->len, 0);
    if (strcmp(what, "ssubscribe") == 0) {
        /* In order on this connection: the first resub_left confirmations are the
         * resubscription's. */
        if (t->n[k].resub_left > 0 && --t->n[k].resub_left == 0) node_synced_now(s, k);
        if (!e) return;
        if (e->gap && e->subs_sent == 1) {
            e->gap = 0;
            if (s->h->on_chan_gap)
                s->h->on_chan_gap(s->ud, e->name, e->len, t->n[k].host, t->n[k].port);
            else
                t->gap_owed = 1;
        }
        chan_confirmed(s, name->str, name->len, 1);
    } else if (strcmp(what, "sunsubscribe") == 0 && e) {
        if (e->unsubs_sent == 0 && e->refs > 0) {
            /* Not ours: the slot left this node. Subscribe where it went, then catch up. */
            pl_info("subscriber: %.*s moved off %s:%d", (int)e->len, e->name, t->n[k].host,
                    t->n[k].port);
            chan_set_on(s, e, 0);
            e->node = -1;
            e->gap = 1;
            t->refresh = 1;
            return;
        }
        if (e->unsubs_sent <= 1 && !e->subs_sent) e->node = -1; /* held nowhere now */
        chan_confirmed(s, name->str, name->len, 0);             /* may free e */
    }
}

/* Held channels not subscribed anywhere (their node went, their slot moved): SSUBSCRIBE them on
 * their slot's master, if it is up. Their confirmation owes the app a catch-up. */
static void chan_place(pl_subscriber_t *s, chan_t *e)
{
    if (!e->refs || e->node >= 0 || e->subs_sent) return;
    struct pl_subscriber_nodes *t = s->nodes;
    int k = owner_node(t, pl_slots_key(e->name, e->len));
    if (k < 0 || !node_synced(&t->n[k])) return;
    if (send_one(t->n[k].c, "SSUBSCRIBE", e) != 0) return;
    e->subs_sent++;
    e->node = k;
    e->gap = 1;
}

static void flush_nodes(pl_subscriber_t *s)
{
    struct pl_subscriber_nodes *t = s->nodes;
    for (int k = 0; k < t->nn; k++) {
        redisContext *c = t->n[k].c;
        for (int done = 0; c && !done;)
            if (redisBufferWrite(c, &done) != REDIS_OK) {
                node_down(s, k, c->errstr);
                break;
            }
    }
}

/* Connect to the masters that are due, and place the channels left without a node. */
static void cluster_tend(pl_subscriber_t *s)
{
    struct pl_subscriber_nodes *t = s->nodes;
    if (!t->have_map || t->refresh) read_map(s);
    if (!t->have_map) return;
    int64_t now = pl_now_ms();
    for (int m = 0; m < t->map.nnodes && !atomic_load(&s->stop); m++) {
        int k = node_find(t, t->map.nodes[m].host, t->map.nodes[m].port);
        if (k >= 0 && !t->n[k].c && now >= t->n[k].retry_at) {
            node_up(s, k);
            if (t->n[k].c && t->n[k].resub_left == 0) node_synced_now(s, k);
        }
    }
    chans_each(s->chans, chan_place, s);
    flush_nodes(s);
    if (all_synced(t) && t->synced_once) atomic_store(&s->connected, 1);
}

static void *cluster_main(void *arg)
{
    pl_subscriber_t *s = arg;
    struct pl_subscriber_nodes *t = s->nodes;
    pl_log_set_thread("redis-sub");
    while (!atomic_load(&s->stop)) {
        cluster_tend(s);
        struct pollfd p[PL_SLOTS_NODES_MAX + 1];
        int idx[PL_SLOTS_NODES_MAX];
        int np = 0;
        /* Hand over what is already read before waiting. */
        for (int k = 0; k < t->nn; k++) {
            for (void *reply = NULL; t->n[k].c;) {
                if (redisGetReplyFromReader(t->n[k].c, &reply) != REDIS_OK) {
                    node_down(s, k, t->n[k].c->errstr);
                    break;
                }
                if (!reply) break;
                dispatch_node(s, k, reply);
                pl_reply_free(reply);
                reply = NULL;
            }
            if (t->n[k].c && t->n[k].refuse) {
                t->n[k].refuse = 0;
                node_down(s, k, "its slots moved");
                t->n[k].retry_at = 0;
            }
            if (t->n[k].c) {
                p[np] = (struct pollfd){t->n[k].c->fd, POLLIN, 0};
                idx[np++] = k;
            }
        }
        if (t->gap_owed) {
            t->gap_owed = 0;
            pl_counter_add(&s->reconnects, 1);
            if (s->h->on_subscribed) s->h->on_subscribed(s->ud, 1);
        }
        s->h->on_idle(s->ud);
        /* Wake for the next retry or map read, else for Redis or a request. */
        int timeout = -1;
        int64_t now = pl_now_ms();
        if (!t->have_map || t->refresh) timeout = CLUSTER_REFRESH_MIN_MS;
        for (int k = 0; k < t->nn; k++)
            if (!t->n[k].c && owner_known(t, k)) {
                int64_t w = t->n[k].retry_at - now;
                int ms = w < 0 ? 0 : (int)w;
                if (timeout < 0 || ms < timeout) timeout = ms;
            }
        p[np] = (struct pollfd){s->wake_fd, POLLIN, 0};
        if (poll(p, (nfds_t)np + 1, timeout) < 0) {
            if (errno != EINTR) pl_warn("subscriber: poll: %s", strerror(errno));
            continue;
        }
        if (p[np].revents) {
            take_requests(s, NULL); /* each request picks its node's connection */
            flush_nodes(s);
        }
        for (int i = 0; i < np; i++) {
            redisContext *c = t->n[idx[i]].c;
            if (c && p[i].revents && redisBufferRead(c) != REDIS_OK)
                node_down(s, idx[i], c->errstr[0] ? c->errstr : "closed");
        }
    }
    atomic_store(&s->connected, 0);
    for (int k = 0; k < t->nn; k++) {
        if (t->n[k].c) redisFree(t->n[k].c);
        t->n[k].c = NULL;
        pl_reply_arena_free(t->n[k].arena); /* after redisFree, as in sub_main */
        t->n[k].arena = NULL;
    }
    return NULL;
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
        long nchans = 0;
        if (subscribe_all(s, c, &nchans) == 0) {
            struct timeval none = {0, 0}; /* wait for as long as Redis is quiet */
            redisSetTimeout(c, none);
            atomic_store(&s->connected, 1);
            if (ever_up) pl_counter_add(&s->reconnects, 1);
            if (s->h->on_subscribed) s->h->on_subscribed(s->ud, ever_up);
            ever_up = 1;
            backoff = BACKOFF_MIN_MS;
            logged_down = 0;
            pl_info("subscriber: %d subscription(s) and %ld channel(s) on %s:%d", s->ncmds, nchans,
                    s->addr->host, s->addr->port);
            serve(s, c);
            atomic_store(&s->connected, 0);
            s->h->on_idle(s->ud);
            if (!atomic_load(&s->stop))
                pl_warn("subscriber: redis connection lost (%s); reconnecting",
                        c->errstr[0] ? c->errstr : "closed");
        }
        chans_each(s->chans, chan_lost, s);
        set_fd(s, -1);
        redisFree(c);
        if (!atomic_load(&s->stop)) backoff_sleep(s, backoff);
    }
    pl_reply_arena_free(arena); /* after redisFree: it frees a partly read reply through it */
    return NULL;
}

int pl_subscriber_init(pl_subscriber_t *s, const pl_redis_addr_t *addr, const char *const *cmds,
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
    atomic_init(&s->closed, 0);
    atomic_init(&s->fd, -1);
    s->started = 0;
    s->cluster = 0;
    s->nodes = NULL;
    pl_mpsc_init(&s->requests);
    if (!(s->chans = calloc(1, sizeof *s->chans)) ||
        !(s->chans->b = calloc(s->chans->nb = 64, sizeof *s->chans->b))) {
        free(s->chans);
        s->chans = NULL;
        return -ENOMEM;
    }
    if ((s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        int rc = -errno;
        free(s->chans->b);
        free(s->chans);
        s->chans = NULL;
        return rc;
    }
    return 0;
}

int pl_subscriber_init_cluster(pl_subscriber_t *s, const pl_redis_addr_t *login,
                               const pl_slots_node_t *seeds, int nseeds,
                               const pl_subscriber_handlers_t *h, void *ud)
{
    if (nseeds <= 0) return -EINVAL;
    int rc = pl_subscriber_init(s, login, NULL, 0, h, ud);
    if (rc != 0) return rc;
    if (!(s->nodes = calloc(1, sizeof *s->nodes))) {
        pl_subscriber_stop(s);
        return -ENOMEM;
    }
    s->cluster = 1;
    s->seeds = seeds;
    s->nseeds = nseeds;
    return 0;
}

int pl_subscriber_start(pl_subscriber_t *s)
{
    int rc = pthread_create(&s->thread, NULL, s->cluster ? cluster_main : sub_main, s);
    if (rc == 0) s->started = 1;
    return -rc;
}

static void wake(pl_subscriber_t *s)
{
    uint64_t one = 1;
    if (write(s->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        pl_warn("subscriber: eventfd write: %s", strerror(errno));
}

/* After the thread is gone: whatever is queued goes back unheard. Any thread may take (the
 * exchange hands each node to one taker). */
static void hand_back_queued(pl_subscriber_t *s)
{
    for (pl_mpsc_node_t *n = pl_mpsc_take_all(&s->requests), *next; n; n = next) {
        next = n->next;
        s->h->on_chan(s->ud, (pl_subscriber_chan_t *)n, 0);
    }
}

void pl_subscriber_chan(pl_subscriber_t *s, pl_subscriber_chan_t *req)
{
    if (pl_mpsc_push(&s->requests, &req->node)) wake(s);
    /* The thread may have gone before it took this one (pl_subscriber_stop takes what was
     * queued before `closed`; whatever came after is ours to hand back). */
    if (atomic_load(&s->closed)) hand_back_queued(s);
}

void pl_subscriber_stop(pl_subscriber_t *s)
{
    atomic_store(&s->stop, 1);
    wake(s);
    pthread_mutex_lock(&fd_lock);
    int fd = atomic_load(&s->fd);
    if (fd >= 0) shutdown(fd, SHUT_RDWR); /* unblocks redisGetReply */
    pthread_mutex_unlock(&fd_lock);
    if (s->started) pthread_join(s->thread, NULL);
    s->started = 0;
    chans_each(s->chans, chan_stopped, s);
    atomic_store(&s->closed, 1);
    hand_back_queued(s);
    if (s->chans) {
        free(s->chans->b);
        free(s->chans);
        s->chans = NULL;
    }
    free(s->nodes);
    s->nodes = NULL;
    if (s->wake_fd >= 0) close(s->wake_fd);
    s->wake_fd = -1;
}
