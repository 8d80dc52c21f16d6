/*
 * publish: a message's road from the client to Redis and PostgreSQL; see the
 * header. The order on one connection is kept end to end: messages go to
 * Redis on the shard's one connection in order, wait in order while Redis is
 * not ready, and a subscription still catching up keeps its owner's messages
 * until `subscribed` is out.
 */
#include "parley/app/kv.h"
#include "parley/app/publish.h"

#include <hiredis/hiredis.h>
#include <mbedtls/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/chat.h"
#include "parley/app/restore.h"
#include "parley/app/server.h"
#include "parley/app/split.h"
#include "parley/app/session.h"
#include "parley/app/subscribe.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/cluster.h"
#include "parley/svc/script.h"

static int eval_publish(pl_shard_t *s, pl_msg_t *m, int full_script);

/* How long a WAIT waits for the replicas, ms. */
#define WAIT_MS 1000

/* The end of a message's road: the connection's hold and the message go. */
static void message_done(pl_msg_t *m)
{
    pl_conn_t *c = m->conn;
    free(m);
    pl_conn_release(c);
}

/* The message is not going to be stored or acked. `code`: PL_ERR_UNAVAILABLE if it was not
 * published (not accepted), PL_ERR_NOT_STORED if it may have been delivered: then the client
 * resends with the same cid, which is not delivered again but stored and acked. */
static void message_failed(pl_msg_t *m, pl_err_t code, const char *why)
{
    if (pl_conn_open(m->conn))
        pl_session_error(m->conn, code, why, m->cid[0] ? m->cid : NULL, strlen(m->cid));
    if (m->shard->srv->db) pl_db_release(m->shard->srv->db);
    message_done(m);
}

/* Stored (or not): the sender hears of it. */
static void store_done(pl_db_job_t *job)
{
    pl_msg_t *m = (pl_msg_t *)job;
    pl_conn_t *c = m->conn;
    if (pl_conn_open(c)) {
        pl_buf_t *b = pl_shard_scratch(m->shard);
        if (job->status == PL_DB_OK) {
            pl_wire_ack(b, m->cid[0] ? m->cid : NULL, strlen(m->cid), m->store.id, m->store.seq);
            pl_session_send(c, b);
        } else {
            pl_session_error(c, PL_ERR_NOT_STORED,
                             job->status == PL_DB_EUNAVAILABLE
                                 ? "the message was delivered but not stored (server stopping); "
                                   "resend it with the same cid"
                                 : "the message was delivered but could not be stored",
                             m->cid[0] ? m->cid : NULL, strlen(m->cid));
        }
    }
    message_done(m);
}

/* Published (or found to be a duplicate): on to the database, if there is one. */
static void published(pl_msg_t *m)
{
    struct pl_db *db = m->shard->srv->db;
    if (!db) {
        message_done(m); /* no database: no ack (docs/protocol.md) */
        return;
    }
    pl_db_submit(db, &m->store.h);
}

/* Queue a message until Redis is ready; `bounced`: Redis refused it (it was sent earlier). */
static void wait_ready(pl_shard_t *s, pl_msg_t *m, int bounced)
{
    if (bounced)
        pl_msg_append(&s->bounced, &s->bounced_tail, m);
    else
        pl_msg_append(&s->waiting, &s->waiting_tail, m);
    s->nwaiting++;
}

/* Redis is ready (ok) or gone (!ok): send, or refuse, what waited, in order. */
static void release_waiting(pl_shard_t *s, int ok)
{
    pl_msg_t *list = s->bounced;
    if (s->bounced_tail)
        s->bounced_tail->next = s->waiting;
    else
        list = s->waiting;
    s->bounced = s->bounced_tail = s->waiting = s->waiting_tail = NULL;
    s->nwaiting = 0;
    while (list) {
        pl_msg_t *m = list;
        list = m->next;
        if (!ok || eval_publish(s, m, 0) != 0)
            message_failed(m, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later");
    }
    pl_subscribe_redis_ready(s, ok);
}

static void ready_timer_cb(uv_timer_t *t)
{
    pl_publish_ready_check(t->data);
}

static void ready_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        release_waiting(s, 0);
        return;
    }
    if (r->integer == 1 && s->ids_ready) {
        s->redis_ready = 1;
        release_waiting(s, 1);
        return;
    }
    /* A Redis without parley:ready lost its data (or is new): restore, then look again. */
    if (r->integer != 1) pl_restore_need(s, "");
    pl_subscribe_redis_ready(s, -1);
    uv_timer_start(&s->ready_timer, ready_timer_cb, 50, 0);
}

/* This shard's id node, when the server could not get a block from Redis at start-up: ids from
 * a node chosen any other way could collide with another instance's. */
static void ids_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_INTEGER) return; /* ready_reply retries */
    uint32_t node = (uint32_t)((r->integer - 1) % (1 << PL_IDGEN_NODE_BITS));
    pl_idgen_init(&s->ids, node);
    s->ids_ready = 1;
    pl_info("shard %d: id node %u from redis", s->index, node);
}

void pl_publish_not_ready(pl_shard_t *s)
{
    if (!s->redis_ready) return; /* a check is under way already */
    s->redis_ready = 0;
    pl_publish_ready_check(s);
}

/* A cluster has no parley:ready: the shard is ready once it has its id node and no room is
 * being seeded (restore.h); a room found unseeded holds every message of the shard meanwhile,
 * which keeps each connection's order. Looked at again every 50 ms until then. */
static void cluster_ready_check(pl_shard_t *s)
{
    if (!s->ids_ready) {
        const char *argv[3] = {"INCRBY", "parley:id_nodes", "1"};
        size_t lens[3] = {6, 15, 1};
        pl_kv_command(s, argv[1], lens[1], ids_reply, s, 3, argv, lens);
    }
    if (s->ids_ready && !pl_restore_seeding(s)) {
        s->redis_ready = 1;
        release_waiting(s, 1);
        return;
    }
    if (!pl_kv_up(s))
        release_waiting(s, 0);
    else
        pl_subscribe_redis_ready(s, -1);
    if (!s->stopping && !uv_is_active((uv_handle_t *)&s->ready_timer))
        uv_timer_start(&s->ready_timer, ready_timer_cb, 50, 0);
}

void pl_publish_ready_check(pl_shard_t *s)
{
    if (pl_kv_cluster(s)) {
        cluster_ready_check(s);
        return;
    }
    if (!s->ids_ready) {
        const char *argv[3] = {"INCRBY", "parley:id_nodes", "1"};
        size_t lens[3] = {6, 15, 1};
        pl_kv_command(s, argv[1], lens[1], ids_reply, s, 3, argv, lens);
    }
    const char *argv[2] = {"EXISTS", PL_KEY_READY};
    size_t lens[2] = {6, strlen(PL_KEY_READY)};
    if (pl_kv_command(s, argv[1], lens[1], ready_reply, s, 2, argv, lens) != 0)
        release_waiting(s, 0);
}

void pl_publish_redis_up(pl_redis_t *r)
{
    pl_shard_t *s = r->data;
    pl_script_load_all(r);
    /* Redis may have restarted (or this connection been lost) while clients stayed: presence,
     * the user -> instance routes of direct messages and the registration are put back. */
    pl_chat_resync(s);
    /* Nothing is published on a new connection until parley:ready is seen on it. */
    s->redis_ready = 0;
    pl_publish_ready_check(s);
}

void pl_publish_redis_up_cluster(pl_shard_t *s)
{
    /* Any node may have restarted empty, or this connection been lost, while clients stayed:
     * their presence is restated (idempotent). Readiness is per room: nothing to wait for but
     * the id node. */
    pl_chat_resync(s);
    pl_publish_ready_check(s);
}

/* ---- direct conversations ---- */

static void dm_member_done(pl_db_job_t *j)
{
    free(j);
}

/* A conversation's first message: both users become members of its dm: room, in one
 * statement, which is what lets them (and only them) read its history over HTTP. */
static void dm_members(const pl_msg_t *m)
{
    struct pl_db *db = m->shard->srv->db;
    if (!db) return;
    pl_db_member_t *j = calloc(1, sizeof *j);
    if (!j) {
        pl_error("out of memory: the members of %s are not recorded", m->room);
        return;
    }
    pl_db_job_init(&j->h, PL_DB_MEMBER, m->shard->loop, PL_EV_DB, dm_member_done);
    j->op = PL_DB_MEMBER_ADD;
    snprintf(j->room, sizeof j->room, "%s", m->room);
    snprintf(j->user, sizeof j->user, "%s", m->user);
    snprintf(j->user2, sizeof j->user2, "%s", m->to);
    pl_db_submit(db, &j->h);
}

/* The room of a direct conversation: the same for both directions. */
static void dm_room(pl_shard_t *s, const char *a, const char *b, char out[3 + 32 + 1])
{
    const char *lo = strcmp(a, b) < 0 ? a : b, *hi = lo == a ? b : a;
    pl_buf_t *k = &s->kbuf[2];
    pl_buf_reset(k);
    /* User ids have no control characters, so "\n" keeps the pair unambiguous. */
    pl_buf_printf(k, "%s\n%s", lo, hi);
    unsigned char d[20];
    mbedtls_sha1_ret((const unsigned char *)k->data, k->len, d);
    memcpy(out, "dm:", 3);
    for (int i = 0; i < 16; i++)
        snprintf(out + 3 + 2 * i, 3, "%02x", d[i]);
}

/* ---- wait mode: a replica first ---- */

int pl_publish_wait_mode(const pl_shard_t *s)
{
    return pl_kv_cluster(s) && s->srv->cfg.redis_wait_replicas > 0;
}

/* How many replicas a write on `node` must reach: PARLEY_REDIS_WAIT_REPLICAS, or fewer if the
 * slot map lists fewer for that master (0 after a failover left it none: with no replica there is
 * nobody a failover could promote, so nothing to wait for). */
static int wait_target(const pl_shard_t *s, const pl_redis_t *node)
{
    int want = s->srv->cfg.redis_wait_replicas, have = pl_cluster_replicas(s->cluster, node);
    return have >= 0 && have < want ? have : want;
}

int pl_publish_wait(pl_shard_t *s, struct redisAsyncContext *ac, pl_redis_cb cb, void *priv)
{
    pl_redis_t *node = pl_redis_of(ac);
    if (!node) return -1;
    int target = wait_target(s, node);
    if (target == 0) return 1;
    char n[16], ms[16];
    snprintf(n, sizeof n, "%d", target);
    snprintf(ms, sizeof ms, "%d", WAIT_MS);
    const char *argv[3] = {"WAIT", n, ms};
    size_t lens[3] = {4, strlen(n), strlen(ms)};
    return pl_redis_command(node, cb, priv, 3, argv, lens);
}

int pl_publish_waited(const pl_shard_t *s, struct redisAsyncContext *ac, const void *reply)
{
    const redisReply *r = reply;
    pl_redis_t *node = pl_redis_of(ac);
    return r && node && r->type == REDIS_REPLY_INTEGER && r->integer >= wait_target(s, node);
}

/* The message is on a replica: its frame goes out on the room's channel now (the script did not
 * publish it). A resend the script found to be a duplicate is published again: its first copy
 * may never have gone out (its WAIT failed), and a copy that did is dropped by every instance's
 * seq check (deliver.c). */
static void publish_live(pl_shard_t *s, pl_msg_t *m)
{
    size_t room_len = strlen(m->room), cid_len = strlen(m->cid);
    pl_buf_t *f = pl_shard_scratch(s);
    pl_buf_printf(f, "{\"type\":\"message\",\"seq\":%lld,", (long long)m->m.seq);
    pl_buf_reset(&s->tail);
    if (m->to[0]) {
        /* A direct message goes to the two users' instances, not to a channel of its own. Its
         * resend is not sent again: no instance could tell the copy from the first. */
        if (m->resent) return;
        pl_wire_dm_tail(&s->tail, m->room, room_len, m->m.id, m->user, m->to, m->text,
                        m->m.text_len, m->m.ts_ms, cid_len ? m->cid : NULL, cid_len);
        pl_buf_add(f, s->tail.data, s->tail.len);
        pl_split_dm(s, m->user, m->to, f->data, f->len);
        return;
    }
    pl_wire_message_tail(&s->tail, m->room, room_len, m->m.id, m->user, m->text, m->m.text_len,
                         m->m.ts_ms, cid_len ? m->cid : NULL, cid_len);
    pl_buf_add(f, s->tail.data, s->tail.len);
    pl_key_room_chan(&s->kbuf[4], m->room, room_len);
    const char *argv[3] = {"SPUBLISH", s->kbuf[4].data, f->data};
    size_t lens[3] = {8, s->kbuf[4].len, f->len};
    if (pl_kv_command(s, argv[1], lens[1], NULL, NULL, 3, argv, lens) != 0)
        pl_debug("%s: seq %lld stored but not published live (its master went): catch-ups have it",
                 m->room, (long long)m->m.seq);
}

/* A node's WAIT answered for the messages published on it in one turn (a list through next). */
static void wait_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_msg_t *m = privdata;
    int ok = pl_publish_waited(m->shard, ac, reply);
    if (!ok && reply)
        pl_warn("redis cluster: WAIT %d: fewer replicas answered in %d ms; messages refused",
                m->shard->srv->cfg.redis_wait_replicas, WAIT_MS);
    while (m) {
        pl_msg_t *next = m->next;
        m->next = NULL;
        if (ok) {
            publish_live(m->shard, m);
            published(m);
        } else {
            message_failed(m, PL_ERR_NOT_STORED,
                           "no replica of redis confirmed the message in time: it may be seen in "
                           "catch-ups but is not stored; resend it with the same cid");
        }
        m = next;
    }
}

/* Published on `ac`'s node: wait for the turn's WAIT there. */
static void wait_add(pl_shard_t *s, struct redisAsyncContext *ac, pl_msg_t *m)
{
    pl_redis_t *node = pl_redis_of(ac);
    int i = 0;
    while (i < s->nwaits && s->waits[i].node != node)
        i++;
    if (i == s->nwaits) {
        if (i == PL_SHARD_WAIT_NODES) {
            /* More nodes than a turn keeps: this one waits alone. */
            m->next = NULL;
            if (pl_publish_wait(s, ac, wait_reply, m) != 0)
                message_failed(m, PL_ERR_NOT_STORED,
                               "redis connection lost; resend it with the same cid");
            return;
        }
        s->waits[i].node = node;
        s->waits[i].head = s->waits[i].tail = NULL;
        s->nwaits++;
    }
    m->next = NULL;
    if (s->waits[i].tail)
        s->waits[i].tail->next = m;
    else
        s->waits[i].head = m;
    s->waits[i].tail = m;
}

void pl_publish_flush(pl_shard_t *s)
{
    int k = s->nwaits;
    s->nwaits = 0;
    for (int i = 0; i < k; i++) {
        pl_msg_t *m = s->waits[i].head;
        pl_redis_t *node = s->waits[i].node;
        int target = wait_target(s, node);
        if (target == 0) {
            /* The master has no replica now: nothing to wait for. */
            while (m) {
                pl_msg_t *next = m->next;
                m->next = NULL;
                publish_live(s, m);
                published(m);
                m = next;
            }
            continue;
        }
        char n[16], ms[16];
        snprintf(n, sizeof n, "%d", target);
        snprintf(ms, sizeof ms, "%d", WAIT_MS);
        const char *argv[3] = {"WAIT", n, ms};
        size_t lens[3] = {4, strlen(n), strlen(ms)};
        if (pl_redis_command(node, wait_reply, m, 3, argv, lens) != 0) wait_reply(NULL, NULL, m);
    }
}

/* ---- the publish script ---- */

static void publish_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_msg_t *m = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* Redis lost its script cache (SCRIPT FLUSH): send the source this once. */
        if (eval_publish(m->shard, m, 1) != 0)
            message_failed(m, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later");
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        if (r && r->type == REDIS_REPLY_ERROR) pl_warn("publish to %s: %s", m->room, r->str);
        if (r)
            message_failed(m, PL_ERR_UNAVAILABLE, "redis refused the message; retry");
        else
            message_failed(m, PL_ERR_NOT_STORED,
                           "redis connection lost: the message may have been delivered but is not "
                           "stored; resend it with the same cid");
        return;
    }
    long long code = r->element[0]->integer;
    if (code == -1) {
        /* Redis lost its data under us: hold this and what follows until it is ready again. */
        pl_shard_t *s = m->shard;
        wait_ready(s, m, 1);
        if (pl_kv_cluster(s)) pl_restore_need(s, m->room); /* one Redis: ready_reply does */
        pl_publish_not_ready(s);
    } else if (code == 1 && r->elements == 2) {
        pl_counter_add(&m->shard->stats.published, 1);
        m->m.seq = r->element[1]->integer;
        if (m->to[0] && m->m.seq == 1) dm_members(m);
        if (pl_publish_wait_mode(m->shard)) {
            wait_add(m->shard, ac, m);
        } else {
            /* A cluster's direct message is delivered in steps of its own (split.h). */
            if (m->to[0] && pl_kv_cluster(m->shard)) publish_live(m->shard, m);
            published(m);
        }
    } else if (code == 0 && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        /* A resend of a message already accepted: same id, seq and ts; nothing republished. */
        unsigned long long id;
        long long seq, ts;
        if (sscanf(r->element[1]->str, "%llu:%lld:%lld", &id, &seq, &ts) == 3) {
            m->m.id = id;
            m->m.seq = seq;
            m->m.ts_ms = ts;
            m->resent = 1;
            if (pl_publish_wait_mode(m->shard))
                wait_add(m->shard, ac, m);
            else
                published(m);
        } else {
            message_failed(m, PL_ERR_UNAVAILABLE, "bad deduplication record");
        }
    } else {
        message_failed(m, PL_ERR_UNAVAILABLE, "unexpected reply from redis");
    }
}

/* The arguments of a publish or dm script call, built in place (strings are borrowed from the
 * message, the config and the shard's key buffers until the command is formatted). */
typedef struct {
    const char *argv[16];
    size_t lens[16];
    int n;
    char id[21], ts[21], maxlen[21], ttl[21];
} script_args_t;

static void arg(script_args_t *a, const char *p, size_t len)
{
    a->argv[a->n] = p;
    a->lens[a->n++] = len;
}

/* What both scripts start with: the call and the keys (seq, stream, ready, and the cid's record
 * if there is a cid). */
static void args_begin(pl_shard_t *s, script_args_t *a, pl_script_t which, int full_script,
                       const pl_msg_t *m, size_t room_len)
{
    size_t cid_len = strlen(m->cid);
    pl_key_seq(&s->kbuf[0], m->room, room_len);
    pl_key_stream(&s->kbuf[1], m->room, room_len);
    pl_key_ready(&s->kbuf[2], m->room, room_len);
    if (cid_len) pl_key_cid(&s->kbuf[3], m->room, room_len, m->user, m->cid, cid_len);
    const char *src = full_script ? pl_script_source(which) : pl_script_sha(which);
    a->n = 0;
    arg(a, full_script ? "EVAL" : "EVALSHA", full_script ? 4 : 7);
    arg(a, src, strlen(src));
    arg(a, cid_len ? "4" : "3", 1);
    for (int i = 0; i < (cid_len ? 4 : 3); i++)
        arg(a, s->kbuf[i].data, s->kbuf[i].len);
}

/* What both scripts take next: the frame's tail (s->tail), id, ts, stream length, cid ttl. */
static void args_message(pl_shard_t *s, script_args_t *a, const pl_msg_t *m)
{
    arg(a, s->tail.data, s->tail.len);
    arg(a, a->id, pl_u64_str(a->id, m->m.id));
    arg(a, a->ts, pl_u64_str(a->ts, (uint64_t)m->m.ts_ms));
    arg(a, a->maxlen, pl_u64_str(a->maxlen, s->srv->cfg.stream_len));
    arg(a, a->ttl, pl_u64_str(a->ttl, PL_CID_TTL_S));
}

/* A direct message (its tail is in s->tail): the DM script routes it to server:{id} channels. */
static int eval_dm(pl_shard_t *s, pl_msg_t *m, int full_script)
{
    const pl_config_t *cfg = &s->srv->cfg;
    script_args_t a;
    char omax[21];
    args_begin(s, &a, PL_SCRIPT_DM, full_script, m, strlen(m->room));
    args_message(s, &a, m);
    arg(&a, cfg->redis_prefix, strlen(cfg->redis_prefix));
    arg(&a, m->to, strlen(m->to));
    arg(&a, m->user, strlen(m->user));
    arg(&a, omax, pl_u64_str(omax, cfg->offline_max));
    return pl_kv_command(s, NULL, 0, publish_reply, m, a.n, a.argv, a.lens);
}

static int eval_publish(pl_shard_t *s, pl_msg_t *m, int full_script)
{
    /* Only now: a message that waited for Redis to be ready waited for the shard's id node too
     * (pl_publish_ready_check). A resend after a bounce keeps its id. */
    if (!m->m.id) m->m.id = pl_idgen_next(&s->ids, m->m.ts_ms);
    size_t room_len = strlen(m->room), cid_len = strlen(m->cid);
    pl_buf_reset(&s->tail);
    if (m->to[0]) {
        pl_wire_dm_tail(&s->tail, m->room, room_len, m->m.id, m->user, m->to, m->text,
                        m->m.text_len, m->m.ts_ms, cid_len ? m->cid : NULL, cid_len);
        /* A cluster stores it with the publish script in the conversation's slot, and
         * delivers it in steps after (docs/redis.md, "Work that spans slots"). */
        if (!pl_kv_cluster(s)) return eval_dm(s, m, full_script);
    } else {
        pl_wire_message_tail(&s->tail, m->room, room_len, m->m.id, m->user, m->text, m->m.text_len,
                             m->m.ts_ms, cid_len ? m->cid : NULL, cid_len);
    }
    script_args_t a;
    pl_key_room_chan(&s->kbuf[4], m->room, room_len);
    const char *pub = pl_publish_wait_mode(s) || m->to[0] ? "" : pl_key_publish_cmd();
    args_begin(s, &a, PL_SCRIPT_PUBLISH, full_script, m, room_len);
    arg(&a, s->kbuf[4].data, s->kbuf[4].len);
    args_message(s, &a, m);
    arg(&a, pub, strlen(pub));
    return pl_kv_command(s, s->kbuf[0].data, s->kbuf[0].len, publish_reply, m, a.n, a.argv, a.lens);
}

/* Publish now, or queue in order while this shard's Redis is not known to be ready. */
static void submit(pl_shard_t *s, pl_msg_t *m)
{
    if (!s->redis_ready && pl_kv_up(s)) {
        if (s->nwaiting < s->srv->cfg.db_queue) {
            wait_ready(s, m, 0); /* a moment after (re)connecting: keep order, send when ready */
            return;
        }
        message_failed(m, PL_ERR_UNAVAILABLE, "redis is not ready; retry later");
        return;
    }
    if (eval_publish(s, m, 0) != 0)
        message_failed(m, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later");
}

void pl_publish_release(pl_shard_t *s, pl_sub_t *sub)
{
    if (!sub->cu) return;
    pl_msg_t *m = sub->cu->pending;
    sub->cu->pending = sub->cu->pending_tail = NULL;
    while (m) {
        pl_msg_t *next = m->next;
        submit(s, m);
        m = next;
    }
}

/* A new message: text copied after the struct, one allocation. */
static pl_msg_t *msg_new(pl_shard_t *s, pl_conn_t *c, const pl_req_t *req)
{
    pl_msg_t *m = calloc(1, sizeof *m + req->text_len + 1);
    if (!m) return NULL;
    memcpy(m->text, req->text, req->text_len);
    m->shard = s;
    m->conn = c;
    snprintf(m->user, sizeof m->user, "%s", pl_session_user(pl_session_of(c)));
    if (req->cid) memcpy(m->cid, req->cid, req->cid_len + 1);
    m->m.room = m->room;
    m->m.sender = m->user;
    m->m.cid = m->cid[0] ? m->cid : NULL;
    m->m.text = m->text;
    m->m.text_len = req->text_len;
    m->m.ts_ms = pl_now_ms(); /* the id is given as it is published (eval_publish) */
    pl_db_job_init(&m->store.h, PL_DB_STORE, s->loop, PL_EV_DB, store_done);
    m->store.msg = &m->m;
    return m;
}

void pl_publish(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_session_t *ss = pl_session_of(c);
    struct pl_db *db = s->srv->db;
    char dm[3 + 32 + 1];
    pl_counter_add(&s->stats.received, 1);
    if (req->to) {
        if (strcmp(req->to, pl_session_user(ss)) == 0) {
            pl_session_error(c, PL_ERR_BAD_REQUEST, "a direct message needs another user", req->cid,
                             req->cid_len);
            return;
        }
        dm_room(s, pl_session_user(ss), req->to, dm);
    }
    pl_room_t *room = req->to ? NULL : pl_room_find(&s->rooms, req->room, req->room_len);
    pl_sub_t *sub = room ? pl_room_sub_of(ss->subs, room) : NULL;
    if (!req->to && !sub) {
        pl_session_error(c, PL_ERR_NOT_SUBSCRIBED, "subscribe to the room before sending to it",
                         req->cid, req->cid_len);
        return;
    }
    /* Bounded store queue: refuse now rather than accept and lose later. */
    if (db && pl_db_reserve(db) != 0) {
        pl_session_error(c, PL_ERR_UNAVAILABLE,
                         "too many messages waiting to be stored; retry later", req->cid,
                         req->cid_len);
        return;
    }
    pl_msg_t *m = msg_new(s, c, req);
    if (!m) {
        if (db) pl_db_release(db);
        pl_session_error(c, PL_ERR_UNAVAILABLE, "out of memory", req->cid, req->cid_len);
        return;
    }
    if (req->to) {
        memcpy(m->room, dm, sizeof dm);
        memcpy(m->to, req->to, req->to_len + 1);
    } else {
        memcpy(m->room, req->room, req->room_len + 1);
    }
    pl_conn_hold(c);
    if (sub && sub->cu && !sub->cu->replay) {
        /* The catch-up is still reading: a subscription starts where `subscribed` says, so the
         * sender's own message must come after it; it waits on the subscription until then.
         * Once the catch-up is read (replay set, `subscribed` sent) messages go at once: their
         * live copies are held behind the replay like any live frame, and a replay to a slow
         * reader may take long. */
        pl_msg_append(&sub->cu->pending, &sub->cu->pending_tail, m);
        return;
    }
    submit(s, m);
}
