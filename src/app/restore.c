/*
 * restore: Redis' seqs, recent cids, read positions and memberships back from
 * PostgreSQL; see the header. The rows are written as one pipeline on the
 * shard's Redis connection, which keeps their order: cids before seqs (the
 * publish script skips its readiness check for a room whose seq key exists,
 * so by then that room's dedup records must be back), parley:ready last.
 */
#include "parley/app/restore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/server.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/db.h"
#include "parley/svc/script.h"

/* cids younger than this are put back into Redis (their records live a day). */
#define RESTORE_CID_WINDOW_S 3600

static int cmd(pl_shard_t *s, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return pl_redis_command(&s->redis, NULL, NULL, argc, argv, lens);
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

void pl_restore_need(pl_shard_t *s)
{
    pl_server_t *srv = s->srv;
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
