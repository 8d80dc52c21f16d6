/*
 * restore: Redis' seqs, recent cids, read positions and memberships back from
 * PostgreSQL; see the header. The rows are written as one pipeline on the
 * shard's Redis connection, which keeps their order: cids before seqs (the
 * publish script skips its readiness check for a room whose seq key exists,
 * so by then that room's dedup records must be back), parley:ready last.
 */
#include "parley/app/kv.h"
#include "parley/app/restore.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/publish.h"
#include "parley/app/server.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/db.h"
#include "parley/svc/script.h"

/* cids younger than this are put back into Redis (their records live a day). */
#define RESTORE_CID_WINDOW_S 3600

/* A command placed by its key, argv[1]. */
static int cmd(pl_shard_t *s, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return pl_kv_command(s, argv[1], lens[1], NULL, NULL, argc, argv, lens);
}

/* Write what PostgreSQL answered; -1 if the Redis connection went away meanwhile. */
static int write_back(pl_shard_t *s, const pl_db_restore_t *j)
{
    const char *pfx = s->srv->cfg.redis_prefix;
    pl_buf_t *k = &s->kbuf[0], *v = &s->kbuf[1], *k2 = &s->kbuf[2];
    int rc = 0;
    char ttl[24];
    for (size_t i = 0; rc == 0 && i < j->cids.n; i++) {
        const pl_db_row_t *r = &j->cids.row[i];
        pl_key_cid(k, r->room, strlen(r->room), r->user, r->cid, strlen(r->cid));
        pl_buf_reset(v);
        pl_buf_printf(v, "%llu:%lld:%lld", (unsigned long long)r->id, (long long)r->seq,
                      (long long)r->ts_ms);
        snprintf(ttl, sizeof ttl, "%lld", (long long)r->aux);
        const char *argv[6] = {"SET", k->data, v->data, "NX", "EX", ttl};
        rc = cmd(s, 6, argv);
    }
    for (size_t i = 0; rc == 0 && i < j->seqs.n; i++) {
        const pl_db_row_t *r = &j->seqs.row[i];
        pl_key_seq(k, r->room, strlen(r->room));
        pl_buf_reset(v);
        pl_buf_printf(v, "%lld", (long long)r->seq);
        const char *argv[4] = {"SET", k->data, v->data, "NX"};
        rc = cmd(s, 4, argv);
    }
    for (size_t i = 0; rc == 0 && i < j->reads.n; i++) {
        const pl_db_row_t *r = &j->reads.row[i];
        pl_key_read(k, pfx, r->room, strlen(r->room));
        pl_buf_reset(v);
        pl_buf_printf(v, "%lld", (long long)r->seq);
        const char *argv[4] = {"HSET", k->data, r->user, v->data};
        rc = cmd(s, 4, argv);
    }
    /* The membership mirror presence events are routed by (chat.c). */
    for (size_t i = 0; rc == 0 && i < j->members.n; i++) {
        const pl_db_row_t *r = &j->members.row[i];
        pl_buf_reset(k);
        pl_buf_printf(k, "%suser_rooms:%s", pfx, r->user);
        pl_buf_reset(k2);
        pl_buf_printf(k2, "%sroom_participants:%s", pfx, r->room);
        const char *a1[3] = {"SADD", k->data, r->room};
        const char *a2[3] = {"SADD", k2->data, r->user};
        rc = cmd(s, 3, a1) || cmd(s, 3, a2);
    }
    const char *ready[3] = {"SET", PL_KEY_READY, "1"};
    return rc == 0 ? cmd(s, 3, ready) : rc;
}

static void restore_done(pl_db_job_t *job)
{
    pl_db_restore_t *j = (pl_db_restore_t *)job;
    pl_shard_t *s = pl_shard_of_loop(job->loop);
    if (job->status != PL_DB_OK)
        pl_warn("restore: the database could not answer; retrying");
    else if (write_back(s, j) != 0)
        pl_warn("restore: redis went away while it was written back; retrying");
    else
        pl_info("restore: %zu room seq(s), %zu recent cid(s), %zu read position(s) and %zu "
                "membership(s) written back into redis",
                j->seqs.n, j->cids.n, j->reads.n, j->members.n);
    pl_db_restore_free(j);
    free(j);
    atomic_store(&s->srv->restoring, 0);
}

static void seed_room(pl_shard_t *s, const char *room);

void pl_restore_need(pl_shard_t *s, const char *room)
{
    pl_server_t *srv = s->srv;
    if (pl_kv_cluster(s)) {
        seed_room(s, room);
        return;
    }
    if (atomic_exchange(&srv->restoring, 1)) return;
    pl_db_restore_t *j = srv->db ? calloc(1, sizeof *j) : NULL;
    if (j) {
        static _Atomic int64_t last_log;
        int64_t now = pl_now_ms();
        if (now - atomic_exchange(&last_log, now) > 5000)
            pl_info("redis has no %s (it is new, or lost its data): restoring room seqs, recent "
                    "cids, read positions and memberships from the database",
                    PL_KEY_READY);
        pl_db_job_init(&j->h, PL_DB_RESTORE, s->loop, PL_EV_DB, restore_done);
        j->cid_window_s = RESTORE_CID_WINDOW_S;
        pl_db_submit(srv->db, &j->h);
        return;
    }
    /* No database: nothing to restore; a fresh Redis is simply ready. */
    const char *argv[3] = {"SET", PL_KEY_READY, "1"};
    cmd(s, 3, argv);
    atomic_store(&srv->restoring, 0);
}

/* ---- a cluster: one room at a time ---- */

/* How long a seed that failed waits before it is tried again, ms. */
#define RESTORE_RETRY_MS 500

/* One room being seeded on this shard. The job comes first: its done callback gets it. */
typedef struct pl_seed {
    pl_db_restore_t j;
    struct pl_seed *next;
    pl_shard_t *s;
    int writes;        /* room-slot writes not yet answered */
    int failed;        /* one of them was not OK */
    int64_t failed_ms; /* 0 while under way; else when it failed (it waits to be started again) */
} pl_seed_t;

static void seed_start(pl_seed_t *d);

static void seed_unlist(pl_seed_t *d)
{
    for (pl_seed_t **pp = &d->s->seeding; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    pl_db_restore_free(&d->j);
    free(d);
}

static void seed_failed(pl_seed_t *d, const char *why)
{
    pl_warn("seeding %s: %s; trying again", d->j.room, why);
    pl_db_restore_free(&d->j);
    memset(&d->j.seqs, 0, sizeof d->j.seqs);
    memset(&d->j.cids, 0, sizeof d->j.cids);
    memset(&d->j.reads, 0, sizeof d->j.reads);
    memset(&d->j.members, 0, sizeof d->j.members);
    d->failed_ms = pl_now_ms();
}

static void ready_written(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_seed_t *d = privdata;
    redisReply *r = reply;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        seed_failed(d, r ? r->str : "redis went away");
        return;
    }
    pl_shard_t *s = d->s;
    seed_unlist(d);
    pl_publish_ready_check(s);
}

/* One room-slot write less to wait for: once none is left, and all were taken, the ready key
 * goes last. */
static void seed_release(pl_seed_t *d)
{
    if (--d->writes > 0) return;
    if (d->failed) {
        seed_failed(d, "redis did not take every write");
        return;
    }
    pl_shard_t *s = d->s;
    pl_key_ready(&s->kbuf[0], d->j.room, strlen(d->j.room));
    const char *argv[3] = {"SET", s->kbuf[0].data, "1"};
    size_t lens[3] = {3, s->kbuf[0].len, 1};
    if (pl_kv_command(s, argv[1], lens[1], ready_written, d, 3, argv, lens) != 0)
        seed_failed(d, "redis unreachable");
}

static void seed_wrote(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    pl_seed_t *d = privdata;
    redisReply *r = reply;
    if (!r || r->type == REDIS_REPLY_ERROR) d->failed = 1;
    seed_release(d);
}

/* A write into the room's slot, counted. */
static void seed_cmd(pl_seed_t *d, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (pl_kv_command(d->s, argv[1], lens[1], seed_wrote, d, argc, argv, lens) == 0)
        d->writes++;
    else
        d->failed = 1;
}

/* Write the room's rows, in the publish script's order (cids, then the seq), then the ready
 * key once every write is answered: a redirection or a retry in between cannot reorder them. */
static void seed_write(pl_seed_t *d)
{
    pl_shard_t *s = d->s;
    const char *pfx = s->srv->cfg.redis_prefix, *room = d->j.room;
    size_t room_len = strlen(room);
    pl_buf_t *k = &s->kbuf[0], *v = &s->kbuf[1];
    char ttl[24];
    d->writes = 1; /* held until every write is sent */
    d->failed = 0;
    for (size_t i = 0; i < d->j.cids.n; i++) {
        const pl_db_row_t *r = &d->j.cids.row[i];
        pl_key_cid(k, room, room_len, r->user, r->cid, strlen(r->cid));
        pl_buf_reset(v);
        pl_buf_printf(v, "%llu:%lld:%lld", (unsigned long long)r->id, (long long)r->seq,
                      (long long)r->ts_ms);
        snprintf(ttl, sizeof ttl, "%lld", (long long)r->aux);
        const char *argv[6] = {"SET", k->data, v->data, "NX", "EX", ttl};
        seed_cmd(d, 6, argv);
    }
    /* A room without messages gets seq 0: its key then exists, as the publish script expects
     * of a ready room. */
    pl_key_seq(k, room, room_len);
    pl_buf_reset(v);
    pl_buf_printf(v, "%lld", d->j.seqs.n ? (long long)d->j.seqs.row[0].seq : 0LL);
    const char *seq[4] = {"SET", k->data, v->data, "NX"};
    seed_cmd(d, 4, seq);
    for (size_t i = 0; i < d->j.reads.n; i++) {
        const pl_db_row_t *r = &d->j.reads.row[i];
        pl_key_read(k, pfx, room, room_len);
        pl_buf_reset(v);
        pl_buf_printf(v, "%lld", (long long)r->seq);
        const char *argv[4] = {"HSET", k->data, r->user, v->data};
        seed_cmd(d, 4, argv);
    }
    for (size_t i = 0; i < d->j.members.n; i++) {
        const pl_db_row_t *r = &d->j.members.row[i];
        pl_key_participants(k, pfx, room, room_len);
        const char *argv[3] = {"SADD", k->data, r->user};
        seed_cmd(d, 3, argv);
        /* The user's side of the mirror lives in the user's slot: not a step of the room's
         * readiness (presence events only), so not waited for. */
        pl_key_user(k, pfx, r->user, "rooms");
        const char *ur[3] = {"SADD", k->data, room};
        size_t lens[3] = {4, k->len, room_len};
        pl_kv_command(s, k->data, k->len, NULL, NULL, 3, ur, lens);
    }
    seed_release(d); /* the hold taken above */
}

static void seed_done(pl_db_job_t *job)
{
    pl_seed_t *d = (pl_seed_t *)job;
    if (job->status != PL_DB_OK) {
        seed_failed(d, "the database could not answer");
        return;
    }
    seed_write(d);
}

static void seed_start(pl_seed_t *d)
{
    pl_shard_t *s = d->s;
    d->failed_ms = 0;
    if (!s->srv->db) {
        seed_write(d); /* nothing to restore: the room starts at seq 0 */
        return;
    }
    pl_db_job_init(&d->j.h, PL_DB_RESTORE, s->loop, PL_EV_DB, seed_done);
    d->j.cid_window_s = RESTORE_CID_WINDOW_S;
    pl_db_submit(s->srv->db, &d->j.h);
}

static void seed_room(pl_shard_t *s, const char *room)
{
    for (pl_seed_t *d = s->seeding; d; d = d->next)
        if (strcmp(d->j.room, room) == 0) return;
    pl_seed_t *d = calloc(1, sizeof *d);
    if (!d) {
        pl_error("seeding %s: out of memory", room);
        return;
    }
    d->s = s;
    snprintf(d->j.room, sizeof d->j.room, "%s", room);
    d->next = s->seeding;
    s->seeding = d;
    seed_start(d);
}

int pl_restore_seeding(pl_shard_t *s)
{
    int64_t now = pl_now_ms();
    for (pl_seed_t *d = s->seeding; d; d = d->next)
        if (d->failed_ms && now - d->failed_ms >= RESTORE_RETRY_MS) seed_start(d);
    return s->seeding != NULL;
}

void pl_restore_free(pl_shard_t *s)
{
    while (s->seeding) {
        pl_seed_t *d = s->seeding;
        s->seeding = d->next;
        pl_db_restore_free(&d->j);
        free(d);
    }
}
