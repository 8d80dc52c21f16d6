/*
 * deliver: from the subscriber thread to the loops, and on each loop to the
 * recipients; see the header. This is the fan-out hot path: per recipient a
 * table entry read and a frame reference queued, nothing else.
 */
#include "parley/app/deliver.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/publish.h"
#include "parley/app/roomsub.h"
#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/app/shard.h"
#include "parley/app/srvlog.h"
#include "parley/app/subscribe.h"
#include "parley/app/wire.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/script.h"

/* ---- on the subscriber thread ---- */

/* Copy a string member of a small JSON object (typing, direct messages: not the hot path). */
static int json_user(const cJSON *o, const char *key, char out[129])
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || strlen(v->valuestring) > 128) return -1;
    strcpy(out, v->valuestring);
    return 0;
}

/* The subscriber lag: a message's ts (stamped where it was accepted) to now. Room events
 * (typing, presence, reads) have no ts and are not measured. Clocks of other instances may be
 * a little off: a negative lag counts as 0. */
static void observe_lag(pl_server_t *srv, const char *payload, size_t len)
{
    int64_t ts = pl_wire_payload_ts(payload, len);
    if (!ts) return;
    int64_t lag_ms = pl_now_ms() - ts;
    pl_hist_observe(&srv->sub_lag, &pl_hist_seconds, lag_ms > 0 ? (uint64_t)lag_ms * 1000 : 0);
}

/* Frame `len` bytes of `payload` once and post the broadcast to the loops in `to`. `close`: the
 * frame's last byte becomes a '}' (the payload was cut before a member the server strips). */
static void post(pl_server_t *srv, uint64_t to, pl_bcast_kind_t kind, const char *room,
                 size_t room_len, const char *payload, size_t len, int close,
                 const char user_a[129], const char user_b[129])
{
    int n = __builtin_popcountll(to);
    /* The broadcast rides in the frame's allocation and holds its first reference. */
    void *extra;
    pl_frame_t *f = pl_frame_text_with(
        payload, len, sizeof(pl_bcast_t) + (size_t)n * sizeof(pl_bcast_event_t), &extra);
    if (!f) {
        pl_error("out of memory: dropped a message for room %.*s", (int)room_len, room);
        return;
    }
    if (close) f->data[f->len - 1] = '}';
    pl_bcast_t *b = extra;
    b->frame = f;
    b->seq = pl_wire_payload_seq(payload, len);
    b->arrived = pl_mono_ms();
    b->kind = kind;
    memcpy(b->user_a, user_a, 129);
    memcpy(b->user_b, user_b, 129);
    atomic_init(&b->pending, (unsigned)n);
    b->room_len = (uint32_t)room_len;
    memcpy(b->room, room, room_len);
    b->room[room_len] = '\0';
    for (int i = 0, k = 0; i < srv->nshards; i++) {
        if (!(to & ((uint64_t)1 << i))) continue;
        b->ev[k].ev.kind = PL_EV_BCAST;
        b->ev[k].b = b;
        if (pl_loop_post_nowake(srv->loops[i], &b->ev[k].ev)) srv->owe[i] = 1;
        k++;
    }
}

static uint64_t all_loops(const pl_server_t *srv)
{
    return srv->nshards == 64 ? ~(uint64_t)0 : ((uint64_t)1 << srv->nshards) - 1;
}

/* A frame of server:<us>, live or read back from the log (srvlog.h): a direct message, or a
 * user's disconnect (a server_notice naming the user), to every loop (its users may be
 * anywhere). Clients get its first `keep` bytes, closed with a '}' if that cuts it. */
static void server_frame(pl_server_t *srv, const char *payload, size_t len, size_t keep)
{
    char user_a[129] = "", user_b[129] = "";
    int kick = len > 23 && memcmp(payload, "{\"type\":\"server_notice\"", 23) == 0;
    /* The whole payload parses: a cut one still has its "_lid" member. */
    cJSON *j = cJSON_ParseWithLength(payload, len);
    int bad = kick ? json_user(j, "user", user_a)
                   : json_user(j, "from", user_a) || json_user(j, "to", user_b);
    cJSON_Delete(j);
    if (bad) {
        pl_warn("ignoring a malformed %s on server:%s", kick ? "disconnect" : "direct message",
                srv->cfg.server_id);
        return;
    }
    observe_lag(srv, payload, len);
    post(srv, all_loops(srv), kick ? PL_BC_KICK : PL_BC_DM, "", 0, payload, keep, keep < len,
         user_a, user_b);
}

/* An entry read back from this instance's log. */
static void server_logged_cb(void *ud, const char *payload, size_t len, pl_srvlog_id_t id)
{
    pl_server_t *srv = ud;
    if (pl_srvlog_admit(&srv->srvlog, id)) server_frame(srv, payload, len, len);
}

/* A message on room:<id> (a pmessage in pattern mode, a message in rooms mode) or on
 * server:<us> (a direct message or a disconnect). */
static void on_message(void *ud, const char *chan, size_t chan_len, const char *payload, size_t len,
                       int pattern)
{
    pl_server_t *srv = ud;
    if (!pattern && !(chan_len > 5 && memcmp(chan, "room:", 5) == 0)) {
        /* Its log id, if it has one: dropped if it was read back from the log already. */
        pl_srvlog_id_t id;
        size_t keep;
        if (!pl_srvlog_strip(payload, len, &id, &keep))
            server_frame(srv, payload, len, len); /* from an instance of an older version */
        else if (pl_srvlog_admit(&srv->srvlog, id))
            server_frame(srv, payload, len, keep);
        return;
    }
    pl_bcast_kind_t kind = PL_BC_ROOM;
    const char *room;
    size_t room_len;
    char user_a[129] = "", user_b[129] = "";
    if (pl_key_room_of_chan(chan, chan_len, &room, &room_len) != 0) return;
    /* Typing and presence are about a user, who is not told about themselves (a user
     * joining a room while online announces it to the room: not to the joining tab). These
     * are rare next to messages, so parsing them here costs little. */
    int revoke = len > 22 && memcmp(payload, "{\"type\":\"unsubscribed\"", 22) == 0;
    if ((len > 16 && memcmp(payload, "{\"type\":\"typing_", 16) == 0) ||
        (len > 18 && memcmp(payload, "{\"type\":\"presence\"", 18) == 0) || revoke) {
        cJSON *j = cJSON_ParseWithLength(payload, len);
        int bad = json_user(j, "user", user_a);
        cJSON_Delete(j);
        if (bad) return;
        /* A removed membership: only that user's subscriptions get it, and end. */
        kind = revoke ? PL_BC_REVOKE : PL_BC_OTHERS;
    }
    if (!pl_room_id_valid(room, room_len)) {
        pl_warn("ignoring message on invalid channel '%.*s'",
                (int)(chan_len > 200 ? 200 : chan_len), chan);
        return;
    }
    /* Room events go only to the loops that hold the room; none, and the message is not even
     * framed. */
    observe_lag(srv, payload, len);
    uint64_t to = all_loops(srv) & pl_shardmask_get(srv->rooms_mask, pl_room_hash(room, room_len));
    if (to) post(srv, to, kind, room, room_len, payload, len, 0, user_a, user_b);
}

/* The subscriber blocks next: wake the loops it posted to, once each. */
static void on_idle(void *ud)
{
    pl_server_t *srv = ud;
    for (int i = 0; i < srv->nshards; i++)
        if (srv->owe[i]) {
            srv->owe[i] = 0;
            pl_loop_wake(srv->loops[i]);
        }
}

/* What the instance's log holds since the last frame handed on. */
static void server_catch_up(pl_server_t *srv)
{
    long n = pl_srvlog_catch_up(&srv->srvlog, &srv->redis_addr, server_logged_cb, srv);
    if (n > 0) pl_info("subscriber: %ld frame(s) sent here while away read back from its log", n);
}

/* A counted channel's request handed back: the instance's own (cluster mode), or a room's. */
static void chan_cb(void *ud, pl_subscriber_chan_t *req, int ok)
{
    pl_server_t *srv = ud;
    if (req != &srv->server_chan) {
        pl_roomsub_chan_cb(ud, req, ok);
        return;
    }
    /* In effect now: what was sent here before it is in the log. */
    if (ok && pl_server_state(srv) != PL_SERVER_STOPPING) server_catch_up(srv);
}

/* Cluster mode: `chan` is subscribed again after its master was lost or its slot moved, and
 * what came meanwhile was not received. Told at that channel's confirmation, before anything
 * published on it after: the instance's own channel reads its log back now, so that what was
 * sent here meanwhile goes out before what follows; a room's subscriptions catch up by seq (a
 * shard's catch-ups coalesce). */
static void chan_gap(void *ud, const char *chan, size_t len, const char *host, int port)
{
    pl_server_t *srv = ud;
    if (len == srv->server_chan.len && memcmp(chan, srv->server_chan.name, len) == 0) {
        pl_redis_addr_t at = srv->redis_addr;
        at.host = host;
        at.port = port;
        at.db = 0;
        long n = pl_srvlog_catch_up_at(&srv->srvlog, &at, server_logged_cb, srv);
        if (n > 0)
            pl_info("subscriber: %ld frame(s) sent here while away read back from its log", n);
        return;
    }
    for (int i = 0; i < srv->nshards; i++)
        pl_shard_gap(pl_server_shard(srv, i));
}

/* Before the first subscription: where this process' part of the log begins. */
static void on_connected(void *ud, struct redisContext *c, int again)
{
    pl_server_t *srv = ud;
    if (!again) pl_srvlog_baseline(&srv->srvlog, c);
}

/* Subscribed: what the log holds for this instance since the last frame handed on goes out
 * first (at the first subscription, what came between the baseline and it). Subscribed again
 * after a loss: every loop catches its room subscriptions up too. */
static void on_subscribed(void *ud, int again)
{
    pl_server_t *srv = ud;
    /* A cluster's subscription of the instance's channel reads the log back when it is
     * confirmed (chan_cb), and again after a loss or a move (chan_gap). */
    if (!srv->cfg.redis_cluster) server_catch_up(srv);
    if (!again) return;
    for (int i = 0; i < srv->nshards; i++)
        pl_shard_gap(pl_server_shard(srv, i));
}

const pl_subscriber_handlers_t pl_deliver_handlers = {on_message,    on_idle, on_connected,
                                                      on_subscribed, chan_cb, chan_gap};

/* ---- on each loop ---- */

/* A direct message: to this shard's connections of its sender and its recipient. */
static void deliver_dm(pl_shard_t *s, const pl_bcast_t *b)
{
    unsigned long n = 0;
    const char *users[2] = {b->user_a, b->user_b};
    for (int u = 0; u < 2; u++) {
        if (u == 1 && strcmp(users[0], users[1]) == 0) break;
        pl_user_t *r = pl_users_find(&s->users, users[u], strlen(users[u]));
        for (pl_user_link_t *l = r ? r->first : NULL; l; l = l->next)
            if (pl_conn_send(pl_session_conn(pl_session_of_ulink(l)), b->frame) == 0) n++;
    }
    pl_counter_add(&s->stats.delivered, n);
}

/* A disconnect: every connection here of the user gets the notice, then 4003. Closes are
 * queued (the end of the turn closes), so the user's list does not change under the walk. */
static void kick(pl_shard_t *s, const pl_bcast_t *b)
{
    pl_user_t *r = pl_users_find(&s->users, b->user_a, strlen(b->user_a));
    for (pl_user_link_t *l = r ? r->first : NULL; l; l = l->next) {
        pl_session_t *ss = pl_session_of_ulink(l);
        pl_conn_t *c = pl_session_conn(ss);
        /* A connection authenticated after the disconnect reached this instance is not one it
         * was asked to close (a loop busier than the others may take its copy late). */
        if (!pl_conn_open(c) || ss->authed_ms > b->arrived) continue;
        pl_conn_send(c, b->frame);
        pl_conn_close(c, 4003, "disconnected by the server");
    }
}

/* A removed membership: the user's subscriptions to the room get `unsubscribed` and end. The
 * walk goes down because a leave moves the room's last subscription into the freed place, and
 * the last leave frees the room (then i is 0 and the walk is over). */
static void end_subs(pl_shard_t *s, const pl_bcast_t *b)
{
    pl_room_t *room = pl_room_find(&s->rooms, b->room, b->room_len);
    for (uint32_t i = room ? room->nmembers : 0; i-- > 0;) {
        pl_sub_t *sub = room->members[i];
        pl_session_t *ss = sub->owner;
        if (!pl_session_user(ss) || strcmp(pl_session_user(ss), b->user_a) != 0) continue;
        pl_conn_t *c = pl_session_conn(ss);
        if (sub->cu && !sub->quiet) {
            /* A subscribe still being checked or caught up: its client waits for an answer to
             * it, so the answer is the refusal; `unsubscribed` would leave it waiting. */
            char name[PL_ROOM_MAX + 1];
            snprintf(name, sizeof name, "%s", sub->room->name);
            pl_subscribe_end(c, sub);
            pl_session_error_room(c, PL_ERR_FORBIDDEN, "not a member of this room (removed)", name);
            continue;
        }
        pl_conn_send(c, b->frame);
        pl_subscribe_end(c, sub);
    }
}

/* A room frame to every subscription of the room here (each drops a seq it has had). */
static void deliver_room(pl_shard_t *s, pl_room_t *room, const pl_bcast_t *b)
{
    unsigned long n = 0;
    for (uint32_t i = 0; i < room->nmembers; i++) {
        pl_sub_t *sub = room->members[i];
        pl_session_t *ss = sub->owner;
        pl_conn_t *c = pl_session_conn(ss);
        /* Typing and presence go to the room's other users. */
        if (b->kind == PL_BC_OTHERS && pl_session_user(ss) &&
            strcmp(pl_session_user(ss), b->user_a) == 0)
            continue;
        if (sub->cu) {
            pl_subscribe_hold(c, sub, b->frame, b->seq); /* catching up: after the missed ones */
            continue;
        }
        if (b->seq) {
            if (b->seq <= sub->last_seq) continue; /* already sent by the catch-up */
            if (b->seq > sub->last_seq + 1) {
                /* Frames in between never came: published where the subscriber was not
                 * listening (a cluster slot moving to its new master before the subscription
                 * follows it). They are read from the room first; this one waits for them. */
                pl_debug("%s: seq %lld after %lld: catching up", room->name, (long long)b->seq,
                         (long long)sub->last_seq);
                pl_subscribe_catch_up(c, sub);
                if (sub->cu) {
                    pl_subscribe_hold(c, sub, b->frame, b->seq);
                    continue;
                }
            }
            sub->last_seq = b->seq;
        }
        if (pl_conn_send(c, b->frame) == 0) n++;
    }
    pl_counter_add(&s->stats.delivered, n);
}

/* ---- frames that came before their turn (cluster wait mode) ---- */

/* One frame kept waiting, in its room's list by seq. Allocated here, only when frames come out
 * of order; holds a reference to the frame (which holds the bcast). */
typedef struct pl_early {
    struct pl_early *next;
    pl_bcast_t *b;
} pl_early_t;

static void early_add(pl_shard_t *s, pl_room_t *room, pl_bcast_t *b)
{
    pl_early_t *e = malloc(sizeof *e);
    if (!e) {
        deliver_room(s, room, b); /* out of memory: the subscriptions catch up themselves */
        return;
    }
    e->b = b;
    pl_frame_ref(b->frame);
    pl_early_t **pp = &room->early;
    while (*pp && (*pp)->b->seq < b->seq)
        pp = &(*pp)->next;
    e->next = *pp;
    *pp = e;
    if (e == room->early && !e->next) room->early_since = uv_now(pl_loop_uv(s->loop));
    if (!uv_is_active((uv_handle_t *)&s->reorder_timer))
        uv_timer_start(&s->reorder_timer, pl_deliver_reorder_timer_cb, PL_DELIVER_REORDER_MS, 0);
}

/* Send what the room kept waiting that is now in turn (all of it if `all`: it waited long
 * enough, and what is still missing is left to the subscriptions' catch-ups). */
static void early_drain(pl_shard_t *s, pl_room_t *room, int all)
{
    while (room->early && (all || room->early->b->seq <= room->live_seq + 1)) {
        pl_early_t *e = room->early;
        room->early = e->next;
        deliver_room(s, room, e->b);
        if (e->b->seq > room->live_seq) room->live_seq = e->b->seq;
        pl_frame_unref(e->b->frame);
        free(e);
    }
    if (room->early) room->early_since = uv_now(pl_loop_uv(s->loop));
}

void pl_deliver_reorder_timer_cb(uv_timer_t *t)
{
    pl_shard_t *s = t->data;
    uint64_t now = uv_now(t->loop), next = 0;
    for (pl_room_t *r = pl_room_first(&s->rooms); r; r = pl_room_next(&s->rooms, r)) {
        if (!r->early) continue;
        if (now - r->early_since >= PL_DELIVER_REORDER_MS) {
            pl_debug("%s: seq %lld still missing after %d ms: catching up", r->name,
                     (long long)r->live_seq + 1, PL_DELIVER_REORDER_MS);
            early_drain(s, r, 1);
        } else if (!next || r->early_since + PL_DELIVER_REORDER_MS < next) {
            next = r->early_since + PL_DELIVER_REORDER_MS;
        }
    }
    if (next && !s->stopping)
        uv_timer_start(&s->reorder_timer, pl_deliver_reorder_timer_cb, next - now, 0);
}

void pl_deliver_room_gone(pl_shard_t *s, pl_room_t *room)
{
    while (room->early) {
        pl_early_t *e = room->early;
        room->early = e->next;
        pl_frame_unref(e->b->frame);
        free(e);
    }
}

static void deliver(pl_shard_t *s, pl_bcast_t *b)
{
    if (b->kind == PL_BC_DM) {
        deliver_dm(s, b);
        return;
    }
    if (b->kind == PL_BC_KICK) {
        kick(s, b);
        return;
    }
    if (b->kind == PL_BC_REVOKE) {
        end_subs(s, b);
        return;
    }
    pl_room_t *room = pl_room_find(&s->rooms, b->room, b->room_len);
    if (!room) return;
    if (!b->seq || !pl_publish_wait_mode(s)) {
        deliver_room(s, room, b);
        return;
    }
    if (b->seq <= room->live_seq) {
        deliver_room(s, room, b); /* a copy sent again: each subscription drops what it has */
        return;
    }
    if (room->live_seq && b->seq > room->live_seq + 1) {
        early_add(s, room, b);
        return;
    }
    deliver_room(s, room, b);
    room->live_seq = b->seq;
    early_drain(s, room, 0);
}

void pl_deliver_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    pl_bcast_t *b = ((pl_bcast_event_t *)ev)->b;
    if (!s->stopping) deliver(s, b);
    if (atomic_fetch_sub_explicit(&b->pending, 1, memory_order_acq_rel) == 1)
        pl_frame_unref(b->frame); /* b lives in the frame's allocation: gone with it */
}
