/*
 * chat: the chat state Redis keeps for the whole cluster besides messages:
 * presence (connections counted per user and shard, online/offline events,
 * the heartbeat and the clean-up after dead instances), typing and read
 * receipts, and the mirror of memberships presence relies on. Each change is
 * one Lua script (script.h, docs/redis.md) run on the shard's Redis
 * connection; the events it publishes travel on room channels like messages.
 */
#include "parley/app/kv.h"
#include "parley/app/chat.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/app/split.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/db.h"
#include "parley/svc/script.h"

/* Run a chat-state script: ARGV[1] is the key prefix, then `argc` more. Placed by its first key;
 * a script without keys spans slots (cluster mode refuses it, app/kv.h). */
static int chat_script(pl_shard_t *s, pl_script_t which, int nkeys, const char **keys, int argc,
                       const char **args, pl_redis_cb cb, void *priv)
{
    const char *argv[16];
    size_t lens[16];
    char nk[8];
    snprintf(nk, sizeof nk, "%d", nkeys);
    int n = 0;
    argv[n] = "EVALSHA", lens[n++] = 7;
    argv[n] = pl_script_sha(which), lens[n++] = 40;
    argv[n] = nk, lens[n++] = strlen(nk);
    for (int i = 0; i < nkeys; i++)
        argv[n] = keys[i], lens[n++] = strlen(keys[i]);
    argv[n] = s->srv->cfg.redis_prefix, lens[n++] = strlen(s->srv->cfg.redis_prefix);
    for (int i = 0; i < argc; i++)
        argv[n] = args[i], lens[n++] = strlen(args[i]);
    return pl_kv_command(s, nkeys ? keys[0] : NULL, nkeys ? strlen(keys[0]) : 0, cb, priv, n, argv,
                         lens);
}

int pl_chat_member(pl_shard_t *s, const char *room, const char *user, int member,
                   const char *reason, pl_redis_cb cb, void *priv)
{
    /* Refused only while Redis is down: the mirror is rebuilt from PostgreSQL if Redis lost it,
     * and a membership made meanwhile is mirrored again at the user's next subscribe. */
    if (pl_kv_cluster(s)) return pl_split_member(s, room, user, member, reason, cb, priv);
    const char *args[4] = {room, user, member ? "1" : "0", reason ? reason : "removed"};
    return chat_script(s, PL_SCRIPT_MEMBER, 0, NULL, member ? 3 : 4, args, cb, priv);
}

int pl_chat_disconnect(pl_shard_t *s, const char *user, const char *reason, int revoke,
                       pl_redis_cb cb, void *priv)
{
    /* The notice every connection of the user gets before its close; it names the user so that
     * each instance's subscriber knows whose connections to close. */
    pl_buf_t *b = pl_shard_scratch(s);
    pl_wire_notice(b, "disconnected", reason);
    b->len--;
    pl_buf_adds(b, ",\"user\":");
    pl_buf_json_str(b, user, strlen(user));
    pl_buf_adds(b, "}");
    if (pl_kv_cluster(s)) return pl_split_kick(s, user, b->data, b->len, revoke, cb, priv);
    char now[24], ttl[24];
    snprintf(now, sizeof now, "%lld", (long long)(pl_now_ms() / 1000));
    snprintf(ttl, sizeof ttl, "%d", PL_REVOKE_TTL_S);
    const char *args[5] = {user, b->data, now, ttl, revoke ? "1" : "0"};
    return chat_script(s, PL_SCRIPT_KICK, 0, NULL, 5, args, cb, priv);
}

int pl_chat_members(pl_shard_t *s, const char *room, const char *asker, int limit, pl_redis_cb cb,
                    void *priv)
{
    if (pl_kv_cluster(s)) return pl_split_members(s, room, asker, limit, cb, priv);
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *args[3] = {room, asker, lim};
    return chat_script(s, PL_SCRIPT_MEMBERS, 0, NULL, 3, args, cb, priv);
}

/* ---- presence ---- */

/*
 * Presence changes are batched per loop turn: pl_chat_presence_up/down queue
 * them here in the order they happen, pl_chat_flush (the shard's check phase,
 * before its Redis write) sends them as one script call. A reconnect storm of
 * thousands of connections then costs Redis a few script calls, not one each,
 * and the order of one connection's up and down is kept.
 *
 * The queue is the shard's (pl_presence_queue_t). The arrays grow once and
 * are reused; users are copied (a closing connection may be freed before the
 * flush).
 */
#define PRESENCE_FIXED_ARGS 8 /* EVALSHA sha numkeys prefix server shard now ttl */

/* A sent batch: which connections wait for their element of the reply. Allocated by
 * pl_chat_flush, freed by presence_reply (hiredis calls it, with NULL if Redis went away). */
typedef struct {
    size_t n;
    pl_session_t *conn[];
} presence_batch_t;

/* Deliver the DMs that waited for a user who just came online to its connection (`w`: the
 * array of them). */
static void deliver_waiting(pl_conn_t *c, const redisReply *w)
{
    if (!w || w->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < w->elements; i++) {
        if (w->element[i]->type != REDIS_REPLY_STRING) continue;
        pl_frame_t *f = pl_frame_text(w->element[i]->str, w->element[i]->len);
        if (!f) break;
        pl_conn_send(c, f);
        pl_frame_unref(f);
    }
}

static void presence_queue(pl_conn_t *c, int up);

/* The presence script refused to count a connection: its token was issued no later than the
 * user's last disconnect (POST /api/users/{id}/disconnect revokes them). */
static int revoked(const redisReply *e)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
           e->element[0]->type == REDIS_REPLY_INTEGER && e->element[0]->integer < 0;
}

void pl_chat_presence_answered(pl_session_t *ss, int ok, int is_revoked, const redisReply *waiting)
{
    pl_conn_t *c = pl_session_conn(ss);
    ss->up_pending = 0;
    if (ok && is_revoked) {
        ss->presence = ss->down_deferred = 0; /* not counted: nothing to count down */
        if (pl_conn_open(c)) {
            pl_shard_t *s = pl_shard_of_conn(c);
            pl_counter_add(&s->stats.auth_failures[PL_AUTH_FAIL_REVOKED], 1);
            pl_buf_t *nb = pl_shard_scratch(s);
            pl_wire_notice(nb, "disconnected",
                           "this token was revoked (the user was disconnected after it was "
                           "issued); get a new one");
            pl_session_send(c, nb);
            pl_conn_close(c, 4003, "token revoked");
        }
    } else if (ss->down_deferred) {
        /* Closed before the answer came: counted now (ok) or never (Redis went away: the
         * resync restates this shard's counts), so the "d" goes only if it was. */
        ss->down_deferred = 0;
        if (ok) presence_queue(c, 0);
    } else if (ok && pl_conn_open(c)) {
        deliver_waiting(c, waiting);
    }
    pl_conn_release(c);
}

static void presence_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    presence_batch_t *b = privdata;
    redisReply *r = reply;
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == b->n;
    if (r && !ok)
        pl_warn("presence: unexpected reply to a batch of %zu: %s", b->n,
                r->type == REDIS_REPLY_ERROR ? r->str : "not an array of that size");
    for (size_t i = 0; i < b->n; i++) {
        if (!b->conn[i]) continue;
        const redisReply *e = ok ? r->element[i] : NULL;
        pl_chat_presence_answered(
            b->conn[i], ok, ok && revoked(e),
            e && e->type == REDIS_REPLY_ARRAY && e->elements == 2 ? e->element[1] : NULL);
    }
    free(b);
}

/* Queue the op ("u<iat>" or "d", NUL-terminated) and the user for the turn's batch. */
static void presence_queue(pl_conn_t *c, int up)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_presence_queue_t *pq = &s->pq;
    pl_session_t *ss = pl_session_of(c);
    if (pq->n == PL_PRESENCE_BATCH_MAX) pl_chat_flush(s);
    pq->off[pq->n] = pq->users.len;
    if (up && ss->iat)
        pl_buf_printf(&pq->users, "u%u", (unsigned)ss->iat);
    else
        pl_buf_adds(&pq->users, up ? "u" : "d");
    pl_buf_add(&pq->users, "", 1);
    pl_buf_add(&pq->users, pl_session_user(ss), strlen(pl_session_user(ss)) + 1);
    pq->conn[pq->n++] = up ? ss : NULL;
}

void pl_chat_presence_up(pl_conn_t *c)
{
    pl_session_t *ss = pl_session_of(c);
    pl_conn_hold(c);  /* released by presence_reply, or by pl_chat_flush if the call fails */
    ss->presence = 1; /* the matching "down" is queued after it */
    ss->up_pending = 1;
    presence_queue(c, 1);
}

void pl_chat_presence_down(pl_conn_t *c)
{
    pl_session_t *ss = pl_session_of(c);
    if (!ss->presence) return;
    ss->presence = 0;
    /* Counted only if the script did not find the token revoked: wait for its answer. */
    if (ss->up_pending) {
        ss->down_deferred = 1;
        return;
    }
    presence_queue(c, 0);
}

/* The arguments every presence and resync call starts with: EVALSHA sha 0 prefix server shard
 * now ttl. `nums` holds the numbers' text (shard, now, ttl) for as long as argv is used. */
static int presence_args(pl_shard_t *s, pl_script_t which, const char **argv, size_t *lens,
                         char nums[3][24])
{
    const pl_config_t *cfg = &s->srv->cfg;
    snprintf(nums[0], 24, "%d", s->index);
    snprintf(nums[1], 24, "%lld", (long long)pl_now_ms());
    snprintf(nums[2], 24, "%d", PL_HEARTBEAT_TTL_S);
    int k = 0;
    argv[k] = "EVALSHA", lens[k++] = 7;
    argv[k] = pl_script_sha(which), lens[k++] = 40;
    argv[k] = "0", lens[k++] = 1;
    argv[k] = cfg->redis_prefix, lens[k++] = strlen(cfg->redis_prefix);
    argv[k] = cfg->server_id, lens[k++] = strlen(cfg->server_id);
    for (int i = 0; i < 3; i++)
        argv[k] = nums[i], lens[k++] = strlen(nums[i]);
    return k;
}

void pl_chat_flush(pl_shard_t *s)
{
    pl_presence_queue_t *pq = &s->pq;
    size_t n = pq->n;
    if (!n) return;
    pq->n = 0;
    if (pl_kv_cluster(s)) {
        /* A cluster: one user's slot at a time (app/split.h). */
        for (size_t i = 0; i < n; i++) {
            const char *e = pq->users.data + pq->off[i];
            pl_split_presence(s, e, e + strlen(e) + 1, pq->conn[i]);
        }
        pl_buf_reset(&pq->users);
        return;
    }
    /* On the stack: 12 KiB at most, and only while a batch is formatted. */
    const char *argv[PRESENCE_FIXED_ARGS + 2 * PL_PRESENCE_BATCH_MAX];
    size_t lens[PRESENCE_FIXED_ARGS + 2 * PL_PRESENCE_BATCH_MAX];
    char nums[3][24];
    int k = presence_args(s, PL_SCRIPT_PRESENCE, argv, lens, nums);
    for (size_t i = 0; i < n; i++) {
        const char *e = pq->users.data + pq->off[i]; /* the op, then the user */
        size_t ol = strlen(e);
        argv[k] = e, lens[k++] = ol;
        argv[k] = e + ol + 1, lens[k++] = strlen(e + ol + 1);
    }
    presence_batch_t *b = malloc(sizeof *b + n * sizeof b->conn[0]);
    if (b) {
        b->n = n;
        memcpy(b->conn, pq->conn, n * sizeof b->conn[0]);
    }
    if (!b || pl_kv_command(s, NULL, 0, presence_reply, b, k, argv, lens) != 0) {
        /* Not counted in Redis: these connections will not be "down"ed either. The resync when
         * Redis is back counts them (pl_chat_resync). */
        pl_debug("presence: %zu change(s) wait for redis (%s)", n,
                 b ? "redis unavailable" : "out of memory");
        free(b);
        for (size_t i = 0; i < n; i++) {
            if (!pq->conn[i]) continue;
            pq->conn[i]->presence = pq->conn[i]->up_pending = pq->conn[i]->down_deferred = 0;
            pl_conn_release(pl_session_conn(pq->conn[i]));
        }
    }
    pl_buf_reset(&pq->users);
}

static void resync_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        pl_info("presence: %lld user(s) whose connections here closed while redis was away "
                "reported offline",
                r->integer);
    else if (r && r->type == REDIS_REPLY_ERROR)
        pl_warn("presence resync (shard %d): %s", s->index, r->str);
}

void pl_chat_resync(pl_shard_t *s)
{
    pl_chat_flush(s); /* what is queued goes first; the counts below then include it */
    if (pl_kv_cluster(s)) {
        pl_split_resync(s);
        return;
    }
    size_t users = pl_users_count(&s->users), k = 0;
    const char **argv = malloc((PRESENCE_FIXED_ARGS + 2 * users) * sizeof *argv);
    size_t *lens = malloc((PRESENCE_FIXED_ARGS + 2 * users) * sizeof *lens);
    char *counts = malloc(users * 12 + 1);
    char nums[3][24];
    if (!argv || !lens || !counts) {
        pl_error("presence resync (shard %d): out of memory", s->index);
        goto out;
    }
    k = (size_t)presence_args(s, PL_SCRIPT_RESYNC, argv, lens, nums);
    /* Every connection in the user table is authenticated and not yet gone: from now on each
     * is counted in Redis, so its close must be sent. */
    char *cp = counts;
    for (pl_user_t *u = pl_users_first(&s->users); u; u = pl_users_next(&s->users, u)) {
        for (pl_user_link_t *l = u->first; l; l = l->next)
            pl_session_of_ulink(l)->presence = 1;
        int len = snprintf(cp, 12, "%u", u->n);
        argv[k] = u->name, lens[k++] = u->len;
        argv[k] = cp, lens[k++] = (size_t)len;
        cp += len + 1;
    }
    if (pl_kv_command(s, NULL, 0, resync_reply, s, (int)k, argv, lens) != 0)
        pl_debug("presence resync (shard %d): redis unavailable", s->index);
    else if (users)
        pl_info("presence: shard %d re-announced %zu user(s) to redis", s->index, users);
out:
    free(argv);
    free(lens);
    free(counts);
}

void pl_chat_free(pl_shard_t *s)
{
    pl_buf_free(&s->pq.users);
}

/* ---- typing ---- */

/* Rooms this connection is typing in: a stop is sent when it stops, expires or closes. */
typedef struct pl_typing {
    struct pl_typing *next;
    uint64_t deadline; /**< uv_now of the shard loop */
    char room[PL_ROOM_MAX + 1];
} pl_typing_t;

#define TYPING_TTL_MS 10000

/* The typing script for `room` (op "1" start, "0" stop). */
static int typing_script(pl_conn_t *c, const char *room, const char *op, pl_redis_cb cb, void *priv)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    const char *pfx = s->srv->cfg.redis_prefix, *user = pl_session_user(pl_session_of(c));
    size_t room_len = strlen(room);
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)pl_now_ms());
    pl_key_typing(&s->kbuf[0], pfx, "typing:", room, room_len, user);
    pl_key_typing(&s->kbuf[1], pfx, "typing_rl:", room, room_len, user);
    /* The deadlines set is global: a cluster goes without it (docs/redis.md). */
    pl_buf_reset(&s->kbuf[2]);
    pl_buf_printf(&s->kbuf[2], "%styping_deadlines", pfx);
    pl_key_room_chan(&s->kbuf[3], room, room_len);
    const char *keys[3] = {s->kbuf[0].data, s->kbuf[1].data, s->kbuf[2].data};
    const char *args[6] = {room, user, op, now, s->kbuf[3].data, pl_key_publish_cmd()};
    return chat_script(s, PL_SCRIPT_TYPING, pl_kv_cluster(s) ? 2 : 3, keys, 6, args, cb, priv);
}

static void typing_send(pl_conn_t *c, const char *room, const char *op)
{
    typing_script(c, room, op, NULL, NULL);
}

static void typing_forget(pl_conn_t *c, const char *room, int send_stop)
{
    for (pl_typing_t **pp = &pl_session_of(c)->typing; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->room, room) == 0) {
            pl_typing_t *t = *pp;
            *pp = t->next;
            if (send_stop) typing_send(c, t->room, "0");
            free(t);
            return;
        }
}

void pl_chat_typing_stop_all(pl_conn_t *c)
{
    pl_session_t *ss = pl_session_of(c);
    while (ss->typing)
        typing_forget(c, ss->typing->room, 1);
}

void pl_chat_tick(pl_conn_t *c, uint64_t now)
{
    pl_typing_t *t = pl_session_of(c)->typing;
    while (t) {
        pl_typing_t *next = t->next;
        if (now >= t->deadline) typing_forget(c, t->room, 1);
        t = next;
    }
}

static void job_free_cb(pl_db_job_t *j)
{
    free(j);
}

static int subscribed_to(pl_conn_t *c, const pl_req_t *req)
{
    pl_room_t *room = pl_room_find(&pl_shard_of_conn(c)->rooms, req->room, req->room_len);
    if (room && pl_room_sub_of(pl_session_of(c)->subs, room)) return 1;
    pl_session_error(c, PL_ERR_NOT_SUBSCRIBED, "subscribe to the room first", req->cid,
                     req->cid_len);
    return 0;
}

typedef struct {
    pl_conn_t *conn;
    char room[PL_ROOM_MAX + 1];
    int64_t seq;
    uint8_t cid_len;
    char cid[PL_CID_MAX];
} chat_ctx_t;

static chat_ctx_t *chat_ctx(pl_conn_t *c, const pl_req_t *req)
{
    chat_ctx_t *x = malloc(sizeof *x);
    if (!x) return NULL;
    x->conn = c;
    memcpy(x->room, req->room, req->room_len + 1);
    x->seq = req->seq;
    x->cid_len = (uint8_t)req->cid_len;
    if (req->cid) memcpy(x->cid, req->cid, req->cid_len);
    pl_conn_hold(c);
    return x;
}

static void chat_ctx_done(chat_ctx_t *x)
{
    pl_conn_t *c = x->conn;
    free(x);
    pl_conn_release(c);
}

static void typing_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    chat_ctx_t *x = privdata;
    pl_conn_t *c = x->conn;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1 && pl_conn_open(c)) {
        /* Forwarded: (re)arm this connection's 10 s expiry for the room. */
        uint64_t deadline = pl_sock_now(&c->sock) + TYPING_TTL_MS;
        pl_session_t *ss = pl_session_of(c);
        pl_typing_t *t;
        for (t = ss->typing; t && strcmp(t->room, x->room) != 0; t = t->next) {
        }
        if (!t && (t = malloc(sizeof *t))) {
            snprintf(t->room, sizeof t->room, "%s", x->room);
            t->next = ss->typing;
            ss->typing = t;
        }
        if (t) t->deadline = deadline;
    }
    chat_ctx_done(x);
}

void pl_chat_typing(pl_conn_t *c, const pl_req_t *req, int start)
{
    if (!subscribed_to(c, req)) return;
    if (!start) {
        typing_forget(c, req->room, 0);
        typing_send(c, req->room, "0");
        return;
    }
    chat_ctx_t *x = chat_ctx(c, req);
    if (!x) return;
    if (typing_script(c, req->room, "1", typing_reply, x) != 0) {
        chat_ctx_done(x);
        pl_session_error(c, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later", req->cid,
                         req->cid_len);
    }
}

static void read_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    chat_ctx_t *x = privdata;
    pl_conn_t *c = x->conn;
    redisReply *r = reply;
    const char *cid = x->cid_len ? x->cid : NULL;
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        if (pl_conn_open(c))
            pl_session_error(c, PL_ERR_UNAVAILABLE, "the read position could not be stored; retry",
                             cid, x->cid_len);
    } else if (r->integer < 0) {
        if (pl_conn_open(c))
            pl_session_error(c, PL_ERR_BAD_REQUEST, "seq is past the room's last message", cid,
                             x->cid_len);
    } else if (r->integer == 1 && pl_shard_of_conn(c)->srv->db) {
        /* Moved forward: make it durable too (the database keeps the greatest). */
        pl_shard_t *s = pl_shard_of_conn(c);
        pl_db_read_t *j = calloc(1, sizeof *j);
        if (j) {
            pl_db_job_init(&j->h, PL_DB_READ, s->loop, PL_EV_DB, job_free_cb);
            snprintf(j->room, sizeof j->room, "%s", x->room);
            snprintf(j->user, sizeof j->user, "%s", pl_session_user(pl_session_of(c)));
            j->seq = x->seq;
            pl_db_submit(s->srv->db, &j->h);
        }
    }
    chat_ctx_done(x);
}

void pl_chat_read(pl_conn_t *c, const pl_req_t *req)
{
    if (!subscribed_to(c, req)) return;
    chat_ctx_t *x = chat_ctx(c, req);
    if (!x) return;
    char seq[24];
    snprintf(seq, sizeof seq, "%lld", (long long)req->seq);
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_key_seq(&s->kbuf[0], req->room, req->room_len);
    pl_key_read(&s->kbuf[1], s->srv->cfg.redis_prefix, req->room, req->room_len);
    pl_key_room_chan(&s->kbuf[2], req->room, req->room_len);
    const char *keys[2] = {s->kbuf[0].data, s->kbuf[1].data};
    const char *args[5] = {req->room, pl_session_user(pl_session_of(c)), seq, s->kbuf[2].data,
                           pl_key_publish_cmd()};
    if (chat_script(s, PL_SCRIPT_READ, 2, keys, 5, args, read_reply, x) != 0) {
        chat_ctx_done(x);
        pl_session_error(c, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later", req->cid,
                         req->cid_len);
    }
}

/* ---- heartbeat and dead instances (shard 0) ---- */

/* The heartbeat found this instance unknown to Redis (it lost its data): every shard
 * re-announces its connections. */
static void resync_everywhere(pl_shard_t *s)
{
    pl_server_t *srv = s->srv;
    pl_warn("presence: redis had forgotten this instance (restarted or flushed); every shard "
            "re-announces its connections");
    for (int i = 0; i < srv->nshards; i++)
        pl_shard_resync(pl_server_shard(srv, i));
}

static void presence_sweep_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) {
        pl_warn("presence sweep: %s", r->str);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) return;
    if (r->element[0]->integer > 0)
        pl_info("presence: %lld user(s) of dead instance(s) reported offline",
                r->element[0]->integer);
    if (r->element[1]->integer == 1) resync_everywhere(s);
}

/*
 * Instances are found through ws:servers, which the presence script keeps in step with every
 * ws:server_users set it writes. A set left behind by anything else (an older version, a
 * partial restore) is found here instead: one SCAN step per heartbeat, and each instance it
 * names is listed so the sweep looks at its heartbeat.
 */
static void scan_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    s->scan_cursor = strtoull(r->element[0]->str, NULL, 10);
    const pl_config_t *cfg = &s->srv->cfg;
    size_t plen = strlen(cfg->redis_prefix) + strlen("server_users:");
    pl_buf_reset(&s->kbuf[0]);
    pl_buf_printf(&s->kbuf[0], "%sservers", cfg->redis_prefix);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
        const redisReply *k = r->element[1]->element[i];
        if (k->type != REDIS_REPLY_STRING || k->len <= plen) continue;
        const char *argv[3] = {"SADD", s->kbuf[0].data, k->str + plen};
        size_t lens[3] = {4, s->kbuf[0].len, k->len - plen};
        pl_kv_command(s, NULL, 0, NULL, NULL, 3, argv, lens);
    }
}

void pl_chat_presence_sweep(pl_shard_t *s)
{
    if (pl_kv_cluster(s)) {
        pl_split_heartbeat(s);
        pl_split_sweep(s);
        return;
    }
    char now[24], ttl[8], cursor[24];
    snprintf(now, sizeof now, "%lld", (long long)pl_now_ms());
    snprintf(ttl, sizeof ttl, "%d", PL_HEARTBEAT_TTL_S);
    const char *args[3] = {s->srv->cfg.server_id, now, ttl};
    chat_script(s, PL_SCRIPT_SWEEP, 0, NULL, 3, args, presence_sweep_reply, s);
    snprintf(cursor, sizeof cursor, "%llu", (unsigned long long)s->scan_cursor);
    pl_buf_reset(&s->kbuf[1]);
    pl_buf_printf(&s->kbuf[1], "%sserver_users:*", s->srv->cfg.redis_prefix);
    const char *argv[6] = {"SCAN", cursor, "MATCH", s->kbuf[1].data, "COUNT", "100"};
    size_t lens[6] = {4, strlen(cursor), 5, s->kbuf[1].len, 5, 3};
    pl_kv_command(s, NULL, 0, scan_reply, s, 6, argv, lens);
}
