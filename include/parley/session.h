/*
 * session: protocol v1 on an upgraded connection: authentication, rooms,
 * publishing messages (publish first: a message reaches its room, the sender
 * included, only through Redis and the subscriber thread), errors.
 */
#ifndef PARLEY_SESSION_H
#define PARLEY_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "parley/conn.h"
#include "parley/proto.h"

/** Mark `c` authenticated as `user` and send `authenticated`. */
void pl_session_start(pl_conn_t *c, const char *user);

/** Handle one complete, UTF-8-valid text message from the client. */
void pl_session_on_text(pl_conn_t *c, const uint8_t *p, size_t len);

/** Send an error frame (cid may be NULL). */
void pl_session_error(pl_conn_t *c, pl_err_t code, const char *message, const char *cid,
                      size_t cid_len);

/** Deliver a room message from the subscriber to this shard's subscribers of its room. */
void pl_session_deliver(pl_shard_t *s, const pl_bcast_t *b);

#endif
