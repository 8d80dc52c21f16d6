/*
 * limits: what one client may cost. A token bucket per connection for the
 * frames it sends (room and direct messages, typing, reads) and another for
 * subscribe churn (rooms joined or left), and one table per process counting
 * WebSocket connections per client address and in all, so an upgrade past
 * PARLEY_MAX_CONNS_PER_IP or PARLEY_MAX_CONNS is refused before it happens.
 *
 * Ownership: buckets live in the session (app/session.h), touched only by the
 * connection's shard. The connection table is the server's (one per process,
 * allocated at start-up, freed at exit) and the one thing here that every
 * shard writes: its counts are atomics, so no lock and no queue is needed.
 * Why one shared table and not a per-shard one with the limit split: the
 * kernel spreads one address's connections over the shards at random
 * (SO_REUSEPORT), so a split limit would refuse an address at a fraction of
 * its allowance on an unlucky shard, or need the shards to ask each other.
 */
#ifndef PARLEY_APP_LIMITS_H
#define PARLEY_APP_LIMITS_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

/**
 * A token bucket, kept as what it lacks of full so that a zeroed one is full. Eight bytes:
 * every connection holds three. The clock is kept modulo 2^32 ms: a bucket left unused for
 * over 49 days may refill by less than it should, once.
 */
typedef struct {
    int32_t debt; /**< tokens x 1000 missing from full at `at` (burst x 1000 fits: <= 1e9) */
    uint32_t at;  /**< when last refilled: the loop's clock in ms, modulo 2^32 */
} pl_limits_bucket_t;

/** A bucket's refill rate (tokens per second) and its size. */
typedef struct {
    uint32_t rate;
    uint32_t burst;
} pl_limits_rate_t;

/**
 * Take `n` tokens from `b` at `now_ms` (a monotonic clock in ms). Returns 0 when they were
 * there (and are taken), else the milliseconds until they will be (at least 1), taking
 * nothing. `n` larger than the burst costs the whole burst (it passes with a full bucket).
 */
uint32_t pl_limits_take(pl_limits_bucket_t *b, const pl_limits_rate_t *r, uint32_t n,
                        uint64_t now_ms);

/** Rows and columns of the per-address count (a count-min sketch, see limits.c). */
#define PL_LIMITS_ROWS 2
#define PL_LIMITS_COLS 8192

/** Why an upgrade was refused: the metrics' reasons (connections_refused). */
typedef enum {
    PL_LIMITS_OK = 0,
    PL_LIMITS_PER_ADDR, /**< the client address has PARLEY_MAX_CONNS_PER_IP WebSockets open */
    PL_LIMITS_INSTANCE, /**< this instance has PARLEY_MAX_CONNS WebSockets open */
    PL_LIMITS_ORIGIN,   /**< an Origin not in PARLEY_ALLOWED_ORIGINS (api.c decides) */
    PL_LIMITS_REASONS
} pl_limits_reason_t;

/** Where a counted connection was counted: its columns, one per row. In its session. */
typedef struct {
    uint16_t col[PL_LIMITS_ROWS];
    uint8_t counted;
} pl_limits_slot_t;

/** The process's WebSocket counts. Written by every shard, with atomics. */
typedef struct {
    uint64_t key[PL_LIMITS_ROWS]; /**< random per process: where an address lands is secret */
    uint32_t per_addr;            /**< PARLEY_MAX_CONNS_PER_IP; 0: no limit */
    uint32_t total_max;           /**< PARLEY_MAX_CONNS (derived from the open-files limit) */
    atomic_uint total;            /**< WebSockets counted */
    atomic_uint count[PL_LIMITS_ROWS][PL_LIMITS_COLS];
} pl_limits_conns_t;

/** Set up `t` (zeroed) with its limits; draws its keys from getrandom(2). */
void pl_limits_conns_init(pl_limits_conns_t *t, uint32_t per_addr, uint32_t total_max);

/**
 * Count one more WebSocket from `addr` (AF_INET or AF_INET6; an IPv6 address counts by its
 * /64, what one subscriber is given). PL_LIMITS_OK and `slot` filled, or the limit it would
 * pass (nothing counted). Any shard thread.
 */
pl_limits_reason_t pl_limits_conn_acquire(pl_limits_conns_t *t, const struct sockaddr *addr,
                                          pl_limits_slot_t *slot);

/** Uncount what pl_limits_conn_acquire counted in `slot` (nothing if it counted nothing). */
void pl_limits_conn_release(pl_limits_conns_t *t, pl_limits_slot_t *slot);

/** An address's count as the table has it (at least the true count). For tests. */
uint32_t pl_limits_conn_count(pl_limits_conns_t *t, const struct sockaddr *addr);

#endif
