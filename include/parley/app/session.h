/*
 * session: protocol v1 on an upgraded connection: authentication, rooms with
 * catch-up, publishing, acks, errors.
 *
 * Publish first: a message is validated, stamped with an id and handed to
 * Redis, which assigns the room's next seq, keeps it in the room's recent
 * stream and publishes it, atomically (script.h). Every subscriber, the sender
 * included, gets it from the subscriber thread (pl_session_deliver), never
 * from a local shortcut, so no instance can deliver a message twice. Then the
 * database pool stores it and the sender gets its ack.
 *
 * Subscribing catches up: the subscription joins the room at once but holds
 * live frames back while the room's current seq and anything missed since the
 * client's `since` are fetched (Redis stream, then PostgreSQL for older ones);
 * `subscribed` goes out, then the missed messages and the held live ones in
 * seq order, each exactly once, streamed as the client's socket drains rather
 * than queued whole (a catch-up of thousands is not a slow consumer).
 */
#ifndef PARLEY_SESSION_H
#define PARLEY_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "parley/app/conn.h"
#include "parley/app/wire.h"

struct pl_db_job;

/** Mark `c` authenticated as `user` and send `authenticated`. */
void pl_session_start(pl_conn_t *c, const char *user);

/** Handle one complete, UTF-8-valid text message from the client. */
void pl_session_on_text(pl_conn_t *c, const uint8_t *p, size_t len);

/** Send an error frame (cid may be NULL). */
void pl_session_error(pl_conn_t *c, pl_err_t code, const char *message, const char *cid,
                      size_t cid_len);

/** Deliver a room message from the subscriber to this shard's subscribers of its room. */
void pl_session_deliver(pl_shard_t *s, const pl_bcast_t *b);

/** The transport's output queue of `c` drained below pl_conn_refill_mark while PL_CONN_REFILL is
 *  set: queue more of its catch-ups; clears the flag when none is left. */
void pl_session_refill(pl_conn_t *c);

/** The connection is closing: leave every room, stop typing, count the user's presence down. */
void pl_session_leave_all(pl_conn_t *c);

/** A shard thread's loop ended: free this thread's key and encoding buffers. */
void pl_session_thread_free(void);

/** The shard's Redis connection came up: load the scripts. */
void pl_session_redis_up(pl_redis_t *r);

#endif
