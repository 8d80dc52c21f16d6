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
#include "parley/app/wire.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/script.h"

/* A presence change or membership on its way through its steps. Allocated when its first step
 * is sent, freed by that step's reply. */
typedef struct sweep sweep_t;

typedef struct {
    pl_shard_t *s;
    pl_session_t *ss; /* an opening connection waiting for its answer, or NULL */
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
    /* The instance's user set, what its sweep and resync start from: "<shard>:<user>", each
     * member written by its own shard only, so that its SADDs and SREMs reach Redis in the order
     * of their user steps (two shards' commands travel on two connections). A dead instance's
     * set goes as a whole once its users are swept (sweep_step_done); a sweep of this
     * instance's previous runs leaves it to the shards. */
    if (x->kind != 'g') {
        pl_key_server(&s->kbuf[0], cfg->redis_prefix, cfg->server_id, "users");
        pl_buf_reset(&s->kbuf[1]);
        pl_buf_printf(&s->kbuf[1], "%d:%s", s->index, x->user);
        const char *su[3] = {r->element[1]->integer ? "SADD" : "SREM", s->kbuf[0].data,
                             s->kbuf[1].data};
        send_plain(s, 3, su);
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
    char mine[160], now[24];
    snprintf(mine, sizeof mine, "conn:%s@%s#%d", cfg->server_id, s->srv->run_id, s->index);
    snprintf(now, sizeof now, "%lld", (long long)pl_now_ms());
    static const char *const what[4] = {"user", "rooms", "offline", "revoked"};
    const char *argv[10];
    size_t lens[10];
    int k = 0;
    argv[k] = "EVALSHA", lens[k++] = 7;
    argv[k] = pl_script_sha(PL_SCRIPT_CUSER), lens[k++] = 40;
    argv[k] = "4", lens[k++] = 1;
    for (int i = 0; i < 4; i++) {
        pl_key_user(&s->kbuf[i], pfx, x->user, what[i]);
        argv[k] = s->kbuf[i].data, lens[k++] = s->kbuf[i].len;
    }
    const char *rest[3] = {mine, now, op};
    for (int i = 0; i < 3; i++)
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

/* A member of an instance's user set, "<shard>:<user>": the user, and the shard (-1 if the
 * member is not of that form). */
static const char *member_user(const redisReply *m, int *shard)
{
    char *end;
    long k = m->type == REDIS_REPLY_STRING ? strtol(m->str, &end, 10) : -1;
    if (k < 0 || k > 63 || end == m->str || *end != ':') {
        *shard = -1;
        return NULL;
    }
    *shard = (int)k;
    return end + 1;
}

/* The instance's user set, read at a resync: each user this shard holds none of gets "=0". */
static void members_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_shard_t *s = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < r->elements; i++) {
        int k;
        const char *u = member_user(r->element[i], &k);
        if (k != s->index || pl_users_find(&s->users, u, strlen(u))) continue;
        step_t *x = step_new(s, u, '=');
        if (x) send_user_step(s, x, "=0");
    }
}

void pl_split_resync(pl_shard_t *s)
{
    const pl_config_t *cfg = &s->srv->cfg;
    pl_split_heartbeat(s);
    s->registered = s->registered || pl_users_count(&s->users) > 0;
    size_t n = 0;
    char op[16];
    for (pl_user_t *u = pl_users_first(&s->users); u; u = pl_users_next(&s->users, u)) {
        for (pl_user_link_t *l = u->first; l; l = l->next)
            pl_session_of_ulink(l)->presence = 1;
        snprintf(op, sizeof op, "=%u", u->n);
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
        int k;
        const char *u = member_user(r->element[i], &k);
        if (!u) continue;
        step_t *x = step_new(s, u, 'g');
        if (!x) break;
        x->sweep = w;
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

/* ---- a frame to a user's instances: direct messages and disconnects ---- */

/*
 * A route: the lookups of who holds the users' connections (the recipient's step also queues a
 * direct message for a user with none), then one step per instance found. A direct message
 * whose step cannot complete (a master lost, a failover under way) is "held": its remaining
 * work goes onto the shard's FIFO of jobs, and so does every later direct message's until the
 * FIFO is empty again. The FIFO runs one job at a time, the next as soon as one succeeds, the
 * same again every PL_SPLIT_RETRY_MS while it fails: slower than the direct road, but in order,
 * so a conversation's messages reach an instance in seq order across a failover.
 */
typedef struct {
    pl_shard_t *s;
    int lookups;       /* lookups not answered yet, + 1 while they are being sent */
    int sends;         /* instance steps not answered yet, + 1 while they are being sent */
    int failed;        /* a disconnect's own user step went unanswered: nothing revoked */
    int lookup_failed; /* a direct message's lookup went unanswered: they run again */
    int held;          /* on the FIFO road: counted in s->split_held */
    int tries;         /* times its lookups were sent */
    long long got;     /* subscribers that got the frame */
    pl_redis_cb cb;    /* a disconnect's caller, or NULL (a direct message) */
    void *priv;
    char what[8];                                          /* "dm" or "kick", for the log */
    char from[PL_WIRE_ID_MAX + 1], to[PL_WIRE_ID_MAX + 1]; /* a direct message's users */
    pl_buf_t servers; /* the instances found, each NUL-terminated, each once */
    size_t len;
    char frame[];
} route_t;

/* A job: one instance step (`server`), or a route's lookups (`server` ""). It is also the
 * privdata of an instance step in flight. Allocated by route_send or job_new, freed when its
 * step is answered or given up. */
struct pl_split_send {
    struct pl_split_send *next;
    route_t *w;
    int tries;
    char server[];
};
typedef struct pl_split_send send_t;

static void route_lookup(route_t *w);
static void route_send(route_t *w);
static void split_timer_cb(uv_timer_t *t);

static route_t *route_new(pl_shard_t *s, const char *frame, size_t len, const char *what)
{
    route_t *w = calloc(1, sizeof *w + len + 1);
    if (!w) {
        pl_error("out of memory: a %s frame is not routed", what);
        return NULL;
    }
    w->s = s;
    w->len = len;
    memcpy(w->frame, frame, len);
    snprintf(w->what, sizeof w->what, "%s", what);
    return w;
}

static void route_free(route_t *w)
{
    if (w->held) w->s->split_held--;
    pl_buf_free(&w->servers);
    free(w);
}

static void route_add_server(route_t *w, const char *name, size_t len)
{
    for (size_t i = 0; i < w->servers.len; i += strlen(w->servers.data + i) + 1)
        if (strlen(w->servers.data + i) == len && memcmp(w->servers.data + i, name, len) == 0)
            return;
    pl_buf_add(&w->servers, name, len);
    pl_buf_add(&w->servers, "", 1);
}

static void route_hold(route_t *w)
{
    if (!w->held) {
        w->held = 1;
        w->s->split_held++;
    }
}

/* A job for `w`: an instance step, or (server NULL) its lookups. NULL if out of memory. */
static send_t *job_new(route_t *w, const char *server)
{
    size_t n = server ? strlen(server) + 1 : 1;
    send_t *x = calloc(1, sizeof *x + n);
    if (!x) {
        pl_error("out of memory: a %s frame is not sent", w->what);
        return NULL;
    }
    x->w = w;
    if (server) memcpy(x->server, server, n);
    return x;
}

static void fifo_push_back(pl_shard_t *s, send_t *x)
{
    route_hold(x->w);
    x->next = NULL;
    if (s->split_retry_tail)
        s->split_retry_tail->next = x;
    else
        s->split_retry = x;
    s->split_retry_tail = x;
}

static void fifo_push_front(pl_shard_t *s, send_t *x)
{
    route_hold(x->w);
    x->next = s->split_retry;
    s->split_retry = x;
    if (!s->split_retry_tail) s->split_retry_tail = x;
}

/* The FIFO's head failed: it stays first and is tried again after PL_SPLIT_RETRY_MS. */
static void fifo_later(pl_shard_t *s)
{
    s->split_busy = NULL;
    if (!uv_is_active((uv_handle_t *)&s->split_timer))
        uv_timer_start(&s->split_timer, split_timer_cb, PL_SPLIT_RETRY_MS, 0);
}

static int send_step(send_t *x);
static void send_failed(send_t *x, const char *why);

/* Run the FIFO's head, unless one job of it is in flight or it waits for the timer. */
static void fifo_pump(pl_shard_t *s)
{
    if (s->split_busy || !s->split_retry || uv_is_active((uv_handle_t *)&s->split_timer)) return;
    send_t *x = s->split_retry;
    s->split_retry = x->next;
    if (!s->split_retry) s->split_retry_tail = NULL;
    if (x->server[0]) {
        s->split_busy = x;
        if (send_step(x) != 0) send_failed(x, "redis unreachable");
    } else {
        route_t *w = x->w;
        free(x);
        s->split_busy = w;
        route_lookup(w);
    }
}

static void split_timer_cb(uv_timer_t *t)
{
    fifo_pump(t->data);
}

static void route_done(route_t *w)
{
    if (--w->sends > 0) return;
    if (w->cb) {
        redisReply n = {.type = REDIS_REPLY_INTEGER, .integer = w->got};
        w->cb(NULL, w->failed ? NULL : &n, w->priv);
    }
    route_free(w);
}

/* May a direct message's step be tried again? Not past PL_SPLIT_TRIES, nor while the shard
 * stops (its timer is closing). */
static int retry_ok(const route_t *w, int tries)
{
    return !w->cb && tries < PL_SPLIT_TRIES && !w->s->stopping && !w->s->finishing;
}

static void send_reply(struct redisAsyncContext *ac, void *reply, void *privdata);

/* The instance's log and channel, in its slot. 0, or -1 if it could not be sent. */
static int send_step(send_t *x)
{
    route_t *w = x->w;
    pl_shard_t *s = w->s;
    x->tries++;
    pl_key_server(&s->kbuf[0], s->srv->cfg.redis_prefix, x->server, "srvlog");
    pl_key_server_chan(&s->kbuf[1], x->server);
    const char *argv[6] = {
        "EVALSHA", pl_script_sha(PL_SCRIPT_CTOSERVER), "1", s->kbuf[0].data, s->kbuf[1].data,
        w->frame};
    size_t lens[6] = {7, 40, 1, s->kbuf[0].len, s->kbuf[1].len, w->len};
    return pl_kv_command(s, argv[3], lens[3], send_reply, x, 6, argv, lens);
}

/* An instance step that failed: a direct message's is tried again from the FIFO (first, if it
 * was the FIFO's head); a disconnect's is not (its caller is told how many instances got it,
 * and may ask again). */
static void send_failed(send_t *x, const char *why)
{
    route_t *w = x->w;
    pl_shard_t *s = w->s;
    int head = s->split_busy == x;
    if (retry_ok(w, x->tries)) {
        if (head) {
            fifo_push_front(s, x);
            fifo_later(s);
        } else {
            fifo_push_back(s, x);
            if (!s->split_busy && !uv_is_active((uv_handle_t *)&s->split_timer))
                uv_timer_start(&s->split_timer, split_timer_cb, PL_SPLIT_RETRY_MS, 0);
        }
        return;
    }
    pl_warn("%s to instance %s: %s, %d tr%s; %s", w->what, x->server, why, x->tries,
            x->tries == 1 ? "y" : "ies",
            w->cb ? "the caller is told" : "it is in the conversation's history");
    free(x);
    if (head) s->split_busy = NULL;
    route_done(w);
    if (head) fifo_pump(s);
}

static void send_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    send_t *x = privdata;
    route_t *w = x->w;
    pl_shard_t *s = w->s;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER) {
        int head = s->split_busy == x;
        w->got += r->integer;
        free(x);
        if (head) s->split_busy = NULL;
        route_done(w);
        if (head) fifo_pump(s);
        return;
    }
    /* A lost connection may have run it: a second copy then reaches the instance, and its
     * clients, which the seq of the conversation lets drop (the JavaScript client does). */
    send_failed(x, r && r->type == REDIS_REPLY_ERROR ? r->str : "no answer");
}

/* Every lookup answered: one step per instance found. A route from the FIFO puts its steps at
 * the FIFO's front, in order; a direct one sends them, unless routes are held (then behind). */
static void route_send(route_t *w)
{
    pl_shard_t *s = w->s;
    int from_fifo = s->split_busy == w;
    send_t *first = NULL, *last = NULL;
    w->sends = 1;
    for (size_t i = 0; !w->failed && i < w->servers.len; i += strlen(w->servers.data + i) + 1) {
        send_t *x = job_new(w, w->servers.data + i);
        if (!x) continue;
        w->sends++;
        if (from_fifo) {
            x->next = NULL;
            if (last)
                last->next = x;
            else
                first = x;
            last = x;
        } else if (s->split_held > 0 && !w->cb) {
            fifo_push_back(s, x);
        } else if (send_step(x) != 0) {
            send_failed(x, "redis unreachable");
        }
    }
    if (from_fifo) {
        if (first) {
            route_hold(w);
            last->next = s->split_retry;
            s->split_retry = first;
            if (!s->split_retry_tail) s->split_retry_tail = last;
        }
        s->split_busy = NULL;
    }
    route_done(w);
    if (from_fifo || s->split_held > 0) fifo_pump(s);
}

static void lookup_done(route_t *w)
{
    if (--w->lookups > 0) return;
    pl_shard_t *s = w->s;
    if (w->lookup_failed) {
        int head = s->split_busy == w;
        send_t *x = retry_ok(w, w->tries) ? job_new(w, NULL) : NULL;
        if (x) {
            if (head) {
                fifo_push_front(s, x);
                fifo_later(s);
            } else {
                fifo_push_back(s, x);
                fifo_pump(s);
                if (!s->split_busy && !uv_is_active((uv_handle_t *)&s->split_timer))
                    uv_timer_start(&s->split_timer, split_timer_cb, PL_SPLIT_RETRY_MS, 0);
            }
            return;
        }
        pl_warn("%s %s -> %s: its users' instances not found after %d tr%s; it is in the "
                "conversation's history",
                w->what, w->from, w->to, w->tries, w->tries == 1 ? "y" : "ies");
        route_free(w);
        if (head) {
            s->split_busy = NULL;
            fifo_pump(s);
        }
        return;
    }
    route_send(w);
}

/* A list of instances: a user's (cservers) or the registered ones (SMEMBERS). */
static void lookup_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    route_t *w = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                route_add_server(w, r->element[i]->str, r->element[i]->len);
    } else if (!w->cb) {
        w->lookup_failed = 1; /* a direct message's lookups run again */
        if (!retry_ok(w, w->tries))
            pl_warn("%s: looking up instances: %s", w->what,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : "no answer");
    }
    lookup_done(w);
}

/* A disconnect's own user step: without it nothing is revoked, so it is answered as unreachable;
 * the registered instances' lookup alone does not count. */
static void lookup_first_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    route_t *w = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) w->failed = 1;
    lookup_reply(ac, reply, privdata);
}

/* The user's step (cservers), `op` and up to two arguments. 0, or -1 if it could not be sent. */
static int lookup_user(route_t *w, const char *user, const char *side, const char *op,
                       const char *a1, size_t a1_len, const char *a2, pl_redis_cb cb)
{
    pl_shard_t *s = w->s;
    const char *pfx = s->srv->cfg.redis_prefix;
    pl_key_user(&s->kbuf[0], pfx, user, "user");
    pl_key_user(&s->kbuf[1], pfx, user, side);
    const char *argv[8] = {
        "EVALSHA", pl_script_sha(PL_SCRIPT_CSERVERS), "2", s->kbuf[0].data, s->kbuf[1].data, op, a1,
        a2};
    size_t lens[8] = {
        7, 40, 1, s->kbuf[0].len, s->kbuf[1].len, strlen(op), a1_len, a2 ? strlen(a2) : 0};
    int argc = a1 ? (a2 ? 8 : 7) : 6;
    if (pl_kv_command(s, argv[3], lens[3], cb, w, argc, argv, lens) != 0) return -1;
    w->lookups++;
    return 0;
}

/* A direct message's lookups: the recipient's step queues it if the recipient has no
 * connection anywhere, in one step with the count a connecting client's presence step takes
 * the queue from; the sender's finds the sender's other connections. */
static void route_lookup(route_t *w)
{
    char omax[24];
    snprintf(omax, sizeof omax, "%zu", (size_t)w->s->srv->cfg.offline_max);
    w->tries++;
    w->lookups = 1;
    w->lookup_failed = 0;
    pl_buf_reset(&w->servers);
    if (lookup_user(w, w->to, "offline", "q", w->frame, w->len, omax, lookup_reply) != 0 ||
        lookup_user(w, w->from, "offline", "", NULL, 0, NULL, lookup_reply) != 0)
        w->lookup_failed = 1;
    lookup_done(w);
}

void pl_split_free(pl_shard_t *s)
{
    s->split_retry_tail = NULL;
    while (s->split_retry) {
        send_t *x = s->split_retry;
        s->split_retry = x->next;
        route_t *w = x->w;
        int lookups = !x->server[0];
        free(x);
        if (lookups || --w->sends == 0) route_free(w);
    }
}

void pl_split_dm(pl_shard_t *s, const char *from, const char *to, const char *frame, size_t len)
{
    route_t *w = route_new(s, frame, len, "dm");
    if (!w) return;
    snprintf(w->from, sizeof w->from, "%s", from);
    snprintf(w->to, sizeof w->to, "%s", to);
    if (s->split_held > 0) {
        /* Behind the messages held before it. */
        send_t *x = job_new(w, NULL);
        if (!x) {
            route_free(w);
            return;
        }
        fifo_push_back(s, x);
        fifo_pump(s);
        return;
    }
    route_lookup(w);
}

int pl_split_kick(pl_shard_t *s, const char *user, const char *frame, size_t len, int revoke,
                  pl_redis_cb cb, void *priv)
{
    route_t *w = route_new(s, frame, len, "kick");
    if (!w) return -1;
    w->cb = cb;
    w->priv = priv;
    w->lookups = 1;
    char now[24], ttl[24];
    snprintf(now, sizeof now, "%lld", (long long)(pl_now_ms() / 1000));
    snprintf(ttl, sizeof ttl, "%d", PL_REVOKE_TTL_S);
    /* The revocation first, in the user's slot: a connection racing the disconnect is refused
     * at its presence step (docs/redis.md). */
    if (revoke ? lookup_user(w, user, "revoked", "r", now, strlen(now), ttl, lookup_first_reply)
               : lookup_user(w, user, "revoked", "", NULL, 0, NULL, lookup_first_reply)) {
        route_free(w);
        return -1;
    }
    /* Every registered instance too: a connection whose count is not written yet is found. */
    pl_buf_reset(&s->kbuf[0]);
    pl_buf_printf(&s->kbuf[0], "%sservers", s->srv->cfg.redis_prefix);
    const char *argv[2] = {"SMEMBERS", s->kbuf[0].data};
    size_t lens[2] = {8, s->kbuf[0].len};
    if (pl_kv_command(s, argv[1], lens[1], lookup_reply, w, 2, argv, lens) == 0) w->lookups++;
    lookup_done(w);
    return 0;
}

/* ---- a room's members list ---- */

/* The room's list, then who of it is online. Allocated by pl_split_members, freed when the last
 * online check answered. */
typedef struct {
    pl_shard_t *s;
    pl_redis_cb cb;
    void *priv;
    int left;        /* online checks not answered, + 1 while they are being sent */
    int failed;      /* one went unanswered */
    long long count; /* members in all */
    size_t n;        /* listed */
    pl_buf_t names;  /* the listed users, copied: hiredis frees a reply after its callback */
    struct {
        size_t off, len;
        long long online;
    } m[];
} members_t;

static void members_done(members_t *w)
{
    if (--w->left > 0) return;
    /* The answer, shaped as members_lua's: {count, user1, online1, ...}. */
    size_t k = 1 + 2 * w->n;
    redisReply *el = calloc(k, sizeof *el);
    redisReply **ptr = calloc(k, sizeof *ptr);
    if (!el || !ptr || w->failed) {
        if (!w->failed) pl_error("out of memory: a members list is not answered");
        w->cb(NULL, NULL, w->priv);
    } else {
        el[0] = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = w->count};
        for (size_t i = 0; i < w->n; i++) {
            el[1 + 2 * i] = (redisReply){
                .type = REDIS_REPLY_STRING, .str = w->names.data + w->m[i].off, .len = w->m[i].len};
            el[2 + 2 * i] = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = w->m[i].online};
        }
        for (size_t i = 0; i < k; i++)
            ptr[i] = &el[i];
        redisReply all = {.type = REDIS_REPLY_ARRAY, .elements = k, .element = ptr};
        w->cb(NULL, &all, w->priv);
    }
    free(el);
    free(ptr);
    pl_buf_free(&w->names);
    free(w);
}

/* One member's online check: which list, which member. */
typedef struct {
    members_t *w;
    size_t i;
} online_check_t;

static void online_check_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    online_check_t *o = privdata;
    members_t *w = o->w;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_INTEGER)
        w->m[o->i].online = r->integer;
    else
        w->failed = 1;
    free(o);
    members_done(w);
}

typedef struct {
    pl_shard_t *s;
    pl_redis_cb cb;
    void *priv;
} members_ask_t;

/* The room's step answered: each listed user's online bucket next. */
static void members_room_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    members_ask_t *a = privdata;
    pl_shard_t *s = a->s;
    redisReply *r = reply;
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
             r->element[0]->type == REDIS_REPLY_INTEGER;
    if (!ok) {
        /* -1 (not a member) and failures are answered as they are. */
        if (r && r->type == REDIS_REPLY_ERROR) pl_warn("members list: %s", r->str);
        a->cb(ac, r && r->type == REDIS_REPLY_INTEGER ? r : NULL, a->priv);
        free(a);
        return;
    }
    size_t n = r->elements - 1;
    members_t *w = calloc(1, sizeof *w + n * sizeof w->m[0]);
    if (!w) {
        pl_error("out of memory: a members list is not answered");
        a->cb(ac, NULL, a->priv);
        free(a);
        return;
    }
    w->s = s;
    w->cb = a->cb;
    w->priv = a->priv;
    w->left = 1;
    w->count = r->element[0]->integer;
    w->n = n;
    free(a);
    for (size_t i = 0; i < n; i++) {
        const redisReply *u = r->element[1 + i];
        online_check_t *o = malloc(sizeof *o);
        if (!o || u->type != REDIS_REPLY_STRING) {
            free(o);
            w->failed = 1;
            continue;
        }
        w->m[i].off = w->names.len;
        w->m[i].len = u->len;
        pl_buf_add(&w->names, u->str, u->len);
        pl_buf_add(&w->names, "", 1);
        *o = (online_check_t){w, i};
        pl_key_online(&s->kbuf[0], s->srv->cfg.redis_prefix, u->str);
        const char *argv[3] = {"SISMEMBER", s->kbuf[0].data, u->str};
        size_t lens[3] = {9, s->kbuf[0].len, u->len};
        if (pl_kv_command(s, argv[1], lens[1], online_check_reply, o, 3, argv, lens) == 0) {
            w->left++;
        } else {
            free(o);
            w->failed = 1;
        }
    }
    members_done(w);
}

int pl_split_members(pl_shard_t *s, const char *room, const char *asker, int limit, pl_redis_cb cb,
                     void *priv)
{
    members_ask_t *a = malloc(sizeof *a);
    if (!a) return -1;
    *a = (members_ask_t){s, cb, priv};
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    pl_key_participants(&s->kbuf[0], s->srv->cfg.redis_prefix, room, strlen(room));
    const char *argv[6] = {
        "EVALSHA", pl_script_sha(PL_SCRIPT_CMEMBERS), "1", s->kbuf[0].data, asker, lim};
    size_t lens[6] = {7, 40, 1, s->kbuf[0].len, strlen(asker), strlen(lim)};
    if (pl_kv_command(s, argv[3], lens[3], members_room_reply, a, 6, argv, lens) != 0) {
        free(a);
        return -1;
    }
    return 0;
}
