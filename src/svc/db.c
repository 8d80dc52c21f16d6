/*
 * db: the PostgreSQL worker pool; see the header. Each worker takes either a
 * run of queued store jobs (one INSERT) or one other job, runs it on its own
 * connection (dbsql.c, dbrestore.c) and posts the jobs back to their loops.
 */
#include "parley/svc/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db_int.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/migrate.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* A worker: its thread and its counts, one allocation per worker, so that no two workers' counts
 * share a cache line (each writes only its own). */
typedef struct {
    pl_db_stats_t st;
    struct pl_db *db;
    pthread_t thread;
} worker_t;

struct pl_db {
    char *url;
    int nworkers;
    worker_t **workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pl_db_job_t *head, *tail; /**< queue, guarded by mu */
    int stopping;             /**< guarded by mu */
    int64_t deadline_ms;      /**< guarded by mu: after it, queued jobs fail */
    atomic_size_t store_reserved;
    size_t store_limit;
    atomic_int up;
};

#define mono_ms pl_mono_ms

int pl_db_reserve(pl_db_t *db)
{
    size_t n = atomic_fetch_add(&db->store_reserved, 1);
    if (n >= db->store_limit) {
        atomic_fetch_sub(&db->store_reserved, 1);
        return -1;
    }
    return 0;
}

void pl_db_release(pl_db_t *db)
{
    atomic_fetch_sub(&db->store_reserved, 1);
}

size_t pl_db_store_pending(pl_db_t *db)
{
    return atomic_load(&db->store_reserved);
}

int pl_db_workers(const pl_db_t *db)
{
    return db->nworkers;
}

const pl_db_stats_t *pl_db_stats(const pl_db_t *db, int i)
{
    return &db->workers[i]->st;
}

int pl_db_up(pl_db_t *db)
{
    return atomic_load(&db->up) > 0;
}

void pl_db_submit(pl_db_t *db, pl_db_job_t *j)
{
    j->next = NULL;
    pthread_mutex_lock(&db->mu);
    if (db->tail)
        db->tail->next = j;
    else
        db->head = j;
    db->tail = j;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

/* Post finished jobs back to their loops. */
static void post(pl_db_t *db, pl_db_job_t **jobs, int n)
{
    for (int i = 0; i < n; i++) {
        if (jobs[i]->kind == PL_DB_STORE) pl_db_release(db);
        pl_loop_post(jobs[i]->loop, &jobs[i]->ev);
    }
}

/* Put a batch back at the head of the queue, in order (caller holds nothing). */
static void requeue(pl_db_t *db, pl_db_job_t **jobs, int n)
{
    pthread_mutex_lock(&db->mu);
    for (int i = n - 1; i >= 0; i--) {
        jobs[i]->next = db->head;
        db->head = jobs[i];
        if (!db->tail) db->tail = jobs[i];
    }
    pthread_mutex_unlock(&db->mu);
}

/* Take a run of STORE jobs or one other job. Caller holds mu and the queue is not empty. */
static int take(pl_db_t *db, pl_db_job_t **out)
{
    int n = 0;
    do {
        out[n++] = db->head;
        db->head = db->head->next;
    } while (db->head && out[0]->kind == PL_DB_STORE && db->head->kind == PL_DB_STORE &&
             n < PL_DB_BATCH);
    if (!db->head) db->tail = NULL;
    return n;
}

static void fail(pl_db_job_t **jobs, int n, int status)
{
    for (int i = 0; i < n; i++)
        jobs[i]->status = status;
}

/* A worker's connection: made when the worker starts and remade with backoff while the
 * database is away, jobs or not, so /health knows whether it is there before anyone writes. */
typedef struct {
    PGconn *pg;
    int backoff_ms, logged_down;
    int64_t next_try_ms; /**< mono_ms: when to try again */
} worker_conn_t;

/* 1 if the worker has a usable connection, connecting first if it has none and it is time. */
static int connected(pl_db_t *db, worker_conn_t *w)
{
    if (w->pg && PQstatus(w->pg) == CONNECTION_OK) return 1;
    if (w->pg) {
        PQfinish(w->pg);
        w->pg = NULL;
        atomic_fetch_sub(&db->up, 1);
    }
    if (mono_ms() < w->next_try_ms) return 0;
    PGconn *pg = PQconnectdb(db->url);
    const char *why = NULL;
    if (PQstatus(pg) != CONNECTION_OK)
        why = PQerrorMessage(pg);
    else if (pl_migrate_applied(pg) != 1)
        /* Came up (PARLEY_DB_REQUIRED=0) without this build's schema: not used. */
        why = "the schema is not at this build's version: run `parleyd --migrate`; until then "
              "nothing is stored";
    if (why) {
        if (!w->logged_down) pl_warn("db: cannot use the database: %s", why);
        w->logged_down = 1;
        PQfinish(pg);
        w->next_try_ms = mono_ms() + w->backoff_ms;
        w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
        return 0;
    }
    atomic_fetch_add(&db->up, 1);
    if (w->logged_down) pl_info("db: connected");
    w->logged_down = 0;
    w->backoff_ms = BACKOFF_MIN_MS;
    w->pg = pg;
    return 1;
}

/* Sleep until `until` (mono_ms) in short steps, or until the pool stops. New jobs do not wake it:
 * they do not bring the database back. */
static void sleep_until(pl_db_t *db, int64_t until)
{
    for (;;) {
        int64_t left = until - mono_ms();
        pthread_mutex_lock(&db->mu);
        int stopping = db->stopping;
        pthread_mutex_unlock(&db->mu);
        if (left <= 0) return;
        if (stopping && left > 50) left = 50; /* draining: retry until the deadline, not busily */
        struct timespec ts = {0, (left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
        if (stopping) return;
    }
}

/* Wait on the queue's condition variable until `until_ms` (mono_ms). Caller holds mu. */
static void wait_until(pl_db_t *db, int64_t until_ms)
{
    int64_t left = until_ms - mono_ms();
    if (left <= 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&db->cv, &db->mu, &ts);
}

/* After a run: count the jobs whose statement failed. */
static void count_failed(pl_db_stats_t *st, pl_db_job_t **jobs, int n)
{
    for (int i = 0; i < n; i++)
        if (jobs[i]->status == PL_DB_EFAILED)
            pl_counter_add(&st->failures[PL_DB_FAIL_STATEMENT], 1);
        else if (jobs[i]->status == PL_DB_ECONFLICT)
            pl_counter_add(&st->failures[PL_DB_FAIL_CONFLICT], 1);
}

static void *worker_main(void *arg)
{
    worker_t *wk = arg;
    pl_db_t *db = wk->db;
    pl_db_stats_t *st = &wk->st;
    pl_log_set_thread("db");
    worker_conn_t w = {NULL, BACKOFF_MIN_MS, 0, 0};
    pl_db_job_t *jobs[PL_DB_BATCH];
    connected(db, &w);
    for (;;) {
        pthread_mutex_lock(&db->mu);
        while (!db->head && !db->stopping) {
            if (w.pg) {
                pthread_cond_wait(&db->cv, &db->mu);
            } else if (mono_ms() < w.next_try_ms) {
                wait_until(db, w.next_try_ms);
            } else {
                pthread_mutex_unlock(&db->mu);
                connected(db, &w);
                pthread_mutex_lock(&db->mu);
            }
        }
        if (!db->head) {
            pthread_mutex_unlock(&db->mu);
            break;
        }
        int n = take(db, jobs);
        int expired = db->stopping && mono_ms() > db->deadline_ms;
        pthread_mutex_unlock(&db->mu);
        if (expired) {
            pl_counter_add(&st->failures[PL_DB_FAIL_UNAVAILABLE], (uint64_t)n);
            fail(jobs, n, PL_DB_EUNAVAILABLE);
            post(db, jobs, n);
            continue;
        }
        if (!connected(db, &w)) {
            if (jobs[0]->kind == PL_DB_STORE) {
                requeue(db, jobs, n); /* acks wait; the messages are safe in the queue */
                sleep_until(db, w.next_try_ms);
            } else {
                pl_counter_add(&st->failures[PL_DB_FAIL_UNAVAILABLE], (uint64_t)n);
                fail(jobs, n, PL_DB_EUNAVAILABLE); /* queries fail fast */
                post(db, jobs, n);
            }
            continue;
        }
        int store = jobs[0]->kind == PL_DB_STORE;
        uint64_t t0 = store ? pl_mono_us() : 0; /* the batch latency */
        if (pl__db_run(w.pg, jobs, n) != 0) {
            pl_counter_add(&st->failures[PL_DB_FAIL_CONNECTION], 1);
            pl_warn("db: connection lost: %s", PQerrorMessage(w.pg));
            if (jobs[0]->kind == PL_DB_STORE)
                requeue(db, jobs, n);
            else {
                fail(jobs, n, PL_DB_EUNAVAILABLE);
                post(db, jobs, n);
            }
            continue; /* connected() notices and reconnects */
        }
        if (store) {
            pl_hist_observe(&st->batch_size, &pl_hist_sizes, (uint64_t)n);
            pl_hist_observe(&st->batch_latency, &pl_hist_seconds, pl_mono_us() - t0);
        }
        count_failed(st, jobs, n);
        post(db, jobs, n);
    }
    if (w.pg) {
        PQfinish(w.pg);
        atomic_fetch_sub(&db->up, 1);
    }
    return NULL;
}

pl_db_t *pl_db_start(const char *url, int workers, size_t store_limit)
{
    pl_db_t *db = calloc(1, sizeof *db);
    if (!db) return NULL;
    db->url = strdup(url);
    db->nworkers = workers;
    db->store_limit = store_limit;
    atomic_init(&db->store_reserved, 0);
    atomic_init(&db->up, 0);
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    db->workers = calloc((size_t)workers, sizeof *db->workers);
    if (!db->url || !db->workers) return NULL;
    for (int i = 0; i < workers; i++) {
        /* 64-byte aligned and a multiple of 64 long: a line of its own for each worker. */
        size_t size = (sizeof(worker_t) + 63) & ~(size_t)63;
        worker_t *wk = aligned_alloc(64, size);
        if (wk) {
            memset(wk, 0, size);
            wk->db = db;
        }
        if (!wk || pthread_create(&wk->thread, NULL, worker_main, wk) != 0) {
            free(wk);
            db->nworkers = i;
            pl_db_stop(db, 0);
            return NULL;
        }
        db->workers[i] = wk;
    }
    return db;
}

void pl_db_stop(pl_db_t *db, int drain_ms)
{
    pthread_mutex_lock(&db->mu);
    db->stopping = 1;
    db->deadline_ms = mono_ms() + drain_ms;
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    for (int i = 0; i < db->nworkers; i++) {
        pthread_join(db->workers[i]->thread, NULL);
        free(db->workers[i]);
    }
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv);
    free(db->workers);
    free(db->url);
    free(db);
}
