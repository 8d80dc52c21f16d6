/*
 * db: the PostgreSQL worker pool. Shards hand it jobs; M worker threads,
 * each with its own libpq connection, run them and post each finished job
 * back to the shard that submitted it, whose loop then calls the job's
 * `done` callback. Delivery never waits on the database: message jobs are
 * submitted after the message is already on its way to its subscribers.
 *
 * Message stores are written in batches (one multi-row INSERT per
 * transaction, as many as are queued up to PL_DB_BATCH), idempotently (ON
 * CONFLICT DO NOTHING, then the stored row answers for the duplicate). A
 * batch that fails is retried with backoff for as long as it takes; while
 * PostgreSQL is down the store queue only grows, and it is bounded: callers
 * reserve a place with pl_db_reserve before accepting a message, and refuse
 * the message when there is none.
 *
 * Ownership: a job is allocated by pl_db_job_new and owned by its submitter
 * until pl_db_submit, by the pool until it is posted back, and then by the
 * `done` callback, which must pl_db_job_free it (or reuse it). The queue is a
 * mutex and condition variable: the consumers are blocking threads anyway.
 */
#ifndef PARLEY_DB_H
#define PARLEY_DB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "parley/base/buf.h"
#include "parley/net/frame.h"
#include "parley/base/jwt.h"
#include "parley/app/wire.h"
#include "parley/svc/redis.h"
#include "parley/app/room.h"
#include "parley/app/shard.h"

/** Most message rows in one INSERT. */
#define PL_DB_BATCH 256

/** What a job asks of the database. */
typedef enum {
    PL_DB_STORE,   /**< insert a message; result: its id and seq as stored */
    PL_DB_RESTORE, /**< Redis lost its data: put back every room's seq and recent cids, then
                      parley:ready */
    PL_DB_RECOVER, /**< messages with after < seq < before (before 0: no bound), ascending, up to
                      limit -> frames */
    PL_DB_HISTORY, /**< HTTP history page for `user` (members only; "": anyone) -> http_status,
                      body */
    PL_DB_JOIN,    /**< open rooms: record membership; closed: check it (status PL_DB_EFORBIDDEN) */
    PL_DB_MEMBER_PUT, /**< add `user` to `room` -> http_status, body */
    PL_DB_MEMBER_DEL, /**< remove -> http_status, body */
    PL_DB_READ,       /**< store `user`'s read position `seq` in `room` (never moves back) */
} pl_db_kind_t;

/** Job outcomes (job->status). */
enum {
    PL_DB_OK = 0,
    PL_DB_EUNAVAILABLE = -1, /**< the database could not be reached (query jobs fail fast) */
    PL_DB_EFORBIDDEN = -2,   /**< JOIN: not a member of a closed room */
    PL_DB_ECONFLICT = -3,    /**< STORE: (room, seq) taken by another message; not stored */
    PL_DB_EFAILED = -4,      /**< the statement failed; logged */
};

struct pl_db_job;
/** Completion, called on the submitting shard's thread. */
typedef void (*pl_db_done_cb)(struct pl_db_job *job);

/** One unit of work. Fields are inputs unless marked as results. */
typedef struct pl_db_job {
    struct pl_db_job *next; /**< pool queue / batch link */
    pl_event_t ev;          /**< the shard inbox node it comes back on */
    pl_db_kind_t kind;
    pl_shard_t *shard;
    pl_db_done_cb done;
    void *ctx;    /**< the submitter's (a connection, held with replies_pending) */
    void *extra;  /**< the submitter's; the pool never touches it */
    int status;   /**< result */
    uint32_t tag; /**< the submitter's */
    /* A message, and what STORE/JOIN/HISTORY are about. */
    uint64_t id;
    int64_t seq, ts_ms;
    char room[PL_ROOM_MAX + 1];
    char user[PL_JWT_SUB_MAX + 1];
    char cid[PL_CID_MAX + 1];    /**< "" if none */
    char to[PL_JWT_SUB_MAX + 1]; /**< a direct message's recipient, "" for a room message */
    char *text; /**< NUL-terminated; inside the job (pl_db_job_new_text), else owned */
    size_t text_len;
    /* Queries. */
    int64_t after, before;
    int limit;
    int open_rooms;
    /* Results. */
    int64_t result_seq;
    int truncated; /**< RECOVER: more were missing than `limit`; `after` was moved up */
    int http_status;
    pl_buf_t body;
    pl_frame_t **frames; /**< RECOVER: owned references */
    size_t nframes;
} pl_db_job_t;

/** The pool. */
typedef struct pl_db pl_db_t;

/**
 * Start `workers` threads connecting to `url`. They connect lazily and
 * reconnect with backoff; an unreachable database is not an error here (nor
 * one without this build's schema, which is not used until migrated). The
 * Redis address (borrowed: it must outlive the pool) is for PL_DB_RESTORE,
 * which writes there directly.
 * Returns NULL on allocation or thread failure.
 */
pl_db_t *pl_db_start(const char *url, int workers, size_t store_limit, const pl_redis_addr_t *redis,
                     const char *redis_prefix);

/** Reserve a place for one STORE job. Returns 0, or -1 if the store queue is full. Any thread. */
int pl_db_reserve(pl_db_t *db);
/** Give back a reservation that will not be submitted. */
void pl_db_release(pl_db_t *db);

/** A zeroed job of `kind` that will come back to `shard` and `done`. NULL on OOM. */
pl_db_job_t *pl_db_job_new(pl_db_kind_t kind, pl_shard_t *shard, pl_db_done_cb done, void *ctx);
/** pl_db_job_new with a copy of `text[0..text_len)` (NUL-terminated) in the job's own
 *  allocation, as `text`. */
pl_db_job_t *pl_db_job_new_text(pl_db_kind_t kind, pl_shard_t *shard, pl_db_done_cb done, void *ctx,
                                const char *text, size_t text_len);
/** Free a job and its results. */
void pl_db_job_free(pl_db_job_t *job);

/** Queue a job (a STORE must hold a reservation, which completion releases). Any thread. */
void pl_db_submit(pl_db_t *db, pl_db_job_t *job);

/** 1 if at least one worker is connected. Any thread. */
int pl_db_up(pl_db_t *db);
/** Queued and running STORE jobs. */
size_t pl_db_store_pending(pl_db_t *db);

/**
 * Stop: let the workers finish what is queued for up to `drain_ms` (store
 * jobs first), fail the rest with PL_DB_EUNAVAILABLE, join the threads and
 * free the pool. Every job is posted back before this returns.
 */
void pl_db_stop(pl_db_t *db, int drain_ms);

/** Append `j` to a shard's list of jobs `*head`..`*tail` (both NULL when empty), linked through
 *  `next`: only for a job not queued in the pool. */
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
