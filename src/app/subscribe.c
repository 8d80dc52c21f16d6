/*
 * subscribe: rooms and catch-ups; see the header for the flow. The pieces, in
 * the order a subscription meets them: membership (join_checked), the sync
 * script (sync_reply), older messages from PostgreSQL (recover_done),
 * finish_sync, then the replay streamed by pl_subscribe_drain.
 */
#include "parley/app/kv.h"
#include "parley/app/subscribe.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/chat.h"
#include "parley/app/publish.h"
#include "parley/app/restore.h"
#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/app/shard.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/db.h"
#include "parley/svc/script.h"

/* A gap catch-up that found Redis out of reach is tried again this often, this many times
 * (covering a failover's few seconds), before what it missed is given up. */
#define GAP_RETRY_MS 100
#define GAP_RETRIES 100

/* A catch-up in flight: which subscription it is for, and what Redis had. When PostgreSQL must
 * supply older messages, the recover job embedded first goes to the pool. */
typedef struct pl_sync_ctx {
    pl_db_recover_t job;      /**< first: used only when older messages are needed */
    struct pl_sync_ctx *next; /**< parked on the shard while Redis restores, or waiting for
                                   the room's Redis subscription (below) */
    uint32_t room_gen;        /**< the room's life it waits for (rooms mode) */
    int64_t parked_ms;        /**< when it was first parked; 0 if never */
    int recheck;              /**< a closed room's membership is checked again once the room's
                                   Redis subscription is in effect (pl_subscribe_room_live) */
    pl_conn_t *conn;          /**< held */
    uint32_t gen;
    int64_t since; /**< -1: a plain subscribe */
    int64_t cur;   /**< the room's seq, per Redis */
    int64_t read;  /**< the user's read position, -1 unknown (Redis not ready) */
    int truncated;
    pl_frame_t **stream; /**< stream entries after those PostgreSQL is asked for */
    size_t nstream, cap;
    int64_t next_seq; /**< the stream is read in pages (read_page): the next seq to ask for */
    size_t asked;     /**< entries the page in flight asked for */
    int rereads;      /**< times the room was read again because entries up to cur vanished */
    char room[PL_ROOM_MAX + 1];
} sync_ctx_t;

/* A catch-up that found Redis without parley:ready waits this long for the restore before it
 * is served from PostgreSQL alone. */
#define PARK_MAX_MS 5000

/* A membership check (closed rooms) or record (open rooms) on its way to the database. */
typedef struct {
    pl_db_member_t job; /**< first */
    pl_conn_t *conn;    /**< held */
    uint32_t gen;
    int64_t since;
    int open_rooms;
    int again; /**< the check made again once the room's subscription is in effect */
} join_t;

static void sync_ctx_free(sync_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->nstream; i++)
        pl_frame_unref(ctx->stream[i]);
    free(ctx->stream);
    pl_db_rows_free(&ctx->job.rows);
    free(ctx);
}

/* The seq in a shared message frame (its header is 2, 4 or 10 bytes). */
static int64_t frame_seq(const pl_frame_t *f)
{
    size_t h = (f->data[1] & 0x7f) == 126 ? 4 : (f->data[1] & 0x7f) == 127 ? 10 : 2;
    return pl_wire_payload_seq((const char *)f->data + h, f->len - h);
}

/* ---- held frames and the streamed replay ---- */

/* The recovered messages of a catch-up, in seq order, sent as the socket drains
 * (pl_subscribe_drain). Allocated by finish_sync, freed when the last frame is sent or the
 * subscription ends. */
typedef struct pl_replay {
    int64_t cur;          /**< the room's seq when the catch-up read it: live frames after it */
    size_t n, next;       /**< frames[next..n) are still to be sent */
    pl_frame_t *frames[]; /**< owned references */
} pl_replay_t;

/* End a catch-up early (resubscribe, leave): what it held and had still to send goes (the
 * owner's pending messages stay: pl_publish_release). */
static void drop_catchup(pl_shard_t *s, pl_sub_t *sub)
{
    pl_catchup_t *cu = sub->cu;
    if (!cu) return;
    pl_sock_ctx_t *sctx = s->conns->sock;
    while (cu->held) {
        pl_outq_node_t *n = cu->held;
        cu->held = n->next;
        pl_frame_unref(n->frame);
        pl_sock_node_put(sctx, n);
    }
    cu->held_tail = NULL;
    cu->held_bytes = 0;
    pl_replay_t *rp = cu->replay;
    if (rp) {
        for (size_t i = rp->next; i < rp->n; i++)
            pl_frame_unref(rp->frames[i]);
        free(rp);
        cu->replay = NULL;
    }
}

/* The subscription is live again, or ends: its catch-up state goes. */
static void end_catchup(pl_shard_t *s, pl_sub_t *sub)
{
    drop_catchup(s, sub);
    free(sub->cu);
    sub->cu = NULL;
}

void pl_subscribe_hold(pl_conn_t *c, pl_sub_t *sub, pl_frame_t *f, int64_t seq)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_catchup_t *cu = sub->cu;
    /* Held frames wait on the catch-up, not on the client: bounded by the hard limit. */
    if (cu->held_bytes + f->len > s->srv->cfg.max_outbuf) {
        pl_conn_close(c, 4008, "slow consumer");
        drop_catchup(s, sub);
        return;
    }
    pl_outq_node_t *n = pl_sock_node_get(s->conns->sock);
    if (!n) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    n->frame = pl_frame_ref(f);
    n->seq = seq;
    pl_outq_append(&cu->held, &cu->held_tail, n);
    cu->held_bytes += f->len;
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
    pl_catchup_t *cu = sub->cu;
    pl_replay_t *rp = cu->replay;
    while (rp->next < rp->n && c->sock.q_bytes < mark && pl_conn_open(c)) {
        pl_frame_t *f = rp->frames[rp->next++];
        send_once(c, sub, f, frame_seq(f));
        pl_frame_unref(f);
    }
    if (rp->next < rp->n) return 0;
    if (sub->last_seq < rp->cur) sub->last_seq = rp->cur; /* held frames up to it: duplicates */
    while (cu->held && c->sock.q_bytes < mark && pl_conn_open(c)) {
        pl_outq_node_t *n = cu->held;
        cu->held = n->next;
        cu->held_bytes -= n->frame->len;
        send_once(c, sub, n->frame, n->seq);
        pl_frame_unref(n->frame);
        pl_sock_node_put(c->sock.ctx, n);
    }
    if (cu->held) return 0;
    end_catchup(pl_shard_of_conn(c), sub); /* live from here on */
    return 1;
}

void pl_subscribe_drain(pl_conn_t *c)
{
    size_t mark = c->sock.ctx->lim.refill_mark;
    int more = 0;
    for (pl_sub_t *sub = pl_session_of(c)->subs; sub && pl_conn_open(c); sub = sub->next) {
        if (!sub->cu || !sub->cu->replay) continue;
        if (c->sock.q_bytes >= mark || !replay_some(c, sub, mark)) more = 1;
    }
    if (!more) pl_conn_want_drain(c, 0);
}

static void leave(pl_conn_t *c, pl_sub_t *sub)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_publish_release(s, sub); /* accepted while catching up: they still go out */
    end_catchup(s, sub);
    pl_room_leave(&s->rooms, &pl_session_of(c)->subs, sub);
}

static void count_rooms(pl_shard_t *s)
{
    atomic_store_explicit(&s->nrooms, (long)s->rooms.count, memory_order_relaxed);
    pl_counter_set(&s->stats.subscriptions, s->rooms.subs);
}

void pl_subscribe_end(pl_conn_t *c, pl_sub_t *sub)
{
    leave(c, sub);
    count_rooms(pl_shard_of_conn(c));
}

void pl_subscribe_leave_all(pl_conn_t *c)
{
    pl_session_t *ss = pl_session_of(c);
    while (ss->subs)
        leave(c, ss->subs);
    count_rooms(pl_shard_of_conn(c));
}

/* The subscription of `c` to `room` if it is still the one catch-up `gen` is for. */
static pl_sub_t *sub_for(pl_conn_t *c, const char *room, uint32_t gen)
{
    if (!pl_conn_open(c)) return NULL;
    pl_room_t *r = pl_room_find(&pl_shard_of_conn(c)->rooms, room, strlen(room));
    pl_sub_t *sub = r ? pl_room_sub_of(pl_session_of(c)->subs, r) : NULL;
    return sub && pl_sub_gen(sub) == gen ? sub : NULL;
}

/* ---- catching up ---- */

/*
 * Finish a catch-up: `subscribed` now; then, as the socket drains (pl_subscribe_drain), the
 * missed messages (those recovered from PostgreSQL, then those from the Redis stream, whose
 * references are taken over from `pg` and ctx), then the live frames held meanwhile, skipping
 * any seq already sent. Live frames keep being held until all of that is out.
 */
static void finish_sync(pl_conn_t *c, pl_sub_t *sub, sync_ctx_t *ctx, pl_frame_t **pg, size_t npg,
                        int truncated)
{
    size_t n = npg + ctx->nstream;
    pl_replay_t *rp = malloc(sizeof *rp + n * sizeof rp->frames[0]);
    if (!rp) {
        for (size_t i = 0; i < npg; i++)
            pl_frame_unref(pg[i]);
        pl_conn_abort(c, "out of memory");
        return;
    }
    sub->gap_retries = 0;
    if (!sub->quiet) {
        pl_buf_t *b = pl_shard_scratch(pl_shard_of_conn(c));
        pl_wire_subscribed(b, sub->room->name, sub->room->len, ctx->cur, ctx->read,
                           ctx->since >= 0 ? (long)n : -1, truncated || ctx->truncated);
        pl_session_send(c, b);
    }
    sub->quiet = 0;
    if (npg) memcpy(rp->frames, pg, npg * sizeof *pg);
    if (ctx->nstream) memcpy(rp->frames + npg, ctx->stream, ctx->nstream * sizeof *ctx->stream);
    ctx->nstream = 0;
    rp->n = n;
    rp->next = 0;
    rp->cur = ctx->cur;
    sub->cu->replay = rp;
    /* A client claiming more than the room has (Redis lost its data) is not trusted. */
    sub->last_seq = ctx->since > 0 ? (ctx->since < ctx->cur ? ctx->since : ctx->cur) : 0;
    /* Messages the client sent to the room before `subscribed`: published now; their live
     * copies come after the catch-up like any live frame. Before the drain, which may finish
     * the catch-up and free what holds them. */
    pl_publish_release(pl_shard_of_conn(c), sub);
    pl_conn_want_drain(c, 1);
    pl_subscribe_drain(c);
}

static void sync_fail(pl_conn_t *c, pl_sub_t *sub, const char *why)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    if (sub->quiet && sub->gap_retries < GAP_RETRIES && !s->stopping) {
        /* Filling a gap while Redis is briefly out of reach (a failover: the router has not
         * read the new map yet): live frames stay held, and the catch-up is tried again. */
        sub->gap_retries++;
        sub->gap_retry = 1;
        if (!uv_is_active((uv_handle_t *)&s->gap_timer))
            uv_timer_start(&s->gap_timer, pl_subscribe_gap_timer_cb, GAP_RETRY_MS, 0);
        return;
    }
    if (sub->quiet) {
        /* Filling a gap, GAP_RETRIES times in vain: the subscription stays; what was held goes
         * out, and what was missed stays missed (the client sees the seq gap and can
         * resubscribe with since). */
        sub->quiet = 0;
        sub->gap_retries = 0;
        pl_warn("catching %s up after the subscriber came back failed: %s", sub->room->name, why);
        pl_replay_t *rp = malloc(sizeof *rp);
        if (!rp) {
            pl_conn_abort(c, "out of memory");
            return;
        }
        rp->n = rp->next = 0;
        rp->cur = sub->last_seq;
        sub->cu->replay = rp;
        pl_publish_release(s, sub); /* what the owner sent meanwhile, as when it succeeds */
        pl_conn_want_drain(c, 1);
        pl_subscribe_drain(c);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "could not subscribe to %s: %s; retry", sub->room->name, why);
    /* The room's name outlives leave(): copy it first */
    char room[PL_ROOM_MAX + 1];
    snprintf(room, sizeof room, "%s", sub->room->name);
    leave(c, sub);
    count_rooms(pl_shard_of_conn(c));
    pl_session_error_room(c, PL_ERR_UNAVAILABLE, msg, room);
}

/* sync_fail for a catch-up whose ctx the caller owns: ctx goes first (why may point into a
 * reply, never into ctx). */
static void sync_drop(pl_conn_t *c, pl_sub_t *sub, sync_ctx_t *ctx, const char *why)
{
    sync_ctx_free(ctx);
    sync_fail(c, sub, why);
}

/* Frames of the rows PostgreSQL recovered: byte for byte what live delivery sent. */
static pl_frame_t **row_frames(pl_shard_t *s, const char *room, const pl_db_rows_t *rows, size_t *n)
{
    *n = 0;
    pl_frame_t **f = rows->n ? calloc(rows->n, sizeof *f) : NULL;
    pl_buf_t *b = &s->kbuf[0];
    for (size_t i = 0; f && i < rows->n; i++) {
        const pl_db_row_t *r = &rows->row[i];
        pl_buf_reset(b);
        pl_wire_message_head(b, r->seq);
        pl_wire_message_tail(b, room, strlen(room), r->id, r->user, r->body, r->body_len, r->ts_ms,
                             r->cid, r->cid ? strlen(r->cid) : 0);
        if (!(f[*n] = pl_frame_text(b->data, b->len))) break;
        (*n)++;
    }
    return f;
}

/* Redis had no seq (it lost its data and was not restored in time), so the room's seq is the
 * database's. Messages are stored out of order (batches, several workers, several instances):
 * its max(seq) may be past one still on its way, whose live frame is held. So the catch-up
 * ends where the rows stop being consecutive; the held frames carry on from there. */
static void contiguous(sync_ctx_t *ctx)
{
    pl_db_rows_t *rows = &ctx->job.rows;
    if (ctx->since < 0 || ctx->job.truncated) {
        ctx->cur = ctx->job.max_seq;
        return;
    }
    int64_t next = ctx->since + 1;
    size_t n = 0;
    while (n < rows->n && rows->row[n].seq == next) {
        n++;
        next++;
    }
    rows->n = n; /* the rest are freed with the rows all the same */
    ctx->cur = next - 1;
}

/* PostgreSQL answered for what the Redis stream does not have. */
static void recover_done(pl_db_job_t *job)
{
    sync_ctx_t *ctx = (sync_ctx_t *)job;
    pl_conn_t *c = ctx->conn;
    pl_sub_t *sub = sub_for(c, ctx->room, ctx->gen);
    if (sub) {
        if (job->status != PL_DB_OK) {
            sync_fail(c, sub, "the database is unreachable");
        } else {
            if (ctx->cur < 0) contiguous(ctx); /* Redis had no seq: the database's */
            if (ctx->since >= 0 && ctx->job.truncated) ctx->since = ctx->job.after;
            size_t n;
            pl_frame_t **pg = row_frames(pl_shard_of_conn(c), ctx->room, &ctx->job.rows, &n);
            finish_sync(c, sub, ctx, pg, n, ctx->job.truncated);
            free(pg);
        }
    }
    sync_ctx_free(ctx);
    pl_conn_release(c);
}

/* Ask PostgreSQL for messages after `after` and before `before` (0: no bound). Takes ctx. */
static int start_recover(pl_conn_t *c, sync_ctx_t *ctx, int64_t after, int64_t before)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    if (!s->srv->db) return -1;
    pl_db_recover_t *j = &ctx->job;
    pl_db_job_init(&j->h, PL_DB_RECOVER, s->loop, PL_EV_DB, recover_done);
    snprintf(j->room, sizeof j->room, "%s", ctx->room);
    j->after = after;
    j->before = before;
    /* A plain subscribe only needs the room's seq (LIMIT 0 reads no rows). */
    j->limit = ctx->since < 0 ? 0 : (int)s->srv->cfg.recover_max;
    pl_conn_hold(c);
    pl_db_submit(s->srv->db, &j->h);
    return 0;
}

static void park(pl_shard_t *s, sync_ctx_t *ctx);
static int send_sync(pl_shard_t *s, sync_ctx_t *ctx);

/* From PostgreSQL alone: Redis did not get ready in time. Takes ctx: 1 if the recover job has
 * it (and holds the connection), 0 if it is done and freed. */
static int sync_from_db(pl_conn_t *c, pl_sub_t *sub, sync_ctx_t *ctx)
{
    ctx->cur = -1;
    if (start_recover(c, ctx, ctx->since, 0) == 0) return 1;
    ctx->cur = 0;
    finish_sync(c, sub, ctx, NULL, 0, 0);
    sync_ctx_free(ctx);
    return 0;
}

/* The room as read by the sync script (in ctx): what its stream lacks comes from PostgreSQL,
 * then `subscribed` and the catch-up. Takes ctx. */
static void sync_read(pl_conn_t *c, pl_sub_t *sub, sync_ctx_t *ctx)
{
    int64_t first = ctx->nstream ? frame_seq(ctx->stream[0]) : ctx->cur + 1;
    if (ctx->since >= 0 && ctx->since < ctx->cur && first != ctx->since + 1) {
        /* The stream was trimmed past `since`: older ones come from PostgreSQL. */
        if (start_recover(c, ctx, ctx->since, first) == 0) return;
        ctx->truncated = 1; /* no database: what the stream has is all there is */
    }
    finish_sync(c, sub, ctx, NULL, 0, 0);
    sync_ctx_free(ctx);
}

static void sync_waited(struct redisAsyncContext *ac, void *reply, void *privdata);

/* Everything Redis had for the catch-up is in ctx: on a cluster that waits for replicas, the
 * WAIT first (what was read must survive a failover). Takes ctx. */
static void read_done(pl_conn_t *c, pl_sub_t *sub, sync_ctx_t *ctx, struct redisAsyncContext *ac)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    if (!pl_publish_wait_mode(s)) {
        sync_read(c, sub, ctx);
        return;
    }
    int rc = pl_publish_wait(s, ac, sync_waited, ctx);
    if (rc == 0) {
        pl_conn_hold(c); /* the WAIT's */
    } else if (rc > 0) {
        sync_read(c, sub, ctx);
    } else {
        sync_drop(c, sub, ctx, "redis unreachable");
    }
}

/*
 * The stream entries of a catch-up are read outside the sync script, with plain XRANGEs of at
 * most this many entries each, from since + 1 up to the seq the script saw. Inside the script a
 * catch-up of 10,000 held Redis for 11-33 ms (entries turned into Lua values and back); a page
 * holds it for well under one. Entries up to that seq are never rewritten, only trimmed from
 * the front, which the reading notices (add_page) and PostgreSQL makes good (sync_read).
 */
#define SYNC_PAGE 1000
/* How often a catch-up reads the room again when entries up to cur vanished between its pages;
 * then what the stream lacks comes from PostgreSQL. */
#define SYNC_REREADS 3

static void page_reply(struct redisAsyncContext *ac, void *reply, void *privdata);

/* Ask for the next page of ctx's stream entries; holds c for the reply. 0, or -1 (Redis
 * unreachable: nothing held, ctx still the caller's). */
static int read_page(pl_conn_t *c, sync_ctx_t *ctx)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    size_t room_len = strlen(ctx->room);
    uint64_t left = (uint64_t)(ctx->cur - ctx->next_seq + 1);
    ctx->asked = left < SYNC_PAGE ? (size_t)left : SYNC_PAGE;
    char from[24], to[24], count[24];
    snprintf(from, sizeof from, "%lld-0", (long long)ctx->next_seq);
    snprintf(to, sizeof to, "%lld-0", (long long)ctx->cur);
    snprintf(count, sizeof count, "%zu", ctx->asked);
    pl_key_stream(&s->kbuf[0], ctx->room, room_len);
    const char *argv[6] = {"XRANGE", s->kbuf[0].data, from, to, "COUNT", count};
    size_t lens[6] = {6, s->kbuf[0].len, strlen(from), strlen(to), 5, strlen(count)};
    pl_conn_hold(c);
    if (pl_kv_command(s, argv[1], lens[1], page_reply, ctx, 6, argv, lens) != 0) {
        pl_conn_release(c);
        return -1;
    }
    return 0;
}

/* The message in one XRANGE entry ({id, {field, value, ...}}, field "m"), or NULL. */
static const redisReply *entry_message(const redisReply *e, int64_t *seq)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    *seq = strtoll(e->element[0]->str, NULL, 10);
    const redisReply *f = e->element[1];
    for (size_t j = 0; j + 1 < f->elements; j += 2)
        if (f->element[j]->type == REDIS_REPLY_STRING && f->element[j]->len == 1 &&
            f->element[j]->str[0] == 'm' && f->element[j + 1]->type == REDIS_REPLY_STRING)
            return f->element[j + 1];
    return NULL;
}

/* Forget the stream entries read so far. */
static void drop_stream(sync_ctx_t *ctx)
{
    for (size_t k = 0; k < ctx->nstream; k++)
        pl_frame_unref(ctx->stream[k]);
    ctx->nstream = 0;
}

/* Append one page's entries to ctx. An entry past the next seq expected means the stream was
 * trimmed between two pages: what was read before the gap goes, so that the catch-up asks
 * PostgreSQL for everything up to the first entry after it (sync_read). 0, or -1 out of
 * memory. */
static int add_page(sync_ctx_t *ctx, const redisReply *r)
{
    if (ctx->nstream + r->elements > ctx->cap) {
        size_t cap = ctx->nstream + r->elements;
        pl_frame_t **grown = realloc(ctx->stream, cap * sizeof *grown);
        if (!grown) return -1;
        ctx->stream = grown;
        ctx->cap = cap;
    }
    for (size_t i = 0; i < r->elements; i++) {
        int64_t seq = 0;
        const redisReply *m = entry_message(r->element[i], &seq);
        if (!m || seq < ctx->next_seq) continue;
        if (seq > ctx->next_seq) drop_stream(ctx);
        if (!(ctx->stream[ctx->nstream] = pl_frame_text(m->str, m->len))) return -1;
        ctx->nstream++;
        ctx->next_seq = seq + 1;
    }
    return 0;
}

static void page_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    sync_ctx_t *ctx = privdata;
    pl_conn_t *c = ctx->conn;
    redisReply *r = reply;
    pl_sub_t *sub = sub_for(c, ctx->room, ctx->gen);
    if (!sub) {
        sync_ctx_free(ctx); /* gone, unsubscribed or resubscribed meanwhile */
    } else if (!r || r->type != REDIS_REPLY_ARRAY) {
        sync_drop(c, sub, ctx, r && r->type == REDIS_REPLY_ERROR ? r->str : "redis unreachable");
    } else if (add_page(ctx, r) != 0) {
        sync_drop(c, sub, ctx, "out of memory");
    } else if (r->elements < ctx->asked && ctx->next_seq <= ctx->cur &&
               ctx->rereads < SYNC_REREADS) {
        /* Entries up to cur are gone: trimmed meanwhile by a burst of newer ones, or Redis lost
         * its data. Reading the room again tells which (the script parks a catch-up until a
         * restore) and where the stream now starts. */
        drop_stream(ctx);
        ctx->rereads++;
        pl_conn_hold(c); /* the script's */
        if (send_sync(pl_shard_of_conn(c), ctx) != 0) {
            pl_conn_release(c);
            sync_drop(c, sub, ctx, "redis unreachable");
        }
    } else if (r->elements < ctx->asked || ctx->next_seq > ctx->cur) {
        read_done(c, sub, ctx, ac); /* all there is up to cur */
    } else if (read_page(c, ctx) != 0) {
        sync_drop(c, sub, ctx, "redis unreachable");
    }
    pl_conn_release(c);
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
        /* Redis lost its data: wait for the restore (live frames stay held), then read again. */
        pl_conn_hold(c); /* the parked ctx's */
        park(pl_shard_of_conn(c), ctx);
        ctx = NULL;
    } else if (r->elements >= 4) {
        ctx->cur = r->element[0]->integer;
        ctx->truncated |= (int)r->element[1]->integer; /* a reread keeps the first's */
        int64_t since = r->element[2]->integer;
        int64_t rd = r->element[3]->integer;
        ctx->read = rd < 0 ? 0 : rd;
        if (ctx->since >= 0) ctx->since = since;
        if (ctx->since >= 0 && ctx->since < ctx->cur) {
            ctx->next_seq = ctx->since + 1;
            if (read_page(c, ctx) != 0) sync_drop(c, sub, ctx, "redis unreachable");
        } else {
            read_done(c, sub, ctx, ac);
        }
        ctx = NULL;
    }
    if (ctx) sync_ctx_free(ctx);
    pl_conn_release(c);
}

/* Cluster mode: the room was read on its master, whose replica now has everything read too (or
 * not: then nothing read is shown, since a failover could take it back). */
static void sync_waited(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    sync_ctx_t *ctx = privdata;
    pl_conn_t *c = ctx->conn;
    pl_sub_t *sub = sub_for(c, ctx->room, ctx->gen);
    if (!sub) {
        sync_ctx_free(ctx);
    } else if (!pl_publish_waited(pl_shard_of_conn(c), ac, reply)) {
        sync_ctx_free(ctx);
        sync_fail(c, sub, "no replica confirmed the room's messages in time");
    } else {
        sync_read(c, sub, ctx);
    }
    pl_conn_release(c);
}

/* Send the sync script for ctx (its connection held by the caller, ctx owned by the reply).
 * Returns 0, or -1 if Redis is unreachable (ctx still the caller's). */
static int send_sync(pl_shard_t *s, sync_ctx_t *ctx)
{
    const pl_config_t *cfg = &s->srv->cfg;
    size_t room_len = strlen(ctx->room);
    char since_s[24], most[24];
    snprintf(since_s, sizeof since_s, "%lld", (long long)ctx->since);
    snprintf(most, sizeof most, "%zu", cfg->recover_max);
    pl_key_seq(&s->kbuf[0], ctx->room, room_len);
    pl_key_stream(&s->kbuf[1], ctx->room, room_len);
    pl_key_read(&s->kbuf[2], cfg->redis_prefix, ctx->room, room_len);
    pl_key_ready(&s->kbuf[3], ctx->room, room_len);
    const char *user = pl_session_user(pl_session_of(ctx->conn));
    const char *argv[10] = {"EVALSHA",
                            pl_script_sha(PL_SCRIPT_SYNC),
                            "4",
                            s->kbuf[0].data,
                            s->kbuf[1].data,
                            s->kbuf[3].data,
                            s->kbuf[2].data,
                            since_s,
                            most,
                            user};
    size_t lens[10] = {7,
                       40,
                       1,
                       s->kbuf[0].len,
                       s->kbuf[1].len,
                       s->kbuf[3].len,
                       s->kbuf[2].len,
                       strlen(since_s),
                       strlen(most),
                       strlen(user)};
    return pl_kv_command(s, argv[3], lens[3], sync_reply, ctx, 10, argv, lens);
}

/* A new catch-up generation for `sub` (answers to an older one are ignored: sub_for), and what
 * the older one held or had still to send goes. From now on live frames are held. 0, or -1 (out
 * of memory: nothing changed). */
static int begin_catchup(pl_shard_t *s, pl_sub_t *sub)
{
    if (!sub->cu && !(sub->cu = calloc(1, sizeof *sub->cu))) return -1;
    if (++s->sync_gen == 0) s->sync_gen = 1;
    sub->cu->gen = s->sync_gen;
    drop_catchup(s, sub);
    return 0;
}

static void start_sync(pl_conn_t *c, pl_sub_t *sub, int64_t since, int quiet, int recheck)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    if (begin_catchup(s, sub) != 0) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    sub->quiet = (uint8_t)quiet;
    sync_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        sync_fail(c, sub, "out of memory");
        return;
    }
    ctx->conn = c;
    ctx->gen = pl_sub_gen(sub);
    ctx->since = since;
    ctx->read = -1;
    snprintf(ctx->room, sizeof ctx->room, "%s", sub->room->name);
    if (!sub->room->live) {
        /* Rooms mode: what Redis has for the room is read once everything published on it
         * from then on is sure to arrive live (app/roomsub.h). */
        ctx->room_gen = sub->room->gen;
        ctx->recheck = recheck;
        ctx->next = s->room_wait;
        s->room_wait = ctx;
        pl_conn_hold(c);
        return;
    }
    if (send_sync(s, ctx) != 0) {
        sync_ctx_free(ctx);
        sync_fail(c, sub, "redis unreachable");
        return;
    }
    pl_conn_hold(c);
}

/* ---- while Redis restores ---- */

/* A catch-up that found Redis without parley:ready (it lost its data): it waits, with its
 * connection held and its live frames held, until this shard sees Redis ready again
 * (pl_subscribe_redis_ready). Reading the room then is exact: the restored seq and the
 * stream written since. PostgreSQL alone could not tell a message still on its way to it
 * from one that never was. */
static void park(pl_shard_t *s, sync_ctx_t *ctx)
{
    /* A cluster seeds the room once (restore.h retries a failed seed itself): parking again
     * while other rooms seed must not start this one's over. */
    int first = !ctx->parked_ms;
    if (!ctx->parked_ms) ctx->parked_ms = pl_now_ms();
    ctx->next = NULL;
    if (s->parked_tail)
        s->parked_tail->next = ctx;
    else
        s->parked = ctx;
    s->parked_tail = ctx;
    if (first || !pl_kv_cluster(s)) pl_restore_need(s, ctx->room);
    pl_publish_not_ready(s);
}

void pl_subscribe_redis_ready(pl_shard_t *s, int state)
{
    sync_ctx_t *list = s->parked;
    s->parked = s->parked_tail = NULL;
    int64_t now = pl_now_ms();
    while (list) {
        sync_ctx_t *ctx = list;
        list = ctx->next;
        pl_conn_t *c = ctx->conn;
        pl_sub_t *sub = sub_for(c, ctx->room, ctx->gen);
        if (!sub || s->stopping) {
            sync_ctx_free(ctx);
        } else if (state > 0) {
            if (send_sync(s, ctx) == 0) continue; /* the reply has ctx and the hold */
            sync_ctx_free(ctx);
            sync_fail(c, sub, "redis unreachable");
        } else if (state < 0 && now - ctx->parked_ms < PARK_MAX_MS) {
            park(s, ctx);
            continue;
        } else if (state < 0) {
            pl_warn("%s: redis was not restored within %d s; catching up from the database",
                    ctx->room, PARK_MAX_MS / 1000);
            if (sync_from_db(c, sub, ctx)) continue; /* the recover job has ctx */
        } else {
            sync_ctx_free(ctx);
            sync_fail(c, sub, "redis unreachable");
        }
        pl_conn_release(c);
    }
}

static void join_checked(pl_db_job_t *job);

/* A closed room whose Redis subscription was not in effect when the membership was checked: a
 * removal published on it meanwhile was not received, so the database is asked again now that
 * it is (the catch-up follows the answer). 0, or -1 if the check could not be sent (out of
 * memory: the catch-up goes on with the first answer). */
static int join_again(pl_shard_t *s, pl_conn_t *c, const sync_ctx_t *ctx)
{
    struct pl_db *db = s->srv->db;
    join_t *j = db ? calloc(1, sizeof *j) : NULL;
    if (!j) return -1;
    pl_db_job_init(&j->job.h, PL_DB_MEMBER, s->loop, PL_EV_DB, join_checked);
    j->job.op = PL_DB_MEMBER_CHECK;
    snprintf(j->job.room, sizeof j->job.room, "%s", ctx->room);
    snprintf(j->job.user, sizeof j->job.user, "%s", pl_session_user(pl_session_of(c)));
    j->conn = c;
    j->gen = ctx->gen;
    j->since = ctx->since;
    j->again = 1;
    pl_db_submit(db, &j->job.h);
    return 0;
}

void pl_subscribe_room_live(pl_shard_t *s, const pl_room_t *room, const char *name, uint32_t gen,
                            int ok)
{
    sync_ctx_t **pp = &s->room_wait;
    while (*pp) {
        sync_ctx_t *ctx = *pp;
        if (name && (ctx->room_gen != gen || strcmp(ctx->room, name) != 0)) {
            pp = &ctx->next;
            continue;
        }
        *pp = ctx->next;
        pl_conn_t *c = ctx->conn;
        /* The subscription may have gone, and the room with it (then `room` is another life's
         * or NULL, and sub_for finds nothing of this generation). */
        pl_sub_t *sub = sub_for(c, ctx->room, ctx->gen);
        if (!sub || s->stopping) {
            sync_ctx_free(ctx);
        } else if (ok && room && sub->room == room && room->live) {
            if (ctx->recheck && join_again(s, c, ctx) == 0) {
                sync_ctx_free(ctx); /* the check has the hold */
                continue;
            }
            if (send_sync(s, ctx) == 0) continue; /* the reply has ctx and the hold */
            sync_ctx_free(ctx);
            sync_fail(c, sub, "redis unreachable");
        } else {
            sync_ctx_free(ctx);
            sync_fail(c, sub, "the room could not be subscribed to in redis");
        }
        pl_conn_release(c);
    }
}

/* ---- membership ---- */

/* The membership check (closed rooms) or record (open rooms) came back. */
static void join_checked(pl_db_job_t *job)
{
    join_t *j = (join_t *)job;
    pl_conn_t *c = j->conn;
    pl_sub_t *sub = sub_for(c, j->job.room, j->gen);
    if (sub) {
        /* Open rooms let anyone in: a membership that could not be recorded is no reason to
         * refuse. */
        int ok = job->status == PL_DB_OK && (j->open_rooms || j->job.member);
        if (ok || j->open_rooms) {
            if (!j->again)
                pl_chat_member(pl_shard_of_conn(c), j->job.room, pl_session_user(pl_session_of(c)),
                               1, NULL, NULL, NULL);
            start_sync(c, sub, j->since, 0, !j->open_rooms && !j->again);
        } else {
            int forbidden = job->status == PL_DB_OK;
            leave(c, sub);
            count_rooms(pl_shard_of_conn(c));
            char msg[200];
            snprintf(msg, sizeof msg, "%s %s", j->job.room,
                     forbidden ? ": not a member of this room"
                               : ": membership could not be checked; retry");
            pl_session_error_room(c, forbidden ? PL_ERR_FORBIDDEN : PL_ERR_UNAVAILABLE, msg,
                                  j->job.room);
        }
    }
    free(j);
    pl_conn_release(c);
}

void pl_subscribe(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_session_t *ss = pl_session_of(c);
    const pl_config_t *cfg = &s->srv->cfg;
    struct pl_db *db = s->srv->db;
    /* All or nothing: count the rooms that would be new before joining any. */
    size_t have = pl_room_count(ss->subs), add = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, req->rooms)
    {
        pl_room_t *room = pl_room_find(&s->rooms, r->valuestring, strlen(r->valuestring));
        if (!room || !pl_room_sub_of(ss->subs, room)) add++;
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
        pl_sub_t *sub = pl_room_join(&s->rooms, r->valuestring, len, ss, &ss->subs);
        if (!sub) {
            pl_conn_abort(c, "out of memory");
            return;
        }
        int64_t since = pl_wire_since(req, r->valuestring);
        if (!db) {
            pl_chat_member(s, r->valuestring, pl_session_user(ss), 1, NULL, NULL, NULL);
            start_sync(c, sub, since, 0, 0);
            continue;
        }
        /* Membership first (closed rooms: checked; open rooms: recorded, so that `subscribed`
         * means member, e.g. for the history API). Live frames are held from now on; the
         * catch-up starts when the database has answered. */
        begin_catchup(s, sub);
        join_t *j = calloc(1, sizeof *j);
        if (!j) {
            sync_fail(c, sub, "out of memory");
            continue;
        }
        pl_db_job_init(&j->job.h, PL_DB_MEMBER, s->loop, PL_EV_DB, join_checked);
        j->job.op = cfg->open_rooms ? PL_DB_MEMBER_ADD : PL_DB_MEMBER_CHECK;
        snprintf(j->job.room, sizeof j->job.room, "%s", r->valuestring);
        snprintf(j->job.user, sizeof j->job.user, "%s", pl_session_user(ss));
        j->conn = c;
        j->gen = pl_sub_gen(sub);
        j->since = since;
        j->open_rooms = cfg->open_rooms;
        pl_conn_hold(c);
        pl_db_submit(db, &j->job.h);
    }
    count_rooms(s);
}

void pl_unsubscribe(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    const cJSON *r;
    cJSON_ArrayForEach(r, req->rooms)
    {
        size_t len = strlen(r->valuestring);
        pl_room_t *room = pl_room_find(&s->rooms, r->valuestring, len);
        pl_sub_t *sub = room ? pl_room_sub_of(pl_session_of(c)->subs, room) : NULL;
        if (sub) leave(c, sub);
        pl_buf_t *b = pl_shard_scratch(s);
        pl_wire_room_reply(b, "unsubscribed", r->valuestring, len);
        pl_session_send(c, b);
    }
    count_rooms(s);
}

/* ---- after the subscriber was away ---- */

static void retry_one(pl_sub_t *sub, void *arg)
{
    if (!sub->gap_retry) return;
    sub->gap_retry = 0;
    pl_conn_t *c = pl_session_conn(sub->owner);
    if (pl_conn_open(c)) start_sync(c, sub, sub->last_seq, 1, 0);
}

void pl_subscribe_gap_timer_cb(uv_timer_t *t)
{
    pl_shard_t *s = t->data;
    if (!s->stopping) pl_room_table_each(&s->rooms, retry_one, NULL);
}

void pl_subscribe_catch_up(pl_conn_t *c, pl_sub_t *sub)
{
    if (!pl_conn_open(c) || (sub->cu && !sub->quiet)) return;
    start_sync(c, sub, sub->last_seq, 1, 0);
}

static void gap_one(pl_sub_t *sub, void *arg)
{
    pl_conn_t *c = pl_session_conn(sub->owner);
    if (!pl_conn_open(c)) return;
    /* A subscribe still catching up is left to finish: its client waits for `subscribed`, and
     * its `since` is not kept here. It may miss what the gap held if it read the room before;
     * rare (a subscribe racing a Redis restart), and its client can resubscribe with since. A
     * gap catch-up under way is started again: it reads after this gap too. */
    if (sub->cu && !sub->quiet) return;
    start_sync(c, sub, sub->last_seq, 1, 0);
}

void pl_subscribe_gap(pl_shard_t *s)
{
    if (s->rooms.subs)
        pl_info("the subscriber was away: catching %zu subscription(s) up", s->rooms.subs);
    pl_room_table_each(&s->rooms, gap_one, NULL);
}
