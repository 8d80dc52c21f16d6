/*
 * subscribe: rooms a connection subscribes to, and catching up. A
 * subscription joins its room at once but holds live frames back while the
 * membership is checked (PostgreSQL) and the room's current seq and anything
 * missed since the client's `since` are fetched (the Redis stream, then
 * PostgreSQL for older ones); `subscribed` goes out, then the missed messages
 * and the held live ones in seq order, each exactly once, streamed as the
 * client's socket drains rather than queued whole.
 */
#ifndef PARLEY_APP_SUBSCRIBE_H
#define PARLEY_APP_SUBSCRIBE_H

#include <stdint.h>

#include "parley/app/room.h"
#include "parley/app/wire.h"
#include "parley/net/frame.h"
#include "parley/proto/conn.h"

struct pl_shard;

/** A subscribe frame. */
void pl_subscribe(pl_conn_t *c, const pl_req_t *req);

/** An unsubscribe frame. */
void pl_unsubscribe(pl_conn_t *c, const pl_req_t *req);

/** A live frame for a subscription still catching up: it waits for the catch-up. */
void pl_subscribe_hold(pl_conn_t *c, pl_sub_t *sub, pl_frame_t *f, int64_t seq);

/** The connection's queue drained (pl_conn_want_drain): send more of its catch-ups. */
void pl_subscribe_drain(pl_conn_t *c);

/** End one subscription the server decided to end (the membership was removed); the caller
 *  tells the client. `sub` is freed. */
void pl_subscribe_end(pl_conn_t *c, pl_sub_t *sub);

/** The connection closes: leave every room. */
void pl_subscribe_leave_all(pl_conn_t *c);

/**
 * The Redis subscriber was away (a lost connection, a Redis restart) and is back: what was
 * published meanwhile never reached this shard. Every subscription catches up from its last
 * seq, as a resubscribe with `since` would, without a second `subscribed` frame; live frames
 * are held meanwhile and none is sent twice.
 */
void pl_subscribe_gap(struct pl_shard *s);

/**
 * One subscription missed frames (a live frame came with a seq past the next one expected): it
 * catches up from its last seq as pl_subscribe_gap does, unless a catch-up it started itself
 * is under way. Afterwards sub->cu says whether live frames are now held.
 */
void pl_subscribe_catch_up(pl_conn_t *c, pl_sub_t *sub);

/** The shard's gap timer (shard->gap_timer): gap catch-ups that found Redis out of reach are
 *  tried again. */
void pl_subscribe_gap_timer_cb(uv_timer_t *t);

/**
 * This shard's view of Redis changed for the catch-ups parked because Redis had lost its data
 * (no parley:ready): `state` 1, it is ready again: they read the room again; 0, it is gone or
 * the shard stops: they fail as a catch-up does without Redis; -1, still not ready: those
 * parked for 5 s are served from PostgreSQL alone.
 */
void pl_subscribe_redis_ready(struct pl_shard *s, int state);

/**
 * Rooms mode (app/roomsub.h): the Redis subscription for life `gen` of room `name` is in effect
 * (`ok`; `room` is the shard's room of that name, if any, already marked live) or could not be
 * made: its catch-ups waiting for it read the room now, or fail. `name` NULL: every waiting
 * catch-up fails (the shard stops).
 */
void pl_subscribe_room_live(struct pl_shard *s, const pl_room_t *room, const char *name,
                            uint32_t gen, int ok);

#endif
