/*
 * drain: closing a shard's clients gently, spread over time, for a drain (every client; the
 * instance stops accepting and then exits) or a rebalance (a share of them; the instance goes
 * on). A client being closed stops being read, is given until its in-flight messages are stored
 * and acked (at most PL_DRAIN_WAIT_MS), then gets `server_notice` and close 1001, and
 * reconnects: behind nginx, to another instance while this one drains, or to the instance its
 * address hashes to after a rebalance.
 *
 * Ownership: the plan lives in the shard (pl_shard_t.leave) and is touched by its thread only;
 * the leave timer is the shard's, closed with the shard's other handles.
 */
#ifndef PARLEY_APP_DRAIN_H
#define PARLEY_APP_DRAIN_H

#include <stdint.h>
#include <uv.h>

#include "parley/net/loop.h"

struct pl_shard;

/** The server_notice message of a shutdown: clients are to reconnect. */
#define PL_DRAIN_NOTICE "this server is shutting down: reconnect (another instance takes you)"

/** How long a client being closed may keep messages in flight before it is closed anyway. */
#define PL_DRAIN_WAIT_MS 2000

/** A shard's plan of clients to close. Zeroed with the shard. */
typedef struct {
    uv_timer_t timer;  /**< ticks while the plan runs; closed with the shard */
    uint64_t t0, span; /**< uv_now at the start, and the milliseconds the closes spread over */
    long total;        /**< clients to close in this plan */
    long started;      /**< of which this many were asked to leave */
    uint8_t active;    /**< the timer is running */
    uint8_t drain;     /**< a drain (every client, then report to the server), not a rebalance */
    uint8_t reported;  /**< the drain's end was reported to the server */
} pl_drain_plan_t;

/** Set up the shard's plan (its timer on the shard's loop). 0 or a libuv error. */
int pl_drain_init(struct pl_shard *s);

/** Close the plan's timer (the shard is ending). */
void pl_drain_close(struct pl_shard *s);

/** PL_EV_DRAIN: close every client over PARLEY_DRAIN_SECONDS, then tell the server
 *  (pl_server_shard_drained). New connections are still accepted: HTTP is answered (/health
 *  503 "draining"), upgrades are refused with 503 (api.c). */
void pl_drain_receive(pl_loop_t *loop, pl_loop_event_t *ev);

/** PL_EV_REBALANCE: ask the share of clients the server holds (pl_server_t.rebalance_*) to
 *  reconnect, spread over its seconds. Ignored while draining. */
void pl_drain_rebalance_receive(pl_loop_t *loop, pl_loop_event_t *ev);

#endif
