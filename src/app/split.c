/*
 * split: cross-slot chat-state changes as single-slot steps, for a Redis
 * Cluster; see the header. Every step is placed by the first key it names
 * (app/kv.h); the steps after the first are sent without waiting for each
 * other, since each is idempotent and none depends on another's answer.
 */
#include "parley/app/split.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/chat.h"
#include "parley/app/kv.h"
#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/script.h"

/* A presence change or membership on its way through its steps. Allocated when its first step
 * is sent, freed by that step's reply. */
typedef struct sweep sweep_t;

typedef struct {
    pl_shard_t *s;
    pl_session_t *ss; /* an opening connection waiting for its answer, or NULL */
    int sweep_self;   /* 'g': sweeping this instance's previous runs (its user set stays) */
    char kind;        /* 'u', 'd' or '=' (presence), 'g' (sweep), '+' or '-' (membership) */
    sweep_t *sweep;   /* 'g': the sweep it is part of */
    pl_redis_cb cb;   /* membership: the caller's */
    void *priv;
    char reason[64];
    char room[PL_ROOM_MAX + 1];
    char user[];
} step_t;

/* One instance being swept: its users' steps counted down, then its user set and registration
 * go (unless it is this instance, cleaning up after its previous runs). */
struct sweep {
    pl_shard_t *s;
    int self;
    long left;    /* user steps not yet answered, + 1 while they are being sent */
    long offline; /* users reported offline */
    char server[];
};

static step_t *step_new(pl_shard_t *s, const char *user, char kind)
{
    size_t n = strlen(user) + 1;
    step_t *x = calloc(1, sizeof *x + n);
    if (!x) return NULL;
    x->s = s;
    x->kind = kind;
    memcpy(x->user, user, n);
    return x;
}

/* A command of argc NUL-terminated arguments, placed by argv[1] and not answered. */
static void send_plain(pl_shard_t *s, int argc, const char **argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    pl_kv_command(s, argv[1], lens[1], NULL, NULL, argc, argv, lens);
}

/* SPUBLISH `msg` on the channel of each room in `rooms` (an array reply). */
static void publish_rooms(pl_shard_t *s, const redisReply *rooms, const pl_buf_t *msg)
{
    pl_buf_t *chan = &s->kbuf[4];
    for (size_t i = 0; i < rooms->elements; i++) {
        const redisReply *r = rooms->element[i];
        if (r->type != REDIS_REPLY_STRING) continue;
        pl_key_room_chan(chan, r->str, r->len);
        const char *argv[3] = {"SPUBLISH", chan->data, msg->data};
        size_t lens[3] = {8, chan->len, msg->len};
        pl_kv_command(s, chan->data, chan->len, NULL, NULL, 3, argv, lens);
    }
}

static void presence_event(pl_buf_t *b, const char *user, const char *status)
{
    pl_buf_reset(b);
    pl_buf_adds(b, "{\"type\":\"presence\",\"user\":");
    pl_buf_json_str(b, user, strlen(user));
    pl_buf_adds(b, ",\"status\":\"");
    pl_buf_adds(b, status);
    pl_buf_adds(b, "\"}");
}

static void sweep_step_done(sweep_t *w);

/* The user's step answered {went, here, waiting, rooms}: the other slots follow. */
static void user_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    step_t *x = privdata;
    pl_shard_t *s = x->s;
    const pl_config_t *cfg = &s->srv->cfg;
    redisReply *r = reply;
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
             r->element[0]->type == REDIS_REPLY_INTEGER &&
             r->element[1]->type == REDIS_REPLY_INTEGER && r->element[3]->type == REDIS_REPLY_ARRAY;
    if (r && !ok)
        pl_warn("presence of %s: %s", x->user,
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    long long went = ok ? r->element[0]->integer : 0;
    if (x->ss) pl_chat_presence_answered(x->ss, ok, went < 0, ok ? r->element[2] : NULL);
    if (!ok || went < 0) goto out;
    /* The instance's user set: what its sweep and resync start from. A dead instance's goes as a
     * whole once its users are swept (sweep_step_done). */
    if (x->kind != 'g' || x->sweep_self) {
        pl_key_server(&s->kbuf[0], cfg->redis_prefix, cfg->server_id, "users");
        int here = (int)r->element[1]->integer;
        if (here || x->kind != 'g') {
            const char *su[3] = {here ? "SADD" : "SREM", s->kbuf[0].data, x->user};
            send_plain(s, 3, su);
        }
    }
    if (went == 2 && x->sweep) x->sweep->offline++;
    if (went == 0) goto out;
    pl_key_online(&s->kbuf[0], cfg->redis_prefix, x->user);
    const char *ob[3] = {went == 1 ? "SADD" : "SREM", s->kbuf[0].data, x->user};
    send_plain(s, 3, ob);
    /* A resync that finds a user uncounted (Redis lost the hash) announces nothing: the user
     * never left. Going offline is announced either way: the user did leave. */
    if (went == 1 && x->kind == '=') goto out;
    presence_event(&s->kbuf[1], x->user, went == 1 ? "online" : "offline");
    publish_rooms(s, r->element[3], &s->kbuf[1]);
out:
    if (x->sweep) sweep_step_done(x->sweep);
    free(x);
}

/* Send the user's step for op. 0, or -1 if it could not be sent (x freed). */
static int send_user_step(pl_shard_t *s, step_t *x, const char *op)
{
    const pl_config_t *cfg = &s->srv->cfg;
    const char *pfx = cfg->redis_prefix;
    char mine[160], pre[128], now[24];
    snprintf(pre, sizeof pre, "conn:%s@%s#", cfg->server_id, s->srv->run_id);
    snprintf(mine, sizeof mine, "%s%d", pre, s->index);
    snprintf(now, sizeof now, "%lld", (long long)pl_now_ms());
    static const char *const what[4] = {"user", "rooms", "offline", "revoked"};
    const char *argv[11];
    size_t lens[11];
    int k = 0;
    argv[k] = "EVALSHA", lens[k++] = 7;
    argv[k] = pl_script_sha(PL_SCRIPT_CUSER), lens[k++] = 40;
    argv[k] = "4", lens[k++] = 1;
    for (int i = 0; i < 4; i++) {
        pl_key_user(&s->kbuf[i], pfx, x->user, what[i]);
        argv[k] = s->kbuf[i].data, lens[k++] = s->kbuf[i].len;
    }
    const char *rest[4] = {mine, now, op, pre};
    for (int i = 0; i < 4; i++)
        argv[k] = rest[i], lens[k++] = strlen(rest[i]);
    if (pl_kv_command(s, argv[3], lens[3], user_reply, x, k, argv, lens) != 0) {
        free(x);
        return -1;
    }
    return 0;
}

void pl_split_presence(pl_shard_t *s, const char *op, const char *user, pl_session_t *ss)
{
    /* An instance that counts a connection is registered first, so that a sweep finds its
     * users even if it dies before its first heartbeat (the heartbeat timer keeps it). */
    if (op[0] == 'u' && !s->registered) {
        s->registered = 1;
        pl_split_heartbeat(s);
    }
    step_t *x = step_new(s, user, op[0]);
    if (x) x->ss = ss;
    if (!x || send_user_step(s, x, op) != 0) {
        /* Not counted: the resync when Redis is back counts this shard's connections. */
        if (ss) {
            ss->presence = ss->down_deferred = 0;
            pl_chat_presence_answered(ss, 0, 0, NULL);
        }
    }
}

void pl_split_heartbeat(pl_shard_t *s)
{
    const pl_config_t *cfg = &s->srv->cfg;
    char now[24], ttl[16];
    snprintf(now, sizeof now, "%lld", (long long)pl_now_ms());
    snprintf(ttl, sizeof ttl, "%d", PL_HEARTBEAT_TTL_S);
    pl_key_server(&s->kbuf[0], cfg->redis_prefix, cfg->server_id, "server");
    const char *hb[5] = {"SET", s->kbuf[0].data, now, "EX", ttl};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(hb[i]);
    pl_kv_command(s, hb[1], lens[1], NULL, NULL, 5, hb, lens);
    pl_buf_reset(&s->kbuf[0]);
    pl_buf_printf(&s->kbuf[0], "%sservers", cfg->redis_prefix);
    const char *reg[3] = {"SADD", s->kbuf[0].data, cfg->server_id};
    send_plain(s, 3, reg);
}

/* The instance's user set, read at a resync: each user this shard holds none of gets "=0". */
static void members_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *u = r->element[i];
        if (u->type != REDIS_REPLY_STRING || pl_room_find(&s->users, u->str, u->len)) continue;
        step_t *x = step_new(s, u->str, '=');
        if (x) send_user_step(s, x, "=0");
    }
}

void pl_split_resync(pl_shard_t *s)
{
    const pl_config_t *cfg = &s->srv->cfg;
    pl_split_heartbeat(s);
    s->registered = s->registered || s->users.count > 0;
    size_t n = 0;
    char op[16];
    for (pl_room_t *u = pl_room_first(&s->users); u; u = pl_room_next(&s->users, u)) {
        for (uint32_t i = 0; i < u->nmembers; i++)
            ((pl_session_t *)u->members[i]->owner)->presence = 1;
        snprintf(op, sizeof op, "=%u", u->nmembers);
        step_t *x = step_new(s, u->name, '=');
        if (x && send_user_step(s, x, op) == 0) n++;
    }
    pl_key_server(&s->kbuf[0], cfg->redis_prefix, cfg->server_id, "users");
    const char *argv[2] = {"SMEMBERS", s->kbuf[0].data};
    size_t lens[2] = {8, s->kbuf[0].len};
    pl_kv_command(s, argv[1], lens[1], members_reply, s, 2, argv, lens);
    if (n) pl_info("presence: shard %d re-announced %zu user(s) to the redis cluster", s->index, n);
}

/* A script on the user's slot whose keys are the user's hash and rooms set, then `argc` more
 * arguments. 0, or -1 if it could not be sent. */
static int user_script(pl_shard_t *s, pl_script_t which, const char *user, int argc,
                       const char **args, pl_redis_cb cb, void *priv)
{
    const char *pfx = s->srv->cfg.redis_prefix;
    pl_key_user(&s->kbuf[0], pfx, user, "user");
    pl_key_user(&s->kbuf[1], pfx, user, "rooms");
    const char *argv[8] = {"EVALSHA", pl_script_sha(which), "2", s->kbuf[0].data, s->kbuf[1].data};
    size_t lens[8] = {7, 40, 1, s->kbuf[0].len, s->kbuf[1].len};
    for (int i = 0; i < argc && i < 3; i++)
        argv[5 + i] = args[i], lens[5 + i] = strlen(args[i]);
    return pl_kv_command(s, argv[3], lens[3], cb, priv, 5 + argc, argv, lens);
}

/* ---- the sweep of dead instances ---- */

static void sweep_step_done(sweep_t *w)
{
    if (--w->left > 0) return;
    pl_shard_t *s = w->s;
    const char *pfx = s->srv->cfg.redis_prefix;
    if (!w->self) {
        pl_key_server(&s->kbuf[0], pfx, w->server, "users");
        const char *del[2] = {"DEL", s->kbuf[0].data};
        send_plain(s, 2, del);
        pl_buf_reset(&s->kbuf[0]);
        pl_buf_printf(&s->kbuf[0], "%sservers", pfx);
        const char *srem[3] = {"SREM", s->kbuf[0].data, w->server};
        send_plain(s, 3, srem);
    }
    if (w->offline)
        pl_info("presence: %ld user(s) of %s %s reported offline", w->offline,
                w->self ? "this instance's previous run under the id" : "dead instance", w->server);
    free(w);
}

/* The instance's user set: one sweep step per user. */
static void sweep_users_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    sweep_t *w = privdata;
    pl_shard_t *s = w->s;
    const pl_config_t *cfg = &s->srv->cfg;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        free(w); /* the next heartbeat tries again */
        return;
    }
    char dead[128], keep[128], now[24];
    snprintf(dead, sizeof dead, "conn:%s@", w->server);
    snprintf(keep, sizeof keep, "conn:%s@%s#", cfg->server_id, s->srv->run_id);
    snprintf(now, sizeof now, "%lld", (long long)pl_now_ms());
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *u = r->element[i];
        if (u->type != REDIS_REPLY_STRING) continue;
        step_t *x = step_new(s, u->str, 'g');
        if (!x) break;
        x->sweep = w;
        x->sweep_self = w->self;
        const char *args[3] = {dead, w->self ? keep : "", now};
        if (user_script(s, PL_SCRIPT_CGONE, x->user, 3, args, user_reply, x) == 0)
            w->left++;
        else
            free(x);
    }
    sweep_step_done(w); /* the hold */
}

static void sweep_server(pl_shard_t *s, const char *server, size_t len, int self)
{
    sweep_t *w = calloc(1, sizeof *w + len + 1);
    if (!w) return;
    w->s = s;
    w->self = self;
    w->left = 1;
    memcpy(w->server, server, len);
    pl_key_server(&s->kbuf[0], s->srv->cfg.redis_prefix, w->server, "users");
    const char *argv[2] = {"SMEMBERS", s->kbuf[0].data};
    size_t lens[2] = {8, s->kbuf[0].len};
    if (pl_kv_command(s, argv[1], lens[1], sweep_users_reply, w, 2, argv, lens) != 0) free(w);
}

/* An instance's heartbeat: if it is gone, so is the instance. */
typedef struct {
    pl_shard_t *s;
    char server[];
} beat_t;

static void beat_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    beat_t *b = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        sweep_server(b->s, b->server, strlen(b->server), 0);
    free(b);
}

static void servers_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    const pl_config_t *cfg = &s->srv->cfg;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || strcmp(e->str, cfg->server_id) == 0) continue;
        beat_t *b = malloc(sizeof *b + e->len + 1);
        if (!b) return;
        b->s = s;
        memcpy(b->server, e->str, e->len + 1);
        pl_key_server(&s->kbuf[0], cfg->redis_prefix, b->server, "server");
        const char *argv[2] = {"EXISTS", s->kbuf[0].data};
        size_t lens[2] = {6, s->kbuf[0].len};
        if (pl_kv_command(s, argv[1], lens[1], beat_reply, b, 2, argv, lens) != 0) free(b);
    }
}

void pl_split_sweep(pl_shard_t *s)
{
    const pl_config_t *cfg = &s->srv->cfg;
    if (!s->swept_self && pl_kv_up(s)) {
        /* What a previous run under this id left (killed, or its Redis writes lost): its
         * connection counts go; this run's own stay. */
        s->swept_self = 1;
        sweep_server(s, cfg->server_id, strlen(cfg->server_id), 1);
    }
    pl_buf_reset(&s->kbuf[0]);
    pl_buf_printf(&s->kbuf[0], "%sservers", cfg->redis_prefix);
    const char *argv[2] = {"SMEMBERS", s->kbuf[0].data};
    size_t lens[2] = {8, s->kbuf[0].len};
    pl_kv_command(s, argv[1], lens[1], servers_reply, s, 2, argv, lens);
}

/* ---- membership ---- */

/* The room's step answered: the caller hears of it. */
static void room_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    step_t *x = privdata;
    if (x->cb) x->cb(ac, reply, x->priv);
    free(x);
}

/* The user's step answered {changed, online}: the room's set, and its event. */
static void member_user_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    step_t *x = privdata;
    pl_shard_t *s = x->s;
    const char *pfx = s->srv->cfg.redis_prefix;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        if (r)
            pl_warn("membership of %s in %s: %s", x->user, x->room,
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        room_reply(ac, NULL, x);
        return;
    }
    int announce = x->kind == '-' || (r->element[0]->integer == 1 && r->element[1]->integer == 1);
    size_t room_len = strlen(x->room);
    pl_key_participants(&s->kbuf[0], pfx, x->room, room_len);
    pl_key_room_chan(&s->kbuf[2], x->room, room_len);
    pl_buf_t *ev = &s->kbuf[1];
    if (x->kind == '+') {
        presence_event(ev, x->user, "online");
    } else {
        pl_buf_reset(ev);
        pl_buf_adds(ev, "{\"type\":\"unsubscribed\",\"room\":");
        pl_buf_json_str(ev, x->room, room_len);
        pl_buf_adds(ev, ",\"user\":");
        pl_buf_json_str(ev, x->user, strlen(x->user));
        pl_buf_adds(ev, ",\"reason\":");
        pl_buf_json_str(ev, x->reason, strlen(x->reason));
        pl_buf_adds(ev, "}");
    }
    /* One step on the room's slot: the set, then the event, both as written. */
    const char *lua = "redis.call(ARGV[1], KEYS[1], ARGV[2])\n"
                      "if ARGV[4] == '1' then redis.call('SPUBLISH', KEYS[2], ARGV[3]) end\n"
                      "return 0\n";
    const char *argv[9] = {"EVAL",
                           lua,
                           "2",
                           s->kbuf[0].data,
                           s->kbuf[2].data,
                           x->kind == '+' ? "SADD" : "SREM",
                           x->user,
                           ev->data,
                           announce ? "1" : "0"};
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = i == 7 ? ev->len : strlen(argv[i]);
    if (pl_kv_command(s, argv[3], lens[3], room_reply, x, 9, argv, lens) != 0)
        room_reply(ac, NULL, x);
}

int pl_split_member(pl_shard_t *s, const char *room, const char *user, int member,
                    const char *reason, pl_redis_cb cb, void *priv)
{
    step_t *x = step_new(s, user, member ? '+' : '-');
    if (!x) return -1;
    x->cb = cb;
    x->priv = priv;
    snprintf(x->room, sizeof x->room, "%s", room);
    snprintf(x->reason, sizeof x->reason, "%s", reason ? reason : "removed");
    const char *args[2] = {room, member ? "1" : "0"};
    if (user_script(s, PL_SCRIPT_CMEMBER, user, 2, args, member_user_reply, x) != 0) {
        free(x);
        return -1;
    }
    return 0;
}
