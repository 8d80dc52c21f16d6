/*
 * deliver: room messages and events from Redis to the connections (the
 * fan-out hot path).
 *
 * On the subscriber thread (svc/subscriber.h handlers): each message is
 * framed once (the payload published is already the client-facing JSON) and
 * one reference-counted broadcast, living in the frame's own allocation, is
 * posted to each loop that holds the room (base/shardmask.h), or to every
 * loop for a direct message; loops are woken once per burst. On each loop:
 * one room lookup and, per recipient, a reference to the frame appended to
 * its output queue: no copy, no encoding, no allocation per recipient.
 */
#ifndef PARLEY_APP_DELIVER_H
#define PARLEY_APP_DELIVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "parley/app/room.h"
#include "parley/net/frame.h"
#include "parley/net/loop.h"
#include "parley/svc/subscriber.h"

/** What a broadcast is, which decides who gets it. */
typedef enum {
    PL_BC_ROOM,   /**< subscribers of `room` */
    PL_BC_OTHERS, /**< subscribers of `room` except user_a's connections: typing and presence
                       (a user is not told about themselves) */
    PL_BC_DM,     /**< every connection of user_a (sender) and user_b (recipient) */
    PL_BC_REVOKE, /**< user_a's subscriptions to `room`, which end (membership removed) */
    PL_BC_KICK,   /**< every connection of user_a, which is closed with 4003 (disconnect) */
} pl_bcast_kind_t;

struct pl_shard;
struct pl_bcast;

/** A broadcast's event for one loop. */
typedef struct {
    pl_loop_event_t ev;
    struct pl_bcast *b;
} pl_bcast_event_t;

/**
 * One message on its way to the loops. Built by the subscriber thread inside its frame's
 * allocation (pl_frame_text_with), with one event per loop; it holds the frame's first
 * reference, which the last loop to finish with it drops: that frees both, once no connection
 * queues the frame either.
 */
typedef struct pl_bcast {
    pl_frame_t *frame; /**< the WebSocket frame every recipient gets */
    int64_t seq;       /**< the room message's seq, 0 for other events */
    int64_t arrived;   /**< pl_mono_ms when the subscriber took it: a disconnect spares
                            connections authenticated after it */
    pl_bcast_kind_t kind;
    char user_a[129], user_b[129];
    atomic_uint pending; /**< loops that have not processed it yet */
    uint32_t room_len;
    char room[PL_ROOM_MAX + 1];
    pl_bcast_event_t ev[]; /**< one per loop */
} pl_bcast_t;

/** The subscriber's handlers; their `ud` is the server. */
extern const pl_subscriber_handlers_t pl_deliver_handlers;

/** The loops' receiver of PL_EV_BCAST events. */
void pl_deliver_receive(pl_loop_t *loop, pl_loop_event_t *ev);

/** How long a room frame past the next seq waits for the ones before it, ms (cluster wait mode:
 *  frames of one room published by different instances reach the channel in the order their
 *  WAITs answer, app/publish.h). */
#define PL_DELIVER_REORDER_MS 20

/** The shard's reorder timer: frames that waited PL_DELIVER_REORDER_MS go out (their
 *  subscriptions then catch up what is still missing). */
void pl_deliver_reorder_timer_cb(uv_timer_t *t);

/** A room leaves the shard: the frames it kept waiting go. */
void pl_deliver_room_gone(struct pl_shard *s, pl_room_t *room);

#endif
