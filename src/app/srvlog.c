/*
 * srvlog: the instance's log of server:{id} frames, read back after the
 * subscriber was away; see the header.
 */
#include "parley/app/srvlog.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "parley/base/buf.h"
#include "parley/base/log.h"
#include "parley/svc/cluster.h"
#include "parley/svc/script.h"

/* Entries read per XRANGE: the log holds about PL_SRVLOG_MAX. */
#define PAGE 1000

static const char LID[] = ",\"_lid\":\"";

int pl_srvlog_init(pl_srvlog_t *l, const char *prefix, const char *server_id)
{
    int n = snprintf(l->key, sizeof l->key, "%ssrvlog:%s", prefix, server_id);
    l->known = 0;
    l->last = (pl_srvlog_id_t){0, 0};
    return n > 0 && (size_t)n < sizeof l->key ? 0 : -1;
}

void pl_srvlog_use_cluster(pl_srvlog_t *l, const char *prefix, const char *server_id,
                           const pl_slots_node_t *seeds, int nseeds)
{
    pl_buf_t k = {0};
    pl_key_server(&k, prefix, server_id, "srvlog");
    snprintf(l->key, sizeof l->key, "%s", k.data ? k.data : "");
    pl_buf_free(&k);
    l->seeds = seeds;
    l->nseeds = nseeds;
}

/* A connection to where the log lives. */
static redisContext *log_connect(const pl_srvlog_t *l, const pl_redis_addr_t *addr, char *err,
                                 size_t n)
{
    if (l->seeds)
        return pl_cluster_connect_sync(l->seeds, l->nseeds, addr, l->key, strlen(l->key), 2000, err,
                                       n);
    return pl_redis_connect_sync(addr, 2000, err, n);
}

static int digits(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 19) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int pl_srvlog_id_parse(const char *s, size_t len, pl_srvlog_id_t *id)
{
    const char *dash = memchr(s, '-', len);
    if (!dash) return -1;
    size_t a = (size_t)(dash - s);
    return digits(s, a, &id->ms) || digits(dash + 1, len - a - 1, &id->n) ? -1 : 0;
}

int pl_srvlog_strip(const char *p, size_t len, pl_srvlog_id_t *id, size_t *keep)
{
    /* ...,"_lid":"<ms>-<n>"}: read from the end, the id is at most 39 bytes. */
    if (len < sizeof LID - 1 + 5 || p[len - 1] != '}' || p[len - 2] != '"') return 0;
    size_t end = len - 2, start = end;
    while (start > 0 && end - start < 40 && p[start - 1] != '"')
        start--;
    if (start < sizeof LID - 1 || memcmp(p + start - (sizeof LID - 1), LID, sizeof LID - 1) != 0)
        return 0;
    pl_srvlog_id_t v;
    if (pl_srvlog_id_parse(p + start, end - start, &v) != 0) return 0;
    *id = v;
    *keep = start - (sizeof LID - 1) + 1;
    return 1;
}

static int id_cmp(pl_srvlog_id_t a, pl_srvlog_id_t b)
{
    return a.ms != b.ms ? (a.ms < b.ms ? -1 : 1) : a.n != b.n ? (a.n < b.n ? -1 : 1) : 0;
}

int pl_srvlog_admit(pl_srvlog_t *l, pl_srvlog_id_t id)
{
    if (l->known && id_cmp(id, l->last) <= 0) return 0;
    l->last = id;
    l->known = 1;
    return 1;
}

/* The id of entry `e` of an XRANGE/XREVRANGE reply ([id, [field, value, ...]]), or -1. */
static int entry_id(const redisReply *e, pl_srvlog_id_t *id)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return -1;
    return pl_srvlog_id_parse(e->element[0]->str, e->element[0]->len, id);
}

void pl_srvlog_baseline(pl_srvlog_t *l, struct redisContext *c)
{
    redisReply *r = redisCommand(c, "XREVRANGE %s + - COUNT 1", l->key);
    pl_srvlog_id_t id = {0, 0};
    if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements == 1 && entry_id(r->element[0], &id))) {
        /* The subscribe on this connection fails too if it is gone; an odd reply is logged. */
        if (r) pl_warn("srvlog: %s: unexpected reply to XREVRANGE (type %d)", l->key, r->type);
    } else {
        l->last = id;
        l->known = 1;
    }
    if (r) freeReplyObject(r);
}

void pl_srvlog_baseline_connect(pl_srvlog_t *l, const pl_redis_addr_t *addr)
{
    char err[256];
    redisContext *c = log_connect(l, addr, err, sizeof err);
    if (!c) {
        pl_warn("srvlog: %s: %s; its baseline is set by the first frame handed on", l->key, err);
        return;
    }
    pl_srvlog_baseline(l, c);
    redisFree(c);
}

static long catch_up(pl_srvlog_t *l, const pl_redis_addr_t *addr, int direct,
                     pl_srvlog_each_cb each, void *ud);

long pl_srvlog_catch_up(pl_srvlog_t *l, const pl_redis_addr_t *addr, pl_srvlog_each_cb each,
                        void *ud)
{
    return catch_up(l, addr, 0, each, ud);
}

long pl_srvlog_catch_up_at(pl_srvlog_t *l, const pl_redis_addr_t *addr, pl_srvlog_each_cb each,
                           void *ud)
{
    return catch_up(l, addr, 1, each, ud);
}

static long catch_up(pl_srvlog_t *l, const pl_redis_addr_t *addr, int direct,
                     pl_srvlog_each_cb each, void *ud)
{
    if (!l->known) {
        pl_warn("srvlog: %s: no position known; what was sent here while the subscriber was "
                "away is not read back",
                l->key);
        return 0;
    }
    char err[256];
    redisContext *c = direct ? pl_redis_connect_sync(addr, 2000, err, sizeof err)
                             : log_connect(l, addr, err, sizeof err);
    if (!c) {
        pl_warn("srvlog: %s: %s; reading it back at the next subscription", l->key, err);
        return -1;
    }
    long total = 0;
    char from[48];
    snprintf(from, sizeof from, "(%llu-%llu", (unsigned long long)l->last.ms,
             (unsigned long long)l->last.n);
    /* Its oldest entry after the one handed last: the entries between are gone. */
    int first = 1;
    for (;;) {
        redisReply *r = redisCommand(c, "XRANGE %s %s + COUNT %d", l->key, from, PAGE);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            pl_warn("srvlog: %s: XRANGE failed (%s); reading it back at the next subscription",
                    l->key, r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
            if (r) freeReplyObject(r);
            redisFree(c);
            return -1;
        }
        if (first && r->elements && (l->last.ms || l->last.n)) {
            /* Is the entry right after the last one handed on still there? Only if the log's
             * first entry is at or before that one. */
            redisReply *f = redisCommand(c, "XRANGE %s - + COUNT 1", l->key);
            pl_srvlog_id_t fid;
            if (f && f->type == REDIS_REPLY_ARRAY && f->elements == 1 &&
                entry_id(f->element[0], &fid) == 0 && id_cmp(fid, l->last) > 0)
                pl_warn("srvlog: %s starts after the last frame handed on (trimmed, or Redis lost "
                        "its data): direct messages or disconnects sent here meanwhile may be lost",
                        l->key);
            if (f) freeReplyObject(f);
        }
        first = 0;
        size_t n = r->elements;
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = r->element[i];
            pl_srvlog_id_t id;
            if (entry_id(e, &id) != 0) continue;
            const redisReply *fv = e->element[1];
            snprintf(from, sizeof from, "(%.*s", (int)e->element[0]->len, e->element[0]->str);
            if (fv->type != REDIS_REPLY_ARRAY || fv->elements != 2 ||
                fv->element[1]->type != REDIS_REPLY_STRING)
                continue;
            each(ud, fv->element[1]->str, fv->element[1]->len, id);
            total++;
        }
        freeReplyObject(r);
        if (n < PAGE) break;
    }
    redisFree(c);
    return total;
}
