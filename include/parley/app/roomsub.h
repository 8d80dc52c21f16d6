/*
 * roomsub: PARLEY_SUBSCRIBE=rooms. The instance's Redis subscriber holds a
 * SUBSCRIBE room:<id> for exactly the rooms some shard here holds: a shard
 * adds a reference to the room's channel when the room appears on it and
 * drops it when the room goes (the subscriber's counted channels,
 * svc/subscriber.h), so Redis sends an instance only the messages of its own
 * rooms instead of every room's (PSUBSCRIBE room:*, pattern mode).
 *
 * The seam stays exact: a room is `live` on its shard once its subscription is
 * in effect, and its catch-ups wait for that (subscribe.c) before they read
 * the room's seq and stream. Everything published after that read arrives
 * live, and what both carry is told apart by seq, as in pattern mode, where
 * every room is live from the start.
 *
 * Each room appearing gets a new `gen` on its shard, carried by its request
 * and its answer, so an answer for an earlier life of the room (left and
 * joined again while the answer was on its way) is not taken for this one's.
 */
#ifndef PARLEY_APP_ROOMSUB_H
#define PARLEY_APP_ROOMSUB_H

#include "parley/app/room.h"
#include "parley/net/loop.h"
#include "parley/svc/subscriber.h"

struct pl_shard;

/** The room table's on_room, on the shard's thread: the room appeared (present 1) or goes. */
void pl_roomsub_room(struct pl_shard *s, pl_room_t *room, int present);

/** The subscriber's on_chan (`ud` the server): a request comes back. */
void pl_roomsub_chan_cb(void *ud, pl_subscriber_chan_t *req, int ok);

/** PL_EV_ROOM_LIVE on the shard's loop: a room's subscription is in effect (or failed). */
void pl_roomsub_receive(pl_loop_t *loop, pl_loop_event_t *ev);

#endif
