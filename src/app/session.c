/*
 * session: authentication, dispatch of client frames, the connection's end;
 * see the header.
 */
#include "parley/app/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "parley/app/api.h"
#include "parley/app/chat.h"
#include "parley/app/publish.h"
#include "parley/app/server.h"
#include "parley/app/shard.h"
#include "parley/app/subscribe.h"
#include "parley/base/clock.h"
#include "parley/base/jwt.h"
#include "parley/base/log.h"

/* Every error frame goes through one of the two below, and is counted there by code. */
static void count_error(pl_shard_t *s, pl_err_t code)
{
    pl_counter_add(&s->stats.errors[code < PL_ERR_COUNT ? code : PL_ERR_NONE], 1);
}

void pl_session_error(pl_conn_t *c, pl_err_t code, const char *message, const char *cid,
                      size_t cid_len)
{
    count_error(pl_shard_of_conn(c), code);
    pl_buf_t *b = pl_shard_scratch(pl_shard_of_conn(c));
    pl_wire_error(b, code, message, cid, cid_len);
    pl_session_send(c, b);
}

void pl_session_error_room(pl_conn_t *c, pl_err_t code, const char *message, const char *room)
{
    count_error(pl_shard_of_conn(c), code);
    pl_buf_t *b = pl_shard_scratch(pl_shard_of_conn(c));
    pl_wire_error_room(b, code, message, NULL, 0, room);
    pl_session_send(c, b);
}

/* The notice before expiry goes at most a minute before it, and at half the token's remaining
 * lifetime for shorter ones, so that a client renewing with short tokens is not asked to renew
 * again at once. */
#define EXP_NOTICE_MAX_S 60

static void set_exp(pl_session_t *ss, int64_t exp)
{
    int64_t left = exp - pl_now_ms() / 1000;
    ss->exp = exp > 0 ? (uint32_t)exp : 0;
    ss->exp_notice = 0;
    if (ss->exp)
        ss->exp_notice = left / 2 > EXP_NOTICE_MAX_S ? EXP_NOTICE_MAX_S
                         : left > 1                  ? (uint16_t)(left / 2)
                                                     : 1;
}

void pl_session_start(pl_conn_t *c, const char *user, int64_t exp, int64_t iat)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_session_t *ss = pl_session_of(c);
    int rc = pl_users_add(&s->users, user, strlen(user), &ss->ulink);
    if (rc == -2) {
        pl_warn("conn %s: more than %d connections of one user on one shard: refused", user,
                PL_USERS_MAX_LINKS);
        pl_conn_close(c, 1008, "too many connections of this user");
        return;
    }
    if (rc != 0) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    ss->authed = 1;
    ss->authed_ms = pl_mono_ms();
    set_exp(ss, exp);
    ss->iat = iat <= 0 ? 0 : iat >= 4294967295LL ? 4294967295u : (uint32_t)iat;
    pl_counter_add(&s->stats.auths, 1);
    pl_counter_add(&s->stats.sessions, 1);
    /* Before Redis gave this shard its id node, a random session id: it only has to be unique,
     * and 64 random bits are, for all practical purposes. */
    uint64_t id;
    if (s->ids_ready || getrandom(&id, sizeof id, 0) != sizeof id)
        id = pl_idgen_next(&s->ids, pl_now_ms());
    /* Told to the client and logged, not kept: nothing later names a connection by it. */
    char session[24];
    snprintf(session, sizeof session, "%016llx", (unsigned long long)id);
    pl_buf_t *b = pl_shard_scratch(s);
    pl_wire_authenticated(b, user, s->srv->cfg.server_id, session, ss->exp);
    pl_session_send(c, b);
    pl_debug("conn %s: authenticated, session %s", user, session);
    pl_chat_presence_up(c);
}

void pl_session_auth_failed(pl_conn_t *c, int jwt_rc)
{
    int i = -jwt_rc;
    pl_counter_add(&pl_shard_of_conn(c)->stats.auth_failures[i > 0 && i < PL_AUTH_FAIL_N ? i : 0],
                   1);
}

static void on_authenticate(pl_conn_t *c, const pl_req_t *req)
{
    const pl_config_t *cfg = &pl_shard_of_conn(c)->srv->cfg;
    pl_jwt_claims_t cl;
    int rc = pl_jwt_check(&cfg->jwt, req->token, req->token_len, pl_now_ms() / 1000, &cl);
    if (rc != 0) {
        pl_session_auth_failed(c, rc);
        pl_conn_close(c, 4001, pl_jwt_strerror(rc));
        return;
    }
    pl_session_start(c, cl.sub, cl.exp, cl.iat);
}

/*
 * `authenticate` on a live connection: a fresh token for the same user moves the expiry (the
 * connection, its subscriptions and presence carry on); a bad one, or one for another user, is
 * refused with an error frame and the old token's expiry still holds.
 */
static void reauthenticate(pl_conn_t *c, const pl_req_t *req)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_session_t *ss = pl_session_of(c);
    pl_jwt_claims_t cl;
    int rc = pl_jwt_check(&s->srv->cfg.jwt, req->token, req->token_len, pl_now_ms() / 1000, &cl);
    if (rc != 0) {
        pl_session_auth_failed(c, rc);
        char msg[96];
        snprintf(msg, sizeof msg,
                 "token refused (%s); the current one still holds until it expires",
                 pl_jwt_strerror(rc));
        pl_session_error(c, PL_ERR_UNAUTHORIZED, msg, req->cid, req->cid_len);
        return;
    }
    if (strcmp(cl.sub, pl_session_user(ss)) != 0) {
        pl_session_error(c, PL_ERR_FORBIDDEN, "the token is for another user", req->cid,
                         req->cid_len);
        return;
    }
    set_exp(ss, cl.exp);
    pl_buf_t *b = pl_shard_scratch(s);
    pl_buf_adds(b, "{\"type\":\"reauthenticated\",\"user\":");
    pl_buf_json_str(b, pl_session_user(ss), strlen(pl_session_user(ss)));
    if (ss->exp) pl_buf_printf(b, ",\"exp\":%lu", (unsigned long)ss->exp);
    pl_buf_adds(b, "}");
    pl_session_send(c, b);
}

/* Once a second for a connection whose token has an exp: close it past the exp (and the
 * leeway); send the expiry notice when it is near. */
static void expiry_tick(pl_conn_t *c)
{
    pl_session_t *ss = pl_session_of(c);
    int64_t now = pl_now_ms() / 1000;
    if (now >= (int64_t)ss->exp + pl_shard_of_conn(c)->srv->cfg.jwt.leeway) {
        if (!pl_conn_open(c)) return;
        pl_session_auth_failed(c, PL_JWT_EEXPIRED);
        pl_conn_close(c, 4001, "token expired");
    } else if (ss->exp_notice && now + ss->exp_notice >= (int64_t)ss->exp) {
        ss->exp_notice = 0;
        pl_buf_t *b = pl_shard_scratch(pl_shard_of_conn(c));
        pl_wire_notice(b, "token_expiring",
                       "the token expires soon: send authenticate with a fresh token");
        b->len--; /* the closing brace: exp follows */
        pl_buf_printf(b, ",\"exp\":%lu}", (unsigned long)ss->exp);
        pl_session_send(c, b);
    }
}

/*
 * Charge `n` tokens for a frame to bucket `b` (limits.h). 0: go on. Otherwise the frame is
 * refused and already answered: error rate_limited with its cid and when to retry, nothing else
 * done; or, when the client keeps sending past refusals (it has drawn twice PARLEY_RATE_BURST
 * of them faster than PARLEY_RATE_LIMIT gives them back), closed with 1008.
 */
static int over_rate(pl_conn_t *c, pl_limits_bucket_t *b, uint32_t rate, uint32_t burst, uint32_t n,
                     int kind, const pl_req_t *req)
{
    if (!rate) return 0;
    pl_limits_rate_t r = {rate, burst};
    uint64_t now = pl_sock_now(&c->sock);
    uint32_t wait = pl_limits_take(b, &r, n, now);
    if (!wait) return 0;
    pl_shard_t *s = pl_shard_of_conn(c);
    const pl_config_t *cfg = &s->srv->cfg;
    pl_counter_add(&s->stats.rate_limited[kind], 1);
    if (req->type == PL_REQ_MESSAGE) pl_counter_add(&s->stats.received, 1); /* refusals count */
    /* The refusals' allowance follows the frame rate (or the subscribe rate if alone on). */
    pl_limits_rate_t allow = cfg->rate_limit ? (pl_limits_rate_t){(uint32_t)cfg->rate_limit,
                                                                  2 * (uint32_t)cfg->rate_burst}
                                             : (pl_limits_rate_t){rate, 2 * burst};
    if (pl_limits_take(&pl_session_of(c)->refusals, &allow, 1, now)) {
        pl_counter_add(&s->stats.rate_closes, 1);
        pl_conn_close(c, 1008, "rate limit exceeded");
        return 1;
    }
    count_error(s, PL_ERR_RATE_LIMITED);
    pl_buf_t *out = pl_shard_scratch(s);
    pl_wire_rate_limited(out,
                         kind ? "too many rooms subscribed or left; retry later"
                              : "too many frames; retry later",
                         req->cid, req->cid_len, wait);
    pl_session_send(c, out);
    return 1;
}

/* The rate a frame of this type is charged to: 1 for what is limited. */
static int limited(pl_conn_t *c, const pl_req_t *req)
{
    pl_session_t *ss = pl_session_of(c);
    const pl_config_t *cfg = &pl_shard_of_conn(c)->srv->cfg;
    switch (req->type) {
    case PL_REQ_MESSAGE:
    case PL_REQ_TYPING_START:
    case PL_REQ_TYPING_STOP:
    case PL_REQ_READ:
        return over_rate(c, &ss->frames, (uint32_t)cfg->rate_limit, (uint32_t)cfg->rate_burst, 1, 0,
                         req);
    case PL_REQ_SUBSCRIBE:
    case PL_REQ_UNSUBSCRIBE:
        /* Each room costs a catch-up or a room-table change: churn is counted in rooms, and a
         * connection may always (re)subscribe its whole allowance at once. */
        return over_rate(c, &ss->churn, (uint32_t)cfg->subscribe_rate, (uint32_t)cfg->max_rooms,
                         (uint32_t)(req->nrooms ? req->nrooms : 1), 1, req);
    default:
        /* Pings stay free: they prove liveness, cost no Redis, and must pass under a flood. */
        return 0;
    }
}

/* One complete, UTF-8-valid text message from the client. */
static void on_message(pl_conn_t *c, const uint8_t *p, size_t len, int binary)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    if (binary) {
        pl_session_error(c, PL_ERR_BAD_REQUEST, "binary frames are not supported; send JSON text",
                         NULL, 0);
        return;
    }
    const pl_config_t *cfg = &s->srv->cfg;
    pl_wire_limits_t lim = {cfg->max_text, cfg->max_rooms};
    pl_req_t req;
    pl_wire_err_t err;
    if (pl_wire_decode(&s->arena, (const char *)p, len, &lim, &req, &err) != 0) {
        pl_session_error(c, err.code, err.message, req.cid, req.cid_len);
        pl_wire_req_free(&req);
        return;
    }
    if (!pl_session_of(c)->authed) {
        if (req.type == PL_REQ_AUTHENTICATE)
            on_authenticate(c, &req);
        else
            pl_session_error(c, PL_ERR_UNAUTHORIZED, "authenticate first", req.cid, req.cid_len);
        pl_wire_req_free(&req);
        return;
    }
    if (limited(c, &req)) {
        pl_wire_req_free(&req);
        return;
    }
    switch (req.type) {
    case PL_REQ_AUTHENTICATE:
        reauthenticate(c, &req);
        break;
    case PL_REQ_SUBSCRIBE:
        pl_subscribe(c, &req);
        break;
    case PL_REQ_UNSUBSCRIBE:
        pl_unsubscribe(c, &req);
        break;
    case PL_REQ_MESSAGE:
        pl_publish(c, &req);
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
        pl_conn_send_text(c, pong, sizeof pong - 1);
        break;
    }
    }
    pl_wire_req_free(&req);
}

/* The connection is closing: leave every room, stop typing, count the user's presence down. */
static void on_close(pl_conn_t *c)
{
    pl_session_t *ss = pl_session_of(c);
    /* Every WebSocket, authenticated or not, aborted or not, was counted at its upgrade. */
    pl_limits_conn_release(pl_shard_of_conn(c)->srv->conns, &ss->slot);
    if (!ss->authed) return;
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_counter_set(&s->stats.sessions, pl_counter_get(&s->stats.sessions) - 1);
    pl_subscribe_leave_all(c);
    pl_chat_typing_stop_all(c);
    pl_users_remove(&s->users, &ss->ulink);
    pl_chat_presence_down(c);
}

static void on_free(pl_conn_t *c)
{
    pl_users_release(&pl_shard_of_conn(c)->users, &pl_session_of(c)->ulink);
}

/* Once a second: the authentication deadline, the token's expiry, typing states that expire. */
static void on_tick(pl_conn_t *c, uint64_t now)
{
    pl_session_t *ss = pl_session_of(c);
    if (!ss->authed) {
        uint64_t auth_ms = (uint64_t)pl_shard_of_conn(c)->srv->cfg.auth_timeout * 1000;
        if (pl_sock_ms_since(now, c->sock.created_ms) >= auth_ms && pl_conn_open(c)) {
            pl_session_auth_failed(c, 0);
            pl_conn_close(c, 4001, "authentication timeout");
        }
        return;
    }
    if (ss->exp) expiry_tick(c);
    if (ss->typing) pl_chat_tick(c, now);
}

static const char *label(pl_conn_t *c)
{
    const char *user = pl_session_user(pl_session_of(c));
    return user ? user : "-";
}

const pl_conn_app_t pl_session_app = {
    .ext_size = sizeof(pl_session_t),
    .on_request = pl_api_request,
    .on_upgrade = pl_api_upgrade,
    .on_message = on_message,
    .on_close = on_close,
    .on_free = on_free,
    .on_tick = on_tick,
    .on_drain = pl_subscribe_drain,
    .label = label,
};
