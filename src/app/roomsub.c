/*
 * roomsub: a shard's rooms as counted channels of the Redis subscriber; see the header.
 * Not a hot path: one request when a room appears on a shard, one when it goes.
 */
#include "parley/app/roomsub.h"

#include <stdlib.h>
#include <string.h>

#include "parley/app/server.h"
#include "parley/app/shard.h"
#include "parley/app/subscribe.h"
#include "parley/base/log.h"
#include "parley/svc/script.h"

/* A request for a room's channel, and its way back to the shard. Allocated by the shard, owned
 * by the subscriber until on_chan; an add's answer is posted back to the shard, which frees it;
 * a drop is freed by on_chan. */
typedef struct {
    pl_subscriber_chan_t chan; /* first: on_chan hands this back */
    pl_loop_event_t ev;        /* PL_EV_ROOM_LIVE */
    int shard;
    uint32_t gen;
    int ok;
} room_req_t;

void pl_roomsub_room(pl_shard_t *s, pl_room_t *room, int present)
{
    if (!s->srv->cfg.subscribe_rooms) {
        room->live = 1; /* PSUBSCRIBE room:* covers every room */
        return;
    }
    if (present) {
        if (++s->room_gen == 0) s->room_gen = 1;
        room->gen = s->room_gen;
    }
    room_req_t *r = calloc(1, sizeof *r);
    if (!r) {
        /* Nothing live reaches a room that is not subscribed to: better its subscribers get
         * the catch-up and a seq gap than nothing at all; it is logged. */
        pl_error("out of memory: room %s not %s in redis", room->name,
                 present ? "subscribed to; its subscribers get no live messages"
                         : "unsubscribed from");
        room->live = 1;
        return;
    }
    r->chan.add = present;
    pl_buf_t *b = pl_shard_scratch(s);
    pl_key_room_chan(b, room->name, strlen(room->name));
    r->chan.len = b->len < sizeof r->chan.name ? b->len : sizeof r->chan.name - 1;
    memcpy(r->chan.name, b->data, r->chan.len);
    r->shard = s->index;
    r->gen = room->gen;
    pl_subscriber_chan(&s->srv->sub, &r->chan);
}

void pl_roomsub_chan_cb(void *ud, pl_subscriber_chan_t *req, int ok)
{
    pl_server_t *srv = ud;
    room_req_t *r = (room_req_t *)req;
    /* A stopped subscriber hands requests back while the shards are being shut down: their
     * waiting catch-ups end with them. */
    if (!req->add || (!ok && pl_server_state(srv) == PL_SERVER_STOPPING)) {
        free(r);
        return;
    }
    r->ok = ok;
    r->ev.kind = PL_EV_ROOM_LIVE;
    pl_loop_post(srv->loops[r->shard], &r->ev);
}

void pl_roomsub_receive(pl_loop_t *loop, pl_loop_event_t *ev)
{
    pl_shard_t *s = pl_shard_of_loop(loop);
    room_req_t *r = (room_req_t *)((char *)ev - offsetof(room_req_t, ev));
    const char *p = "";
    size_t name_len = 0;
    char name[PL_ROOM_MAX + 1];
    pl_key_room_of_chan(r->chan.name, r->chan.len, &p, &name_len); /* ours: always a room's */
    if (name_len > PL_ROOM_MAX) name_len = 0;
    memcpy(name, p, name_len);
    name[name_len] = '\0';
    pl_room_t *room = pl_room_find(&s->rooms, name, name_len);
    if (room && room->gen != r->gen) room = NULL; /* another life of the room */
    if (room && r->ok) room->live = 1;
    pl_subscribe_room_live(s, room, name, r->gen, r->ok);
    free(r);
}
