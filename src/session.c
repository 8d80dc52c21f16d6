/*
 * session: protocol v1 semantics for one connection. Publish first: a
 * message is validated, stamped with an id, and PUBLISHed; every subscriber,
 * the sender included, gets it from the subscriber thread (pl_session_deliver),
 * never from a local shortcut, so no instance can deliver a message twice.
 */
#include "parley/session.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/jwt.h"
#include "parley/log.h"
#include "parley/server.h"

/* A publish in flight: which connection to tell if it fails, and its cid. */
typedef struct pub_ticket {
    struct pub_ticket *next_free;
    pl_conn_t *conn;
    uint8_t cid_len;
    char cid[PL_CID_MAX];
} pub_ticket_t;

/* Tickets are recycled per thread: shards never share them. */
static _Thread_local pub_ticket_t *free_tickets;

static pub_ticket_t *ticket_get(void)
{
    pub_ticket_t *t = free_tickets;
    if (t) free_tickets = t->next_free;
    else t = malloc(sizeof *t);
    return t;
}

static void ticket_put(pub_ticket_t *t)
{
    t->next_free = free_tickets;
    free_tickets = t;
}

static pl_buf_t *scratch(pl_conn_t *c)
{
    pl_buf_t *b = &c->shard->scratch;
    pl_buf_reset(b);
    return b;
}

void pl_session_error(pl_conn_t *c, pl_err_t code, const char *message, const char *cid,
                      size_t cid_len)
{
    pl_buf_t *b = scratch(c);
    pl_proto_error(b, code, message, cid, cid_len);
    pl_conn_send_json(c, b);
}

void pl_session_start(pl_conn_t *c, const char *user)
{
    pl_shard_t *s = c->shard;
    c->user = strdup(user);
    if (!c->user) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    c->flags |= PL_CONN_AUTHED;
    c->session = pl_idgen_next(&s->ids, pl_now_ms());
    char session[24];
    snprintf(session, sizeof session, "%016llx", (unsigned long long)c->session);
    pl_buf_t *b = scratch(c);
    pl_proto_authenticated(b, user, s->srv->cfg.server_id, session);
    pl_conn_send_json(c, b);
    pl_debug("conn %s: authenticated, session %s", user, session);
}

static void on_authenticate(pl_conn_t *c, const pl_req_t *req)
{
    const pl_config_t *cfg = &c->shard->srv->cfg;
    char sub[PL_JWT_SUB_MAX + 1];
    int rc = pl_jwt_verify(cfg->jwt_secret, strlen(cfg->jwt_secret), req->token, req->token_len,
                           pl_now_ms() / 1000, sub);
    if (rc != 0) {
        pl_conn_close(c, 4001, pl_jwt_strerror(rc));
        return;
    }
    pl_session_start(c, sub);
}

static void on_subscribe(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = c->shard;
    /* All or nothing: count the rooms that would be new before joining any. */
    size_t have = pl_room_count(c->subs), add = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, req->rooms)
    {
        pl_room_t *room = pl_room_find(&s->rooms, r->valuestring, strlen(r->valuestring));
        if (!room || !pl_room_sub_of(c->subs, room)) add++;
    }
    if (have + add > s->srv->cfg.max_rooms) {
        pl_session_error(c, PL_ERR_TOO_LARGE, "too many rooms on this connection", req->cid,
                         req->cid_len);
        return;
    }
    cJSON_ArrayForEach(r, req->rooms)
    {
        size_t len = strlen(r->valuestring);
        if (!pl_room_join(&s->rooms, r->valuestring, len, c, &c->subs)) {
            pl_conn_abort(c, "out of memory");
            return;
        }
        pl_buf_t *b = scratch(c);
        pl_proto_room_reply(b, "subscribed", r->valuestring, len);
        pl_conn_send_json(c, b);
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
        if (sub) pl_room_leave(&s->rooms, &c->subs, sub);
        pl_buf_t *b = scratch(c);
        pl_proto_room_reply(b, "unsubscribed", r->valuestring, len);
        pl_conn_send_json(c, b);
    }
    atomic_store_explicit(&s->nrooms, (long)s->rooms.count, memory_order_relaxed);
}

static void publish_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pub_ticket_t *t = privdata;
    pl_conn_t *c = t->conn;
    redisReply *r = reply;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (pl_conn_open(c))
            pl_session_error(c, PL_ERR_UNAVAILABLE,
                             r ? "redis refused the message; retry"
                               : "redis connection lost; the message may not have been delivered",
                             t->cid_len ? t->cid : NULL, t->cid_len);
    }
    ticket_put(t);
    pl_conn_reply_done(c);
}

static void on_message(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = c->shard;
    pl_room_t *room = pl_room_find(&s->rooms, req->room, req->room_len);
    if (!room || !pl_room_sub_of(c->subs, room)) {
        pl_session_error(c, PL_ERR_NOT_SUBSCRIBED, "subscribe to the room before sending to it",
                         req->cid, req->cid_len);
        return;
    }
    int64_t now = pl_now_ms();
    uint64_t id = pl_idgen_next(&s->ids, now);
    pl_buf_t *b = scratch(c);
    /* The published payload is the exact frame subscribers get: encoded once, here. */
    pl_proto_message(b, req, id, c->user, now);

    char chan[5 + PL_ROOM_MAX];
    memcpy(chan, "room:", 5);
    memcpy(chan + 5, req->room, req->room_len);
    const char *argv[3] = {"PUBLISH", chan, b->data};
    size_t lens[3] = {7, 5 + req->room_len, b->len};

    pub_ticket_t *t = ticket_get();
    if (!t) {
        pl_session_error(c, PL_ERR_UNAVAILABLE, "out of memory", req->cid, req->cid_len);
        return;
    }
    t->conn = c;
    t->cid_len = (uint8_t)req->cid_len;
    if (req->cid) memcpy(t->cid, req->cid, req->cid_len);
    if (pl_redis_command(&s->redis, publish_cb, t, 3, argv, lens) != 0) {
        ticket_put(t);
        pl_session_error(c, PL_ERR_UNAVAILABLE, "redis is unreachable; retry later", req->cid,
                         req->cid_len);
        return;
    }
    c->replies_pending++;
}

void pl_session_on_text(pl_conn_t *c, const uint8_t *p, size_t len)
{
    const pl_config_t *cfg = &c->shard->srv->cfg;
    pl_proto_limits_t lim = {cfg->max_text, cfg->max_rooms};
    pl_req_t req;
    pl_proto_err_t err;
    if (pl_proto_decode((const char *)p, len, &lim, &req, &err) != 0) {
        pl_session_error(c, err.code, err.message, req.cid, req.cid_len);
        pl_proto_req_free(&req);
        return;
    }
    if (!(c->flags & PL_CONN_AUTHED)) {
        if (req.type == PL_REQ_AUTHENTICATE) on_authenticate(c, &req);
        else
            pl_session_error(c, PL_ERR_UNAUTHORIZED, "authenticate first", req.cid, req.cid_len);
        pl_proto_req_free(&req);
        return;
    }
    switch (req.type) {
    case PL_REQ_AUTHENTICATE:
        pl_session_error(c, PL_ERR_BAD_REQUEST, "already authenticated", req.cid, req.cid_len);
        break;
    case PL_REQ_SUBSCRIBE: on_subscribe(c, &req); break;
    case PL_REQ_UNSUBSCRIBE: on_unsubscribe(c, &req); break;
    case PL_REQ_MESSAGE: on_message(c, &req); break;
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

void pl_session_deliver(pl_shard_t *s, const pl_bcast_t *b)
{
    pl_room_t *room = pl_room_find(&s->rooms, b->room, b->room_len);
    if (!room) return;
    unsigned long n = 0;
    for (uint32_t i = 0; i < room->nmembers; i++)
        if (pl_conn_send(room->members[i]->owner, b->frame) == 0) n++;
    atomic_fetch_add_explicit(&s->delivered, n, memory_order_relaxed);
}
