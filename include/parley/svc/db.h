/*
 * db: the PostgreSQL worker pool. Loops hand it jobs; M worker threads, each
 * with its own libpq connection, run them and post each finished job back to
 * the loop that submitted it (net/loop.h: an event of the submitter's kind),
 * whose receiver then calls the job's `done`. Delivery never waits on the
 * database: message jobs are submitted after the message is on its way.
 *
 * Jobs are small and typed: a header (pl_db_job_t) embedded first in one
 * struct per kind, each holding only what its kind needs. A store job points
 * at the message it stores (pl_db_msg_t, owned by the submitter). The
 * database layer answers with statuses and rows (pl_db_rows_t); what they
 * become (frames, HTTP bodies, Redis keys) is the application's business.
 *
 * Message stores are written in batches (one multi-row INSERT per
 * transaction, as many as are queued up to PL_DB_BATCH), idempotently (ON
 * CONFLICT DO NOTHING, then the stored row answers for the duplicate). A batch
 * that fails for want of a connection is retried with backoff for as long as
 * it takes; while PostgreSQL is down the store queue only grows, and it is
 * bounded: callers reserve a place with pl_db_reserve before accepting a
 * message, and refuse the message when there is none. Other jobs fail fast
 * (PL_DB_EUNAVAILABLE) while it is down.
 *
 * Ownership: a job is allocated and freed by its submitter; the pool holds it
 * from pl_db_submit until it is posted back. Rows in a job's results are the
 * job's (pl_db_rows_free). The queue is a mutex and condition variable: the
 * consumers are blocking threads anyway.
 */
#ifndef PARLEY_SVC_DB_H
#define PARLEY_SVC_DB_H

#include <stddef.h>
#include <stdint.h>

#include "parley/base/buf.h"
#include "parley/base/metric.h"
#include "parley/net/loop.h"

/** Most message rows in one INSERT. */
#define PL_DB_BATCH 256
/** Longest room or user id a job carries, bytes. */
#define PL_DB_NAME_MAX 128

/** What a job asks of the database. */
typedef enum {
    PL_DB_STORE,   /**< pl_db_store_t */
    PL_DB_RECOVER, /**< pl_db_recover_t */
    PL_DB_HISTORY, /**< pl_db_history_t */
    PL_DB_MEMBER,  /**< pl_db_member_t */
    PL_DB_READ,    /**< pl_db_read_t */
    PL_DB_RESTORE, /**< pl_db_restore_t */
    PL_DB_ROOMS,   /**< pl_db_rooms_t */
} pl_db_kind_t;

/** Job outcomes (status). */
enum {
    PL_DB_OK = 0,
    PL_DB_EUNAVAILABLE = -1, /**< the database could not be reached */
    PL_DB_ECONFLICT = -3,    /**< STORE: (room, seq) taken by another message; not stored */
    PL_DB_EFAILED = -4,      /**< the statement failed; logged */
};

struct pl_db_job;
/** Completion, called on the submitting loop's thread by its receiver. */
typedef void (*pl_db_done_cb)(struct pl_db_job *job);

/** What every job begins with. Filled by pl_db_job_init. */
typedef struct pl_db_job {
    pl_loop_event_t ev;     /**< posted back on it, to the submitter's receiver */
    struct pl_db_job *next; /**< the pool's queue (and free for the submitter's lists) */
    pl_loop_t *loop;        /**< where it comes back */
    pl_db_kind_t kind;
    int status; /**< result */
    pl_db_done_cb done;
} pl_db_job_t;

/** Set up a job's header: it comes back to `loop` as an event of `ev_kind`, then `done`. */
void pl_db_job_init(pl_db_job_t *j, pl_db_kind_t kind, pl_loop_t *loop, unsigned ev_kind,
                    pl_db_done_cb done);

/** A message to store. Owned by the submitter; its strings live as long as it. */
typedef struct pl_db_msg {
    uint64_t id;
    int64_t seq, ts_ms;
    const char *room, *sender;
    const char *cid; /**< NULL if none */
    const char *text;
    size_t text_len;
} pl_db_msg_t;

/** Store one message. Results: status; for a duplicate (same sender and cid), the stored id and
 *  seq in id/seq. */
typedef struct pl_db_store {
    pl_db_job_t h;
    const pl_db_msg_t *msg;
    uint64_t id;
    int64_t seq;
} pl_db_store_t;

/** One row as queries answer: a stored message, or (restore) a room's seq, a cid, a read
 *  position, a membership. Strings point into the rows' own buffer; unused ones are NULL. */
typedef struct pl_db_row {
    int64_t seq, ts_ms;
    uint64_t id;
    int64_t aux; /**< kind-specific (restore: a cid's seconds left in its day) */
    const char *room, *user, *cid;
    const char *body;
    size_t body_len;
} pl_db_row_t;

/** Rows a query answered. Owned by the job; pl_db_rows_free. */
typedef struct pl_db_rows {
    size_t n;
    pl_db_row_t *row;
    char *strings;
} pl_db_rows_t;

/** Free the rows (safe on zeroed rows). */
void pl_db_rows_free(pl_db_rows_t *r);

/** Messages of `room` with after < seq < before (before 0: no bound), oldest first, at most
 *  `limit`. Results: max_seq (the room's stored maximum); when after >= 0, before 0 and more
 *  than `limit` are missing, `after` is moved up to keep the newest and truncated is set. */
typedef struct pl_db_recover {
    pl_db_job_t h;
    char room[PL_DB_NAME_MAX + 1];
    int64_t after, before;
    int limit;
    int64_t max_seq;
    int truncated;
    pl_db_rows_t rows;
} pl_db_recover_t;

/** A page of `room`'s messages with seq < before (0: the newest), newest first, at most `limit`.
 *  `user` non-empty: only for a member (result `member`). Results: rows, has_more. */
typedef struct pl_db_history {
    pl_db_job_t h;
    char room[PL_DB_NAME_MAX + 1];
    char user[PL_DB_NAME_MAX + 1];
    int64_t before;
    int limit;
    int member;
    int has_more;
    pl_db_rows_t rows;
} pl_db_history_t;

/** What a membership job does. */
typedef enum {
    PL_DB_MEMBER_CHECK, /**< result member: is `user` a member of `room` */
    PL_DB_MEMBER_ADD,   /**< make it one (creating the user and room rows); result changed */
    PL_DB_MEMBER_DEL,   /**< remove it; result changed */
} pl_db_member_op_t;

/** A membership. */
typedef struct pl_db_member {
    pl_db_job_t h;
    pl_db_member_op_t op;
    char room[PL_DB_NAME_MAX + 1];
    char user[PL_DB_NAME_MAX + 1];
    /** ADD only, optional: a second user made a member in the same statement (a direct
     *  conversation's two users, so nobody sees one of them without the other). */
    char user2[PL_DB_NAME_MAX + 1];
    int member, changed;
} pl_db_member_t;

/** Store `user`'s read position `seq` in `room` (it never moves back). */
typedef struct pl_db_read {
    pl_db_job_t h;
    char room[PL_DB_NAME_MAX + 1];
    char user[PL_DB_NAME_MAX + 1];
    int64_t seq;
} pl_db_read_t;

/** `user`'s rooms (direct conversations included), at most PL_DB_ROOMS_MAX, by room id. Results:
 *  rows with room, seq (the room's highest stored seq), aux (the user's read position) and, for a
 *  dm: room, user (the other member). */
typedef struct pl_db_rooms {
    pl_db_job_t h;
    char user[PL_DB_NAME_MAX + 1];
    pl_db_rows_t rows;
} pl_db_rooms_t;

/** Most rooms a pl_db_rooms_t answers with. */
#define PL_DB_ROOMS_MAX 1000

/** Everything Redis needs back after losing its data, or one room of it (svc/dbrestore.c).
 *  Results: each room's
 *  highest stored seq (room, seq), the cids stored within `cid_window_s` (user, cid, id, seq,
 *  ts_ms; aux: seconds left of each one's day), read positions (room, user, seq) and memberships
 *  (room, user). */
typedef struct pl_db_restore {
    pl_db_job_t h;
    int cid_window_s;
    /** "": every room. Else only this room's rows (a cluster seeds rooms one by one). */
    char room[PL_DB_NAME_MAX + 1];
    pl_db_rows_t seqs, cids, reads, members;
} pl_db_restore_t;

/** Free what a restore job's results hold. */
void pl_db_restore_free(pl_db_restore_t *j);

/** The pool. */
typedef struct pl_db pl_db_t;

/**
 * Start `workers` threads connecting to `url` (each connects as it starts and reconnects with
 * backoff; an unreachable database, or one without this build's schema, is not used but is not
 * an error here). Returns NULL on allocation or thread failure.
 */
pl_db_t *pl_db_start(const char *url, int workers, size_t store_limit);

/** Reserve a place for one store job. Returns 0, or -1 if the store queue is full. Any thread. */
int pl_db_reserve(pl_db_t *db);
/** Give back a reservation that will not be submitted. */
void pl_db_release(pl_db_t *db);

/** Queue a job (a store must hold a reservation, which completion releases). Any thread. */
void pl_db_submit(pl_db_t *db, pl_db_job_t *job);

/** 1 if at least one worker is connected. Any thread. */
int pl_db_up(pl_db_t *db);
/** Queued and running store jobs. */
size_t pl_db_store_pending(pl_db_t *db);

/** Why jobs failed, for the metrics. */
typedef enum {
    PL_DB_FAIL_CONNECTION,  /**< the connection was lost running a batch (stores are retried) */
    PL_DB_FAIL_UNAVAILABLE, /**< jobs failed fast: no connection, or the shutdown deadline */
    PL_DB_FAIL_STATEMENT,   /**< jobs whose statement failed (PL_DB_EFAILED) */
    PL_DB_FAIL_CONFLICT,    /**< store jobs whose (room, seq) was taken (PL_DB_ECONFLICT) */
    PL_DB_FAIL_N
} pl_db_fail_t;

/** One worker's counts. Written by that worker only, read by any thread (base/metric.h). */
typedef struct {
    pl_hist_t batch_size;                /**< store jobs per INSERT (pl_hist_sizes) */
    pl_hist_t batch_latency;             /**< a store batch's run, microseconds (pl_hist_seconds) */
    pl_counter_t failures[PL_DB_FAIL_N]; /**< by pl_db_fail_t */
} pl_db_stats_t;

/** The pool's worker threads. */
int pl_db_workers(const pl_db_t *db);
/** Worker `i`'s counts (0 <= i < pl_db_workers). Any thread, for as long as the pool lives. */
const pl_db_stats_t *pl_db_stats(const pl_db_t *db, int i);

/**
 * Stop: let the workers finish what is queued for up to `drain_ms` (store jobs first), fail
 * the rest with PL_DB_EUNAVAILABLE, join the threads and free the pool. Every job is posted
 * back before this returns.
 */
void pl_db_stop(pl_db_t *db, int drain_ms);

/** Append `j` to a list of jobs `*head`..`*tail` (both NULL when empty), linked through `next`:
 *  only for a job not queued in the pool. */
static inline void pl_db_job_append(pl_db_job_t **head, pl_db_job_t **tail, pl_db_job_t *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

#endif
