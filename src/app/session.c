/*
 * session: protocol v1 semantics for one connection; see the header for the
 * message and subscription flows.
 */
#include "parley/app/session.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <mbedtls/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "parley/app/chat.h"
#include "parley/svc/db.h"
#include "parley/base/jwt.h"
#include "parley/base/log.h"
#include "parley/svc/script.h"
#include "parley/app/server.h"

/* A catch-up in flight: which subscription it is for, and what Redis had. */
typedef struct {
    pl_conn_t *conn;
    uint32_t gen;
    int64_t since; /**< -1: a plain subscribe */
    int64_t cur;   /**< the room's seq, per Redis */
    int64_t read;  /**< the user's read position, -1 unknown (Redis not ready) */
    int truncated;
    pl_frame_t **stream; /**< stream entries after those PostgreSQL is asked for */
    size_t nstream;
    char room[PL_ROOM_MAX + 1];
} sync_ctx_t;

static void sync_ctx_free(sync_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->nstream; i++)
        pl_frame_unref(ctx->stream[i]);
    free(ctx->stream);
    free(ctx);
}

/* The seq in a shared message frame (its header is 2, 4 or 10 bytes). */
static int64_t frame_seq(const pl_frame_t *f)
{
    size_t h = (f->data[1] & 0x7f) == 126 ? 4 : (f->data[1] & 0x7f) == 127 ? 10 : 2;
    return pl_proto_payload_seq((const char *)f->data + h, f->len - h);
}

static void need_restore(pl_shard_t *s);
static void submit_publish(pl_shard_t *s, pl_db_job_t *j);
static void release_pending(pl_shard_t *s, pl_sub_t *sub);

/* Key and argument buffers; each shard thread has its own. */
static _Thread_local pl_buf_t kbuf[3], tail_buf;

static pl_buf_t *scratch(pl_conn_t *c)
{
    pl_buf_t *b = &c->shard->scratch;
    pl_buf_reset(b);
    return b;
}

static const pl_config_t *cfg_of(pl_conn_t *c)
{
    return &c->shard->srv->cfg;
}

void pl_session_error(pl_conn_t *c, pl_err_t code, const char *message, const char *cid,
                      size_t cid_len)
{
    pl_buf_t *b = scratch(c);
    pl_proto_error(b, code, message, cid, cid_len);
    pl_conn_send_json(c, b);
}

static void ready_check(pl_shard_t *s);

void pl_session_redis_up(pl_redis_t *r)
{
    pl_shard_t *s = r->data;
    pl_script_load_all(r);
    /* Redis may have restarted (or this connection been lost) while clients stayed: presence,
     * the user -> instance routes of direct messages and the registration are put back. */
    pl_chat_resync(s);
    /* Nothing is published on a new connection until parley:ready is seen on it. */
    s->redis_ready = 0;
    ready_check(s);
}

/* ---- authentication ---- */

void pl_session_start(pl_conn_t *c, const char *user)
{
    pl_shard_t *s = c->shard;
    c->user = strdup(user);
    if (!c->user) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    c->flags |= PL_CONN_AUTHED;
    /* Before Redis gave this shard its id node, a random session id: it only has to be unique,
     * and 64 random bits are, for all practical purposes. */
    if (s->ids_ready || getrandom(&c->session, sizeof c->session, 0) != sizeof c->session)
        c->session = pl_idgen_next(&s->ids, pl_now_ms());
    char session[24];
    snprintf(session, sizeof session, "%016llx", (unsigned long long)c->session);
    pl_buf_t *b = scratch(c);
    pl_proto_authenticated(b, user, s->srv->cfg.server_id, session);
    pl_conn_send_json(c, b);
    pl_debug("conn %s: authenticated, session %s", user, session);
    if (!pl_room_join(&s->users, user, strlen(user), c, &c->usub)) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    pl_chat_presence_up(c);
}

static void on_authenticate(pl_conn_t *c, const pl_req_t *req)
{
    const pl_config_t *cfg = cfg_of(c);
    char sub[PL_JWT_SUB_MAX + 1];
    int rc = pl_jwt_verify(cfg->jwt_secret, strlen(cfg->jwt_secret), req->token, req->token_len,
                           pl_now_ms() / 1000, sub);
    if (rc != 0) {
        pl_conn_close(c, 4001, pl_jwt_strerror(rc));
        return;
    }
    pl_session_start(c, sub);
}

/* ---- a subscription catching up: held live frames, the recovered ones streamed ---- */

/* The recovered messages of a catch-up, in seq order, sent as the socket drains
 * (pl_session_refill). Allocated by finish_sync, freed when the last frame is sent or the
 * subscription ends. */
typedef struct pl_replay {
    int64_t cur;          /**< the room's seq when the catch-up read it: live frames after it */
    size_t n, next;       /**< frames[next..n) are still to be sent */
    pl_frame_t *frames[]; /**< owned references */
} pl_replay_t;

/* End a catch-up early (resubscribe, leave): what it held and had still to send goes. */
static void drop_catchup(pl_shard_t *s, pl_sub_t *sub)
{
    while (sub->held) {
        pl_outq_node_t *n = sub->held;
        sub->held = n->next;
        pl_frame_unref(n->frame);
        pl_shard_node_put(s, n);
    }
    sub->held_tail = NULL;
    sub->held_bytes = 0;
    pl_replay_t *rp = sub->replay;
    if (rp) {
        for (size_t i = rp->next; i < rp->n; i++)
            pl_frame_unref(rp->frames[i]);
        free(rp);
        sub->replay = NULL;
    }
}

static void hold(pl_conn_t *c, pl_sub_t *sub, pl_frame_t *f, int64_t seq)
{
    /* Held frames wait on the catch-up, not on the client: bounded by the hard limit. */
    if (sub->held_bytes + f->len > cfg_of(c)->max_outbuf) {
        pl_conn_close(c, 4008, "slow consumer");
        drop_catchup(c->shard, sub);
        return;
    }
    pl_outq_node_t *n = pl_shard_node_get(c->shard);
    if (!n) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    n->frame = pl_frame_ref(f);
    n->seq = seq;
    pl_outq_append(&sub->held, &sub->held_tail, n);
    sub->held_bytes += f->len;
}

/* Queue a room frame on a subscription unless its seq was already sent. */
static void send_once(pl_conn_t *c, pl_sub_t *sub, pl_frame_t *f, int64_t seq)
{
    if (seq && seq <= sub->last_seq) return;
    pl_conn_send(c, f);
    if (seq) sub->last_seq = seq;
}

/* Send up to `mark` bytes' worth of a catch-up: the recovered messages, then the live frames
 * held meanwhile. Returns 1 when it is all out and the subscription is live. */
static int replay_some(pl_conn_t *c, pl_sub_t *sub, size_t mark)
{
    pl_replay_t *rp = sub->replay;
    while (rp->next < rp->n && c->q_bytes < mark && pl_conn_open(c)) {
        pl_frame_t *f = rp->frames[rp->next++];
        send_once(c, sub, f, frame_seq(f));
        pl_frame_unref(f);
    }
    if (rp->next < rp->n) return 0;
    if (sub->last_seq < rp->cur) sub->last_seq = rp->cur; /* held frames up to it: duplicates */
    while (sub->held && c->q_bytes < mark && pl_conn_open(c)) {
        pl_outq_node_t *n = sub->held;
        sub->held = n->next;
        sub->held_bytes -= n->frame->len;
        send_once(c, sub, n->frame, n->seq);
        pl_frame_unref(n->frame);
        pl_shard_node_put(c->shard, n);
    }
    if (sub->held) return 0;
    sub->held_tail = NULL;
    free(rp);
    sub->replay = NULL;
    sub->sync_gen = 0; /* live from here on */
    return 1;
}

void pl_session_refill(pl_conn_t *c)
{
    size_t mark = pl_conn_refill_mark(c);
    int more = 0;
    for (pl_sub_t *sub = c->subs; sub && pl_conn_open(c); sub = sub->next) {
        if (!sub->replay) continue;
        if (c->q_bytes >= mark || !replay_some(c, sub, mark)) more = 1;
    }
    if (!more) c->flags &= (uint16_t)~PL_CONN_REFILL;
}

static void leave(pl_conn_t *c, pl_sub_t *sub)
{
    release_pending(c->shard, sub); /* accepted while catching up: they still go out */
    drop_catchup(c->shard, sub);
    pl_room_leave(&c->shard->rooms, &c->subs, sub);
}

void pl_session_leave_all(pl_conn_t *c)
{
    pl_shard_t *s = c->shard;
    while (c->subs)
        leave(c, c->subs);
    atomic_store_explicit(&s->nrooms, (long)s->rooms.count, memory_order_relaxed);
    /* The connection is closing: its typing stops, its presence goes. */
    pl_chat_typing_stop_all(c);
    if (c->usub) pl_room_leave(&s->users, &c->usub, c->usub);
    if (c->user) pl_chat_presence_down(c);
}

/* The subscription of `c` to `room` if it is still the one catch-up `gen` is for. */
static pl_sub_t *sub_for(pl_conn_t *c, const char *room, uint32_t gen)
{
    if (!pl_conn_open(c)) return NULL;
    pl_room_t *r = pl_room_find(&c->shard->rooms, room, strlen(room));
    pl_sub_t *sub = r ? pl_room_sub_of(c->subs, r) : NULL;
    return sub && sub->sync_gen == gen ? sub : NULL;
}

/* ---- subscribing: catch-up ---- */

/*
 * Finish a catch-up: `subscribed` now; then, as the socket drains (pl_session_refill), the
 * missed messages (those recovered from PostgreSQL, then those from the Redis stream, whose
 * references are taken over from `pg` and ctx), then the live frames held meanwhile, skipping
 * any seq already sent. Live frames keep being held until all of that is out.
 */
static void finish_sync(pl_conn_t *c, pl_sub_t *sub, sync_ctx_t *ctx, pl_frame_t **pg, size_t *npg,
                        int truncated)
{
    size_t n_pg = npg ? *npg : 0, n = n_pg + ctx->nstream;
    pl_replay_t *rp = malloc(sizeof *rp + n * sizeof rp->frames[0]);
    if (!rp) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    pl_buf_t *b = scratch(c);
    pl_proto_subscribed(b, sub->room->name, sub->room->len, ctx->cur, ctx->read,
                        ctx->since >= 0 ? (long)n : -1, truncated || ctx->truncated);
    pl_conn_send_json(c, b);
    if (n_pg) memcpy(rp->frames, pg, n_pg * sizeof *pg);
    if (ctx->nstream) memcpy(rp->frames + n_pg, ctx->stream, ctx->nstream * sizeof *ctx->stream);
    if (npg) *npg = 0;
    ctx->nstream = 0;
    rp->n = n;
    rp->next = 0;
    rp->cur = ctx->cur;
    sub->replay = rp;
    /* A client claiming more than the room has (Redis lost its data) is not trusted. */
    sub->last_seq = ctx->since > 0 ? (ctx->since < ctx->cur ? ctx->since : ctx->cur) : 0;
    c->flags |= PL_CONN_REFILL;
    pl_session_refill(c);
    /* Messages the client sent to the room before `subscribed`: published now; their live
     * copies come after the catch-up like any live frame. */
    release_pending(c->shard, sub);
}

static void sync_fail(pl_conn_t *c, pl_sub_t *sub, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof msg, "could not subscribe to %s: %s; retry", sub->room->name, why);
    leave(c, sub);
    pl_session_error(c, PL_ERR_UNAVAILABLE, msg, NULL, 0);
}

/* PostgreSQL answered for what the Redis stream does not have. */
static void recover_done(pl_db_job_t *j)
{
    pl_conn_t *c = j->ctx;
    sync_ctx_t *ctx = j->extra;
    pl_sub_t *sub = sub_for(c, ctx->room, ctx->gen);
    if (sub) {
        if (j->status != PL_DB_OK) {
            sync_fail(c, sub, "the database is unreachable");
        } else {
            if (ctx->cur < 0) ctx->cur = j->result_seq; /* Redis had no seq: the database's */
            if (ctx->since >= 0 && j->truncated) ctx->since = j->after;
            finish_sync(c, sub, ctx, j->frames, &j->nframes, j->truncated);
        }
    }
    sync_ctx_free(ctx);
    pl_db_job_free(j);
    pl_conn_reply_done(c);
}

/* Ask PostgreSQL for messages after `after` and before `before` (0: no bound). Takes ctx. */
static int start_recover(pl_conn_t *c, sync_ctx_t *ctx, int64_t after, int64_t before)
{
    pl_db_t *db = c->shard->srv->db;
    pl_db_job_t *j = db ? pl_db_job_new(PL_DB_RECOVER, c->shard, recover_done, c) : NULL;
    if (!j) return -1;
    snprintf(j->room, sizeof j->room, "%s", ctx->room);
    j->extra = ctx;
    j->after = after;
    j->before = before;
    /* A plain subscribe only needs the room's seq (LIMIT 0 reads no rows). */
    j->limit = ctx->since < 0 ? 0 : (int)cfg_of(c)->recover_max;
    c->replies_pending++;
    pl_db_submit(db, j);
    return 0;
}

static void sync_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    sync_ctx_t *ctx = privdata;
    pl_conn_t *c = ctx->conn;
    redisReply *r = reply;
    pl_sub_t *sub = sub_for(c, ctx->room, ctx->gen);
    if (!sub) {
        /* Gone, unsubscribed or resubscribed meanwhile: nothing to do. */
    } else if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
               r->element[0]->type != REDIS_REPLY_INTEGER) {
        sync_fail(c, sub, r && r->type == REDIS_REPLY_ERROR ? r->str : "redis unreachable");
    } else if (r->element[0]->integer < 0) {
        /* Redis lost its data: PostgreSQL knows the seq (and the missed messages). */
        need_restore(c->shard);
        ctx->cur = -1;
        if (start_recover(c, ctx, ctx->since, 0) == 0)
            ctx = NULL;
        else {
            ctx->cur = 0;
            finish_sync(c, sub, ctx, NULL, NULL, 0);
        }
    } else if (r->elements >= 4) {
        ctx->cur = r->element[0]->integer;
        ctx->truncated = (int)r->element[1]->integer;
        int64_t since = r->element[2]->integer;
        int64_t rd = r->element[3]->integer;
        ctx->read = rd < 0 ? 0 : rd;
        size_t n = r->elements - 4;
        ctx->stream = n ? calloc(n, sizeof *ctx->stream) : NULL;
        for (size_t i = 0; i < n && ctx->stream; i++) {
            const redisReply *e = r->element[4 + i];
            if (e->type == REDIS_REPLY_STRING &&
                (ctx->stream[ctx->nstream] = pl_frame_text(e->str, e->len)))
                ctx->nstream++;
        }
        if (ctx->since >= 0) ctx->since = since;
        int64_t first = ctx->nstream ? frame_seq(ctx->stream[0]) : ctx->cur + 1;
        if (ctx->since >= 0 && since < ctx->cur && first != since + 1) {
            /* The stream was trimmed past `since`: older ones come from PostgreSQL. */
            if (start_recover(c, ctx, since, first) == 0)
                ctx = NULL;
            else
                ctx->truncated = 1; /* no database: what the stream has is all there is */
        }
        if (ctx) finish_sync(c, sub, ctx, NULL, NULL, 0);
    }
    if (ctx) sync_ctx_free(ctx);
    pl_conn_reply_done(c);
}

static void start_sync(pl_conn_t *c, pl_sub_t *sub, int64_t since)
{
    pl_shard_t *s = c->shard;
    if (++s->sync_gen == 0) s->sync_gen = 1;
    sub->sync_gen = s->sync_gen;
    drop_catchup(s, sub);
    sync_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        sync_fail(c, sub, "out of memory");
        return;
    }
    ctx->conn = c;
    ctx->gen = sub->sync_gen;
    ctx->since = since;
    ctx->read = -1;
    snprintf(ctx->room, sizeof ctx->room, "%s", sub->room->name);

    char since_s[24], most[24];
    snprintf(since_s, sizeof since_s, "%lld", (long long)since);
    snprintf(most, sizeof most, "%zu", cfg_of(c)->recover_max);
    pl_key_seq(&kbuf[0], sub->room->name, sub->room->len);
    pl_key_stream(&kbuf[1], sub->room->name, sub->room->len);
    pl_buf_reset(&kbuf[2]);
    pl_buf_printf(&kbuf[2], "%sread:%s", cfg_of(c)->redis_prefix, sub->room->name);
    const char *argv[10] = {"EVALSHA",    pl_script_sha(PL_SCRIPT_SYNC),
                            "4",          kbuf[0].data,
                            kbuf[1].data, PL_KEY_READY,
                            kbuf[2].data, since_s,
                            most,         c->user};
    size_t lens[10] = {7,
                       40,
                       1,
                       kbuf[0].len,
                       kbuf[1].len,
                       strlen(PL_KEY_READY),
                       kbuf[2].len,
                       strlen(since_s),
                       strlen(most),
                       strlen(c->user)};
    if (pl_redis_command(&s->redis, sync_reply, ctx, 10, argv, lens) != 0) {
        sync_ctx_free(ctx);
        sync_fail(c, sub, "redis unreachable");
        return;
    }
    c->replies_pending++;
}

/* ---- subscribing: membership ---- */

/* The membership check (closed rooms) or record (open rooms) came back. */
static void join_checked(pl_db_job_t *j)
{
    pl_conn_t *c = j->ctx;
    pl_sub_t *sub = sub_for(c, j->room, j->tag);
    if (sub) {
        /* Open rooms let anyone in: a membership that could not be recorded is no reason to refuse.
         */
        if (j->status == PL_DB_OK || j->open_rooms) {
            pl_chat_member(c->shard, j->room, c->user, 1);
            start_sync(c, sub, j->after);
        } else {
            leave(c, sub);
            atomic_store_explicit(&c->shard->nrooms, (long)c->shard->rooms.count,
                                  memory_order_relaxed);
            char msg[200];
            snprintf(msg, sizeof msg, "%s %s", j->room,
                     j->status == PL_DB_EFORBIDDEN ? ": not a member of this room"
                                                   : ": membership could not be checked; retry");
            pl_session_error(c,
                             j->status == PL_DB_EFORBIDDEN ? PL_ERR_FORBIDDEN : PL_ERR_UNAVAILABLE,
                             msg, NULL, 0);
        }
    }
    pl_db_job_free(j);
    pl_conn_reply_done(c);
}

static void on_subscribe(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = c->shard;
    const pl_config_t *cfg = cfg_of(c);
    pl_db_t *db = s->srv->db;
    /* All or nothing: count the rooms that would be new before joining any. */
    size_t have = pl_room_count(c->subs), add = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, req->rooms)
    {
        pl_room_t *room = pl_room_find(&s->rooms, r->valuestring, strlen(r->valuestring));
        if (!room || !pl_room_sub_of(c->subs, room)) add++;
    }
    if (have + add > cfg->max_rooms) {
        pl_session_error(c, PL_ERR_TOO_LARGE, "too many rooms on this connection", req->cid,
                         req->cid_len);
        return;
    }
    cJSON_ArrayForEach(r, req->rooms)
    {
        if (strncmp(r->valuestring, "dm:", 3) == 0) {
            /* Direct conversations are not rooms one subscribes to: they come to the user. */
            pl_session_error(c, PL_ERR_FORBIDDEN, "dm: rooms cannot be subscribed to", req->cid,
                             req->cid_len);
            return;
        }
    }
    cJSON_ArrayForEach(r, req->rooms)
    {
        size_t len = strlen(r->valuestring);
        pl_sub_t *sub = pl_room_join(&s->rooms, r->valuestring, len, c, &c->subs);
        if (!sub) {
            pl_conn_abort(c, "out of memory");
            return;
        }
        int64_t since = pl_proto_since(req, r->valuestring);
        if (db) {
            /* Membership first (closed rooms: checked; open rooms: recorded, so that
             * `subscribed` means member, e.g. for the history API). Live frames are held
             * from now on; the catch-up starts when the database has answered. */
            if (++s->sync_gen == 0) s->sync_gen = 1;
            sub->sync_gen = s->sync_gen;
            drop_catchup(s, sub);
            pl_db_job_t *j = pl_db_job_new(PL_DB_JOIN, s, join_checked, c);
            if (!j) {
                sync_fail(c, sub, "out of memory");
                continue;
            }
            snprintf(j->room, sizeof j->room, "%s", r->valuestring);
            snprintf(j->user, sizeof j->user, "%s", c->user);
            j->tag = sub->sync_gen;
            j->after = since;
            j->open_rooms = cfg->open_rooms;
            c->replies_pending++;
            pl_db_submit(db, j);
            continue;
        }
        pl_chat_member(s, r->valuestring, c->user, 1);
        start_sync(c, sub, since);
    }
    atomic_store_explicit(&s->nrooms, (long)s->rooms.count, memory_order_relaxed);
}

static void on_unsubscribe(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = c->shard;
    const cJSON *r;
    cJSON_ArrayForEach(r, req->rooms)
    {
        size_t len = strlen(r->valuestring);
        pl_room_t *room = pl_room_find(&s->rooms, r->valuestring, len);
        pl_sub_t *sub = room ? pl_room_sub_of(c->subs, room) : NULL;
        if (sub) leave(c, sub);
        pl_buf_t *b = scratch(c);
        pl_proto_room_reply(b, "unsubscribed", r->valuestring, len);
        pl_conn_send_json(c, b);
    }
    atomic_store_explicit(&s->nrooms, (long)s->rooms.count, memory_order_relaxed);
}

/* ---- publishing ---- */

static int eval_publish(pl_shard_t *s, pl_db_job_t *j, int full_script);

/* The end of a message's road: the connection's hold and the job go. */
static void message_done(pl_db_job_t *j)
{
    pl_conn_t *c = j->ctx;
    pl_db_job_free(j);
    pl_conn_reply_done(c);
}

/* The message is not going to be stored or acked. `code`: PL_ERR_UNAVAILABLE if it was not
 * published (not accepted), PL_ERR_NOT_STORED if it may have been delivered: then the client
 * resends with the same cid, which is not delivered again but stored and acked. */
static void message_failed(pl_db_job_t *j, pl_err_t code, const char *why)
{
    pl_conn_t *c = j->ctx;
    if (pl_conn_open(c)) pl_session_error(c, code, why, j->cid[0] ? j->cid : NULL, strlen(j->cid));
    if (j->shard->srv->db) pl_db_release(j->shard->srv->db);
    message_done(j);
}

/* Stored (or not): the sender hears of it. */
static void store_done(pl_db_job_t *j)
{
    pl_conn_t *c = j->ctx;
    if (pl_conn_open(c)) {
        pl_buf_t *b = scratch(c);
        if (j->status == PL_DB_OK) {
            pl_proto_ack(b, j->cid[0] ? j->cid : NULL, strlen(j->cid), j->id, j->seq);
            pl_conn_send_json(c, b);
        } else {
            pl_session_error(c, PL_ERR_NOT_STORED,
                             j->status == PL_DB_EUNAVAILABLE
                                 ? "the message was delivered but not stored (server stopping); "
                                   "resend it with the same cid"
                                 : "the message was delivered but could not be stored",
                             j->cid[0] ? j->cid : NULL, strlen(j->cid));
        }
    }
    message_done(j);
}

/* Published (or found to be a duplicate): on to the database, if there is one. */
static void published(pl_db_job_t *j)
{
    pl_db_t *db = j->shard->srv->db;
    if (!db) {
        message_done(j); /* no database: no ack (docs/protocol.md) */
        return;
    }
    j->done = store_done;
    pl_db_submit(db, j);
}

/*
 * Redis answered "not ready": it lost its data (restarted without
 * persistence, flushed). One restore at a time per process puts the seqs and
 * recent cids back from PostgreSQL (db.c) and marks Redis ready; meanwhile
 * messages are refused with `unavailable`, never published with a wrong seq.
 */
static void restore_done(pl_db_job_t *j)
{
    atomic_store(&j->shard->srv->restoring, 0);
    pl_db_job_free(j);
}

static void need_restore(pl_shard_t *s)
{
    pl_server_t *srv = s->srv;
    if (atomic_exchange(&srv->restoring, 1)) return;
    pl_db_job_t *j = srv->db ? pl_db_job_new(PL_DB_RESTORE, s, restore_done, NULL) : NULL;
    if (j) {
        static _Atomic int64_t last_log;
        int64_t now = pl_now_ms();
        if (now - atomic_exchange(&last_log, now) > 5000)
            pl_info("redis has no %s (it is new, or lost its data): restoring room seqs, recent "
                    "cids, read positions and memberships from the database",
                    PL_KEY_READY);
        pl_db_submit(srv->db, j);
        return;
    }
    /* No database: nothing to restore; a fresh Redis is simply ready. */
    const char *argv[3] = {"SET", PL_KEY_READY, "1"};
    size_t lens[3] = {3, strlen(PL_KEY_READY), 1};
    pl_redis_command(&s->redis, NULL, NULL, 3, argv, lens);
    atomic_store(&srv->restoring, 0);
}

/* Queue a message until Redis is ready; `bounced`: Redis refused it (it was sent earlier). */
static void wait_ready(pl_shard_t *s, pl_db_job_t *j, int bounced)
{
    if (bounced)
        pl_db_job_append(&s->bounced, &s->bounced_tail, j);
    else
        pl_db_job_append(&s->waiting, &s->waiting_tail, j);
    s->nwaiting++;
}

/* Redis is ready (ok) or gone (!ok): send, or refuse, what waited, in order. */
static void release_waiting(pl_shard_t *s, int ok)
{
    pl_db_job_t *list = s->bounced;
    if (s->bounced_tail)
        s->bounced_tail->next = s->waiting;
    else
        list = s->waiting;
    s->bounced = s->bounced_tail = s->waiting = s->waiting_tail = NULL;
    s->nwaiting = 0;
    while (list) {
        pl_db_job_t *j = list;
        list = j->next;
        if (!ok || eval_publish(s, j, 0) != 0)
            message_failed(j, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later");
    }
}

static void ready_timer_cb(uv_timer_t *t)
{
    ready_check(t->data);
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
    if (r->integer != 1) need_restore(s);
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

static void ready_check(pl_shard_t *s)
{
    if (!s->ids_ready) {
        const char *argv[3] = {"INCRBY", "parley:id_nodes", "1"};
        size_t lens[3] = {6, 15, 1};
        pl_redis_command(&s->redis, ids_reply, s, 3, argv, lens);
    }
    const char *argv[2] = {"EXISTS", PL_KEY_READY};
    size_t lens[2] = {6, strlen(PL_KEY_READY)};
    if (pl_redis_command(&s->redis, ready_reply, s, 2, argv, lens) != 0) release_waiting(s, 0);
}

static void dm_member_done(pl_db_job_t *j)
{
    pl_db_job_free(j);
}

/* A conversation's first message: both users become members of its dm: room, which is what
 * lets them (and only them) read its history over HTTP. */
static void dm_members(const pl_db_job_t *m)
{
    pl_db_t *db = m->shard->srv->db;
    const char *users[2] = {m->user, m->to};
    for (int i = 0; db && i < 2; i++) {
        pl_db_job_t *j = pl_db_job_new(PL_DB_JOIN, m->shard, dm_member_done, NULL);
        if (!j) return;
        snprintf(j->room, sizeof j->room, "%s", m->room);
        snprintf(j->user, sizeof j->user, "%s", users[i]);
        j->open_rooms = 1; /* record, not check */
        pl_db_submit(db, j);
    }
}

static void publish_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_db_job_t *j = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* Redis lost its script cache (SCRIPT FLUSH): send the source this once. */
        if (eval_publish(j->shard, j, 1) != 0)
            message_failed(j, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later");
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        if (r && r->type == REDIS_REPLY_ERROR) pl_warn("publish to %s: %s", j->room, r->str);
        if (r)
            message_failed(j, PL_ERR_UNAVAILABLE, "redis refused the message; retry");
        else
            message_failed(j, PL_ERR_NOT_STORED,
                           "redis connection lost: the message may have been delivered but is not "
                           "stored; resend it with the same cid");
        return;
    }
    long long code = r->element[0]->integer;
    if (code == -1) {
        /* Redis lost its data under us: hold this and what follows until it is ready again. */
        pl_shard_t *s = j->shard;
        wait_ready(s, j, 1);
        if (s->redis_ready) {
            s->redis_ready = 0;
            ready_check(s);
        }
    } else if (code == 1 && r->elements == 2) {
        j->seq = r->element[1]->integer;
        if (j->to[0] && j->seq == 1) dm_members(j);
        published(j);
    } else if (code == 0 && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        /* A resend of a message already accepted: same id, seq and ts; nothing republished. */
        unsigned long long id;
        long long seq, ts;
        if (sscanf(r->element[1]->str, "%llu:%lld:%lld", &id, &seq, &ts) == 3) {
            j->id = id;
            j->seq = seq;
            j->ts_ms = ts;
            published(j);
        } else {
            message_failed(j, PL_ERR_UNAVAILABLE, "bad deduplication record");
        }
    } else {
        message_failed(j, PL_ERR_UNAVAILABLE, "unexpected reply from redis");
    }
}

/* The arguments of a publish or dm script call, built in place (strings are borrowed from the
 * job, the config and the thread's key buffers until the command is formatted). */
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

/* What both scripts start with: the call and the four keys (seq, stream, cid or "", ready). */
static void args_begin(script_args_t *a, pl_script_t which, int full_script, const pl_db_job_t *j,
                       size_t room_len)
{
    size_t cid_len = strlen(j->cid);
    pl_key_seq(&kbuf[0], j->room, room_len);
    pl_key_stream(&kbuf[1], j->room, room_len);
    if (cid_len)
        pl_key_cid(&kbuf[2], j->user, j->cid, cid_len);
    else
        pl_buf_reset(&kbuf[2]);
    const char *src = full_script ? pl_script_source(which) : pl_script_sha(which);
    a->n = 0;
    arg(a, full_script ? "EVAL" : "EVALSHA", full_script ? 4 : 7);
    arg(a, src, strlen(src));
    arg(a, "4", 1);
    arg(a, kbuf[0].data, kbuf[0].len);
    arg(a, kbuf[1].data, kbuf[1].len);
    arg(a, kbuf[2].data ? kbuf[2].data : "", kbuf[2].len);
    arg(a, PL_KEY_READY, strlen(PL_KEY_READY));
}

/* What both scripts take next: the frame's tail (in tail_buf), id, ts, stream length, cid ttl. */
static void args_message(script_args_t *a, const pl_db_job_t *j, const pl_config_t *cfg)
{
    arg(a, tail_buf.data, tail_buf.len);
    arg(a, a->id, pl_u64_str(a->id, j->id));
    arg(a, a->ts, pl_u64_str(a->ts, (uint64_t)j->ts_ms));
    arg(a, a->maxlen, pl_u64_str(a->maxlen, cfg->stream_len));
    arg(a, a->ttl, pl_u64_str(a->ttl, PL_CID_TTL_S));
}

/* A direct message (its tail is in tail_buf): the DM script routes it to server:{id} channels. */
static int eval_dm(pl_shard_t *s, pl_db_job_t *j, int full_script)
{
    const pl_config_t *cfg = &s->srv->cfg;
    script_args_t a;
    char omax[21];
    args_begin(&a, PL_SCRIPT_DM, full_script, j, strlen(j->room));
    args_message(&a, j, cfg);
    arg(&a, cfg->redis_prefix, strlen(cfg->redis_prefix));
    arg(&a, j->to, strlen(j->to));
    arg(&a, j->user, strlen(j->user));
    arg(&a, omax, pl_u64_str(omax, cfg->offline_max));
    return pl_redis_command(&s->redis, publish_reply, j, a.n, a.argv, a.lens);
}

static int eval_publish(pl_shard_t *s, pl_db_job_t *j, int full_script)
{
    const pl_config_t *cfg = &s->srv->cfg;
    /* Only now: a message that waited for Redis to be ready waited for the shard's id node too
     * (ready_check). A resend after a bounce keeps its id. */
    if (!j->id) j->id = pl_idgen_next(&s->ids, j->ts_ms);
    size_t room_len = strlen(j->room), cid_len = strlen(j->cid);
    pl_buf_reset(&tail_buf);
    if (j->to[0]) {
        pl_proto_dm_tail(&tail_buf, j->room, room_len, j->id, j->user, j->to, j->text, j->text_len,
                         j->ts_ms, cid_len ? j->cid : NULL, cid_len);
        return eval_dm(s, j, full_script);
    }
    pl_proto_message_tail(&tail_buf, j->room, room_len, j->id, j->user, j->text, j->text_len,
                          j->ts_ms, cid_len ? j->cid : NULL, cid_len);
    script_args_t a;
    char chan[5 + PL_ROOM_MAX + 1];
    memcpy(chan, "room:", 5);
    memcpy(chan + 5, j->room, room_len + 1);
    args_begin(&a, PL_SCRIPT_PUBLISH, full_script, j, room_len);
    arg(&a, chan, 5 + room_len);
    args_message(&a, j, cfg);
    return pl_redis_command(&s->redis, publish_reply, j, a.n, a.argv, a.lens);
}

void pl_session_thread_free(void)
{
    for (int i = 0; i < 3; i++)
        pl_buf_free(&kbuf[i]);
    pl_buf_free(&tail_buf);
}

/* The room of a direct conversation: the same for both directions. */
static void dm_room(const char *a, const char *b, char out[3 + 32 + 1])
{
    const char *lo = strcmp(a, b) < 0 ? a : b, *hi = lo == a ? b : a;
    pl_buf_t *k = &kbuf[2];
    pl_buf_reset(k);
    /* User ids have no control characters, so "\n" keeps the pair unambiguous. */
    pl_buf_printf(k, "%s\n%s", lo, hi);
    unsigned char d[20];
    mbedtls_sha1_ret((const unsigned char *)k->data, k->len, d);
    memcpy(out, "dm:", 3);
    for (int i = 0; i < 16; i++)
        snprintf(out + 3 + 2 * i, 3, "%02x", d[i]);
}

static void on_message(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = c->shard;
    pl_db_t *db = s->srv->db;
    char dm[3 + 32 + 1];
    if (req->to) {
        if (strcmp(req->to, c->user) == 0) {
            pl_session_error(c, PL_ERR_BAD_REQUEST, "a direct message needs another user", req->cid,
                             req->cid_len);
            return;
        }
        dm_room(c->user, req->to, dm);
    }
    pl_room_t *room = req->to ? NULL : pl_room_find(&s->rooms, req->room, req->room_len);
    if (!req->to && (!room || !pl_room_sub_of(c->subs, room))) {
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
    pl_db_job_t *j = pl_db_job_new_text(PL_DB_STORE, s, store_done, c, req->text, req->text_len);
    if (!j) {
        if (db) pl_db_release(db);
        pl_session_error(c, PL_ERR_UNAVAILABLE, "out of memory", req->cid, req->cid_len);
        return;
    }
    j->ts_ms = pl_now_ms(); /* the id is given as it is published (eval_publish) */
    if (req->to) {
        memcpy(j->room, dm, sizeof dm);
        memcpy(j->to, req->to, req->to_len + 1);
    } else {
        memcpy(j->room, req->room, req->room_len + 1);
    }
    snprintf(j->user, sizeof j->user, "%s", c->user);
    if (req->cid) memcpy(j->cid, req->cid, req->cid_len + 1);
    c->replies_pending++;
    pl_sub_t *sub = room ? pl_room_sub_of(c->subs, room) : NULL;
    if (sub && sub->sync_gen) {
        /* Still catching up: a subscription starts where `subscribed` says, so the sender's
         * own message must come after it; it waits on the subscription until then. */
        pl_db_job_append(&sub->pending, &sub->pending_tail, j);
        return;
    }
    submit_publish(s, j);
}

/* Publish now, or queue in order while this shard's Redis is not known to be ready. */
static void submit_publish(pl_shard_t *s, pl_db_job_t *j)
{
    if (!s->redis_ready && atomic_load_explicit(&s->redis.connected, memory_order_relaxed)) {
        if (s->nwaiting < s->srv->cfg.db_queue) {
            wait_ready(s, j, 0); /* a moment after (re)connecting: keep order, send when ready */
            return;
        }
        message_failed(j, PL_ERR_UNAVAILABLE, "redis is not ready; retry later");
        return;
    }
    if (eval_publish(s, j, 0) != 0)
        message_failed(j, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later");
}

static void release_pending(pl_shard_t *s, pl_sub_t *sub)
{
    pl_db_job_t *j = sub->pending;
    sub->pending = sub->pending_tail = NULL;
    while (j) {
        pl_db_job_t *next = j->next;
        submit_publish(s, j);
        j = next;
    }
}

/* ---- dispatch ---- */

void pl_session_on_text(pl_conn_t *c, const uint8_t *p, size_t len)
{
    const pl_config_t *cfg = cfg_of(c);
    pl_proto_limits_t lim = {cfg->max_text, cfg->max_rooms};
    pl_req_t req;
    pl_proto_err_t err;
    if (pl_proto_decode((const char *)p, len, &lim, &req, &err) != 0) {
        pl_session_error(c, err.code, err.message, req.cid, req.cid_len);
        pl_proto_req_free(&req);
        return;
    }
    if (!(c->flags & PL_CONN_AUTHED)) {
        if (req.type == PL_REQ_AUTHENTICATE)
            on_authenticate(c, &req);
        else
            pl_session_error(c, PL_ERR_UNAUTHORIZED, "authenticate first", req.cid, req.cid_len);
        pl_proto_req_free(&req);
        return;
    }
    switch (req.type) {
    case PL_REQ_AUTHENTICATE:
        pl_session_error(c, PL_ERR_BAD_REQUEST, "already authenticated", req.cid, req.cid_len);
        break;
    case PL_REQ_SUBSCRIBE:
        on_subscribe(c, &req);
        break;
    case PL_REQ_UNSUBSCRIBE:
        on_unsubscribe(c, &req);
        break;
    case PL_REQ_MESSAGE:
        on_message(c, &req);
        break;
    case PL_REQ_TYPING_START:
        pl_chat_typing(c, &req, 1);
        break;
    case PL_REQ_TYPING_STOP:
        pl_chat_typing(c, &req, 0);
        break;
    case PL_REQ_READ:
        pl_chat_read(c, &req);
        break;
    case PL_REQ_PING: {
        static const char pong[] = "{\"type\":\"pong\"}";
        pl_buf_t *b = scratch(c);
        pl_buf_add(b, pong, sizeof pong - 1);
        pl_conn_send_json(c, b);
        break;
    }
    }
    pl_proto_req_free(&req);
}

/* ---- delivery (the fan-out hot path) ---- */

/* A direct message: to this shard's connections of its sender and its recipient. */
static void deliver_dm(pl_shard_t *s, const pl_bcast_t *b)
{
    unsigned long n = 0;
    const char *users[2] = {b->user_a, b->user_b};
    for (int u = 0; u < 2; u++) {
        if (u == 1 && strcmp(users[0], users[1]) == 0) break;
        pl_room_t *r = pl_room_find(&s->users, users[u], strlen(users[u]));
        for (uint32_t i = 0; r && i < r->nmembers; i++)
            if (pl_conn_send(r->members[i]->owner, b->frame) == 0) n++;
    }
    atomic_fetch_add_explicit(&s->delivered, n, memory_order_relaxed);
}

void pl_session_deliver(pl_shard_t *s, const pl_bcast_t *b)
{
    if (b->kind == PL_BC_DM) {
        deliver_dm(s, b);
        return;
    }
    pl_room_t *room = pl_room_find(&s->rooms, b->room, b->room_len);
    if (!room) return;
    unsigned long n = 0;
    for (uint32_t i = 0; i < room->nmembers; i++) {
        pl_sub_t *sub = room->members[i];
        pl_conn_t *c = sub->owner;
        /* Typing goes to the room's other users. */
        if (b->kind == PL_BC_TYPING && c->user && strcmp(c->user, b->user_a) == 0) continue;
        if (sub->sync_gen) {
            hold(c, sub, b->frame, b->seq); /* catching up: after the missed ones */
            continue;
        }
        if (b->seq) {
            if (b->seq <= sub->last_seq) continue; /* already sent by the catch-up */
            sub->last_seq = b->seq;
        }
        if (pl_conn_send(c, b->frame) == 0) n++;
    }
    atomic_fetch_add_explicit(&s->delivered, n, memory_order_relaxed);
}
