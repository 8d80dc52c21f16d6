/*
 * session: protocol v1 on an upgraded connection: the application's
 * per-connection state (pl_session_t, in the connection's extension area),
 * the handler table the gateway gives its connections (HTTP to api.h,
 * WebSocket messages here), authentication, dispatch of client frames to
 * subscribe.h, publish.h and chat.h, and error frames.
 *
 * Ownership: a session lives in its connection's memory (proto/conn.h); its
 * user id is its entry in the shard's user index (users.h), filed at
 * authentication, held from the close and let go of when the memory goes.
 */
#ifndef PARLEY_APP_SESSION_H
#define PARLEY_APP_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "parley/app/limits.h"
#include "parley/app/room.h"
#include "parley/app/users.h"
#include "parley/app/wire.h"
#include "parley/base/buf.h"
#include "parley/proto/conn.h"

struct pl_typing;

/** A connection's protocol state. Zeroed at accept. */
typedef struct pl_session {
    pl_sub_t *subs;           /**< rooms subscribed to, on the shard's room table */
    pl_user_link_t ulink;     /**< in the shard's user index; its entry holds the user's name */
    struct pl_typing *typing; /**< rooms it is typing in (chat.c) */
    int64_t authed_ms; /**< pl_mono_ms of its authentication (a disconnect closes those before) */
    /* Small fields together: every connection holds a session (no holes). */
    uint32_t leave_ms; /**< when it was asked to leave, uv_now truncated */
    uint32_t exp;      /**< the token's exp (unix seconds), 0 if none: closed with 4001 after it */
    uint32_t iat; /**< the token's iat (unix seconds), 0 if none: checked against revocations */
    uint16_t exp_notice; /**< seconds before exp the expiry notice goes; 0 once sent, or none */
    uint8_t authed;
    uint8_t presence;          /**< counted in Redis presence (chat.c) */
    uint8_t up_pending;        /**< its "u" is sent and unanswered: a close waits for the answer */
    uint8_t down_deferred;     /**< closed meanwhile: its "d" goes once the "u" is answered */
    uint8_t leaving;           /**< asked to leave (drain.h): not read any more */
    pl_limits_bucket_t frames; /**< messages, typing, reads: PARLEY_RATE_LIMIT (limits.h) */
    pl_limits_bucket_t churn;  /**< rooms subscribed or left: PARLEY_SUBSCRIBE_RATE */
    pl_limits_bucket_t refusals; /**< refusals it may still draw before it is closed (1008) */
    pl_limits_slot_t slot;       /**< where the server's connection table counted it */
} pl_session_t;

/** The session of a connection, and back. */
static inline pl_session_t *pl_session_of(pl_conn_t *c)
{
    return pl_conn_ext(c);
}
static inline pl_conn_t *pl_session_conn(pl_session_t *s)
{
    return pl_conn_of(s);
}

/** The user id of an authenticated session (until its memory goes), or NULL. */
static inline const char *pl_session_user(const pl_session_t *ss)
{
    return pl_users_name(&ss->ulink);
}

/** The session whose user link is `l` (a pl_user_t's chain). */
static inline pl_session_t *pl_session_of_ulink(pl_user_link_t *l)
{
    return (pl_session_t *)((char *)l - offsetof(pl_session_t, ulink));
}

/** The gateway's handler table for its connections (proto/conn.h). */
extern const pl_conn_app_t pl_session_app;

/** Mark `c` authenticated as `user`, whose token expires at `exp` (unix seconds, 0: never) and
 *  was issued at `iat` (0: unknown), and send `authenticated`. Its presence, counted next, is
 *  where a revoked token (a disconnect since `iat`) is found and the connection closed. */
void pl_session_start(pl_conn_t *c, const char *user, int64_t exp, int64_t iat);

/** Send an error frame (cid may be NULL). */
void pl_session_error(pl_conn_t *c, pl_err_t code, const char *message, const char *cid,
                      size_t cid_len);
/** Send an error frame about one room (it names the room). */
void pl_session_error_room(pl_conn_t *c, pl_err_t code, const char *message, const char *room);
/** Count a failed authentication (metrics): `jwt_rc` a negative PL_JWT_E* code, or 0 for the
 *  authentication timeout. */
void pl_session_auth_failed(pl_conn_t *c, int jwt_rc);

/** Send `b`'s JSON as a text frame. */
static inline void pl_session_send(pl_conn_t *c, const pl_buf_t *b)
{
    pl_conn_send_text(c, b->data, b->len);
}

#endif
