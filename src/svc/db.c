/*
 * db: PostgreSQL worker pool; see the header. Each worker takes either a run
 * of queued STORE jobs (one INSERT) or one other job, runs it on its own
 * connection and posts the jobs back to their shards.
 */
#include "parley/svc/db.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parley/base/log.h"
#include "parley/svc/migrate.h"
#include "parley/svc/script.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct pl_db {
    char *url;
    int nworkers;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pl_db_job_t *head, *tail; /**< queue, guarded by mu */
    int stopping;             /**< guarded by mu */
    int64_t deadline_ms;      /**< guarded by mu: after it, queued jobs fail */
    atomic_size_t store_reserved;
    size_t store_limit;
    atomic_int up;
    const pl_redis_addr_t *redis; /**< for PL_DB_RESTORE; borrowed from the server */
    char *redis_prefix;
};

/* cids younger than this are put back into Redis by a restore. */
#define RESTORE_CID_WINDOW "1 hour"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pl_db_job_t *pl_db_job_new(pl_db_kind_t kind, pl_shard_t *shard, pl_db_done_cb done, void *ctx)
{
    return pl_db_job_new_text(kind, shard, done, ctx, NULL, 0);
}

pl_db_job_t *pl_db_job_new_text(pl_db_kind_t kind, pl_shard_t *shard, pl_db_done_cb done, void *ctx,
                                const char *text, size_t text_len)
{
    /* The text lives after the job: one allocation per message. */
    pl_db_job_t *j = calloc(1, sizeof *j + (text ? text_len + 1 : 0));
    if (!j) return NULL;
    if (text) {
        j->text = (char *)(j + 1);
        memcpy(j->text, text, text_len);
        j->text[text_len] = '\0';
        j->text_len = text_len;
    }
    j->kind = kind;
    j->shard = shard;
    j->done = done;
    j->ctx = ctx;
    j->ev.kind = PL_EV_DB;
    j->ev.job = j;
    return j;
}

void pl_db_job_free(pl_db_job_t *j)
{
    if (!j) return;
    if (j->text != (char *)(j + 1)) free(j->text);
    pl_buf_free(&j->body);
    for (size_t i = 0; i < j->nframes; i++)
        pl_frame_unref(j->frames[i]);
    free(j->frames);
    free(j);
}

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

/* Post finished jobs back to their shards. */
static void post(pl_db_t *db, pl_db_job_t **jobs, int n)
{
    for (int i = 0; i < n; i++) {
        if (jobs[i]->kind == PL_DB_STORE) pl_db_release(db);
        if (pl_shard_post_nowake(jobs[i]->shard, &jobs[i]->ev)) pl_shard_wake(jobs[i]->shard);
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

static PGresult *query(PGconn *pg, const char *sql, int n, const char *const *params)
{
    return PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
}

/* 1 if a failed result means the connection is gone (retry elsewhere), 0 if the statement failed.
 */
static int conn_lost(PGconn *pg)
{
    return PQstatus(pg) != CONNECTION_OK;
}

/*
 * A statement failed (r is cleared here). Returns -1 if the connection is gone
 * (nothing is decided: the caller's job is retried or failed elsewhere), else
 * logs it once and marks the job failed, returning 0.
 */
static int stmt_failed(PGconn *pg, PGresult *r, pl_db_job_t *j, const char *what)
{
    PQclear(r);
    if (conn_lost(pg)) return -1;
    pl_error("db: %s (room %s): %s", what, j->room, PQerrorMessage(pg));
    j->status = PL_DB_EFAILED;
    return 0;
}

static void json_message(pl_buf_t *b, PGresult *r, int row, const char *room)
{
    /* Columns: seq, id, sender, cid, body, ts_ms. Byte-identical to the live frame. */
    pl_proto_message_head(b, strtoll(PQgetvalue(r, row, 0), NULL, 10));
    const char *cid = PQgetisnull(r, row, 3) ? NULL : PQgetvalue(r, row, 3);
    pl_proto_message_tail(b, room, strlen(room), strtoull(PQgetvalue(r, row, 1), NULL, 10),
                          PQgetvalue(r, row, 2), PQgetvalue(r, row, 4),
                          (size_t)PQgetlength(r, row, 4), strtoll(PQgetvalue(r, row, 5), NULL, 10),
                          cid, cid ? strlen(cid) : 0);
}

/* STORE: one multi-row INSERT; rows that were already there answer for their duplicates. */
static int run_store(PGconn *pg, pl_db_job_t **jobs, int n)
{
    enum { COLS = 7 };
    static _Thread_local char nums[PL_DB_BATCH][3][24];
    static _Thread_local const char *params[PL_DB_BATCH * COLS];
    pl_buf_t sql = {0};
    pl_buf_adds(&sql, "INSERT INTO messages (id, room_id, seq, sender, cid, body, ts_ms) VALUES ");
    for (int i = 0; i < n; i++) {
        pl_db_job_t *j = jobs[i];
        snprintf(nums[i][0], 24, "%llu", (unsigned long long)j->id);
        snprintf(nums[i][1], 24, "%lld", (long long)j->seq);
        snprintf(nums[i][2], 24, "%lld", (long long)j->ts_ms);
        const char **p = params + i * COLS;
        p[0] = nums[i][0];
        p[1] = j->room;
        p[2] = nums[i][1];
        p[3] = j->user;
        p[4] = j->cid[0] ? j->cid : NULL;
        p[5] = j->text;
        p[6] = nums[i][2];
        int k = i * COLS;
        pl_buf_printf(&sql, "%s($%d::bigint,$%d,$%d::bigint,$%d,$%d,$%d,$%d::bigint)", i ? "," : "",
                      k + 1, k + 2, k + 3, k + 4, k + 5, k + 6, k + 7);
    }
    pl_buf_adds(&sql, " ON CONFLICT DO NOTHING RETURNING id");
    PGresult *r = query(pg, sql.data, n * COLS, params);
    pl_buf_free(&sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int lost = conn_lost(pg);
        pl_error("db: storing %d message(s): %s", n, PQerrorMessage(pg));
        PQclear(r);
        if (lost) return -1;
        for (int i = 0; i < n; i++)
            jobs[i]->status = PL_DB_EFAILED;
        return 0;
    }
    /* Inserted rows are done (PL_DB_OK); the rest are looked up below. */
    int inserted = PQntuples(r);
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int row = 0; row < inserted && !found; row++)
            found = strtoull(PQgetvalue(r, row, 0), NULL, 10) == jobs[i]->id;
        jobs[i]->status = found ? PL_DB_OK : PL_DB_ECONFLICT;
    }
    PQclear(r);
    for (int i = 0; i < n; i++) {
        pl_db_job_t *j = jobs[i];
        if (j->status == PL_DB_OK) continue;
        /* A duplicate: answer with the row stored for this sender and cid, or this very id. */
        const char *p[3] = {j->user, j->cid, nums[i][0]};
        PGresult *d =
            query(pg,
                  "SELECT id, seq FROM messages WHERE (sender = $1 AND cid = $2 AND $2 <> '')"
                  " OR id = $3::bigint LIMIT 1",
                  3, p);
        if (PQresultStatus(d) != PGRES_TUPLES_OK) {
            int lost = conn_lost(pg);
            PQclear(d);
            if (lost) return -1;
            j->status = PL_DB_EFAILED;
            continue;
        }
        if (PQntuples(d) == 1) {
            j->id = strtoull(PQgetvalue(d, 0, 0), NULL, 10);
            j->seq = strtoll(PQgetvalue(d, 0, 1), NULL, 10);
            j->status = PL_DB_OK;
        } else {
            pl_error("db: room %s seq %lld is taken by another message; message %llu not stored",
                     j->room, (long long)j->seq, (unsigned long long)j->id);
            j->status = PL_DB_ECONFLICT;
        }
        PQclear(d);
    }
    return 0;
}

static int run_max_seq(PGconn *pg, pl_db_job_t *j)
{
    const char *p[1] = {j->room};
    PGresult *r = query(pg, "SELECT COALESCE(max(seq), 0) FROM messages WHERE room_id = $1", 1, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return stmt_failed(pg, r, j, "max seq");
    j->result_seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

static int run_recover(PGconn *pg, pl_db_job_t *j)
{
    if (run_max_seq(pg, j) != 0 || j->status) return j->status ? 0 : -1;
    /* Open-ended catch-up: never more than `limit`; the newest ones are the ones to keep. */
    if (j->before == 0 && j->after >= 0 && j->result_seq - j->after > j->limit) {
        j->after = j->result_seq - j->limit;
        j->truncated = 1;
    }
    char after[24], before[24], limit[16];
    snprintf(after, sizeof after, "%lld", (long long)j->after);
    snprintf(before, sizeof before, "%lld", (long long)j->before);
    snprintf(limit, sizeof limit, "%d", j->limit);
    const char *p[4] = {j->room, after, before, limit};
    PGresult *r =
        query(pg,
              "SELECT seq, id, sender, cid, body, ts_ms FROM messages"
              " WHERE room_id = $1 AND seq > $2::bigint AND ($3::bigint = 0 OR seq < $3::bigint)"
              " ORDER BY seq LIMIT $4::int",
              4, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return stmt_failed(pg, r, j, "recovering");
    int rows = PQntuples(r);
    j->frames = rows ? calloc((size_t)rows, sizeof *j->frames) : NULL;
    pl_buf_t b = {0};
    for (int i = 0; i < rows && j->frames; i++) {
        pl_buf_reset(&b);
        json_message(&b, r, i, j->room);
        pl_frame_t *f = pl_frame_text(b.data, b.len);
        if (!f) break;
        j->frames[j->nframes++] = f;
    }
    pl_buf_free(&b);
    PQclear(r);
    return 0;
}

static int is_member(PGconn *pg, pl_db_job_t *j, int *member)
{
    const char *p[2] = {j->room, j->user};
    PGresult *r = query(pg, "SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2", 2, p);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (ok)
        *member = PQntuples(r) > 0;
    else if (!conn_lost(pg))
        pl_error("db: membership %s/%s: %s", j->room, j->user, PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

static void http_json(pl_db_job_t *j, int status, const char *code, const char *msg)
{
    j->http_status = status;
    pl_buf_reset(&j->body);
    pl_buf_adds(&j->body, "{\"error\":\"");
    pl_buf_adds(&j->body, code);
    pl_buf_adds(&j->body, "\",\"message\":");
    pl_buf_json_str(&j->body, msg, strlen(msg));
    pl_buf_adds(&j->body, "}");
}

static int run_history(PGconn *pg, pl_db_job_t *j)
{
    int member = !j->user[0]; /* no user: a server-side caller with the API key */
    if (!member && is_member(pg, j, &member) != 0)
        return conn_lost(pg) ? -1 : (j->status = PL_DB_EFAILED, 0);
    if (!member) {
        http_json(j, 403, "forbidden", "not a member of this room");
        return 0;
    }
    char before[24], limit[16];
    snprintf(before, sizeof before, "%lld", (long long)j->before);
    snprintf(limit, sizeof limit, "%d", j->limit + 1); /* one more tells whether there is more */
    const char *p[3] = {j->room, before, limit};
    PGresult *r = query(pg,
                        "SELECT seq, id, sender, cid, body, ts_ms FROM messages"
                        " WHERE room_id = $1 AND ($2::bigint = 0 OR seq < $2::bigint)"
                        " ORDER BY seq DESC LIMIT $3::int",
                        3, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return stmt_failed(pg, r, j, "history");
    int rows = PQntuples(r), more = rows > j->limit;
    if (more) rows = j->limit;
    pl_buf_t *b = &j->body;
    pl_buf_reset(b);
    pl_buf_adds(b, "{\"room\":");
    pl_buf_json_str(b, j->room, strlen(j->room));
    pl_buf_adds(b, ",\"messages\":[");
    for (int i = 0; i < rows; i++) {
        if (i) pl_buf_add(b, ",", 1);
        json_message(b, r, i, j->room);
    }
    pl_buf_printf(b, "],\"has_more\":%s", more ? "true" : "false");
    if (more) pl_buf_printf(b, ",\"next_before\":%s", PQgetvalue(r, rows - 1, 0));
    pl_buf_adds(b, "}");
    j->http_status = 200;
    PQclear(r);
    return 0;
}

static const char upsert_member[] =
    "WITH u AS (INSERT INTO users (id) VALUES ($2) ON CONFLICT DO NOTHING),"
    " r AS (INSERT INTO rooms (id) VALUES ($1) ON CONFLICT DO NOTHING)"
    " INSERT INTO room_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";

static int run_read(PGconn *pg, pl_db_job_t *j)
{
    char seq[24];
    snprintf(seq, sizeof seq, "%lld", (long long)j->seq);
    const char *p[3] = {j->room, j->user, seq};
    PGresult *r = query(
        pg,
        "INSERT INTO message_status (room_id, user_id, last_read_seq) VALUES ($1, $2, $3::bigint)"
        " ON CONFLICT (room_id, user_id) DO UPDATE SET last_read_seq ="
        " GREATEST(message_status.last_read_seq, EXCLUDED.last_read_seq), updated_at = now()",
        3, p);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return stmt_failed(pg, r, j, "read position");
    PQclear(r);
    return 0;
}

static int run_member(PGconn *pg, pl_db_job_t *j)
{
    const char *p[2] = {j->room, j->user};
    int member = 0;
    if (j->kind == PL_DB_JOIN && !j->open_rooms) {
        if (is_member(pg, j, &member) != 0)
            return conn_lost(pg) ? -1 : (j->status = PL_DB_EFAILED, 0);
        j->status = member ? PL_DB_OK : PL_DB_EFORBIDDEN;
        return 0;
    }
    const char *sql = j->kind == PL_DB_MEMBER_DEL
                          ? "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2"
                          : upsert_member;
    PGresult *r = query(pg, sql, 2, p);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return stmt_failed(pg, r, j, "membership");
    int changed = atoi(PQcmdTuples(r));
    PQclear(r);
    if (j->kind != PL_DB_JOIN) {
        pl_buf_t *b = &j->body;
        pl_buf_reset(b);
        pl_buf_adds(b, "{\"room\":");
        pl_buf_json_str(b, j->room, strlen(j->room));
        pl_buf_adds(b, ",\"user\":");
        pl_buf_json_str(b, j->user, strlen(j->user));
        pl_buf_printf(b, ",\"member\":%s,\"changed\":%s}",
                      j->kind == PL_DB_MEMBER_PUT ? "true" : "false", changed ? "true" : "false");
        j->http_status = 200;
    }
    return 0;
}

/*
 * Redis lost its data (no parley:ready): put back each room's seq (its
 * highest stored one) and the cids of the last hour, then parley:ready. SET NX
 * everywhere: another instance may be doing the same, or messages may already
 * flow again. Writes to Redis directly, pipelined, from this worker.
 */
static int run_restore(pl_db_t *db, PGconn *pg, pl_db_job_t *j)
{
    PGresult *seqs = query(pg, "SELECT room_id, max(seq) FROM messages GROUP BY room_id", 0, NULL);
    PGresult *cids =
        PQresultStatus(seqs) == PGRES_TUPLES_OK
            ? query(pg,
                    "SELECT sender, cid, id, seq, ts_ms, GREATEST(1, 86400 - "
                    "extract(epoch FROM now() - stored_at)::bigint) FROM messages "
                    "WHERE cid IS NOT NULL AND stored_at > now() - interval '" RESTORE_CID_WINDOW
                    "'",
                    0, NULL)
            : NULL;
    if (!cids || PQresultStatus(cids) != PGRES_TUPLES_OK) {
        int lost = conn_lost(pg);
        if (!lost) pl_error("db: restore: %s", PQerrorMessage(pg));
        PQclear(seqs);
        PQclear(cids);
        if (lost) return -1;
        j->status = PL_DB_EFAILED;
        return 0;
    }
    char err[256] = "";
    redisContext *r = pl_redis_connect_sync(db->redis, 2000, err, sizeof err);
    int ok = r != NULL;
    long n = 0;
    pl_buf_t key = {0};
    /* cids before seqs: the publish script skips its readiness check for a room whose seq
     * key exists, so by then that room's dedup records must be back (src/script.c). */
    for (int i = 0; ok && i < PQntuples(cids); i++, n++) {
        pl_key_cid(&key, PQgetvalue(cids, i, 0), PQgetvalue(cids, i, 1),
                   (size_t)PQgetlength(cids, i, 1));
        ok = redisAppendCommand(r, "SET %b %s:%s:%s NX EX %s", key.data, key.len,
                                PQgetvalue(cids, i, 2), PQgetvalue(cids, i, 3),
                                PQgetvalue(cids, i, 4), PQgetvalue(cids, i, 5)) == REDIS_OK;
    }
    for (int i = 0; ok && i < PQntuples(seqs); i++, n++) {
        pl_key_seq(&key, PQgetvalue(seqs, i, 0), (size_t)PQgetlength(seqs, i, 0));
        ok = redisAppendCommand(r, "SET %b %s NX", key.data, key.len, PQgetvalue(seqs, i, 1)) ==
             REDIS_OK;
    }
    PGresult *reads =
        ok ? query(pg, "SELECT room_id, user_id, last_read_seq FROM message_status", 0, NULL)
           : NULL;
    if (reads && PQresultStatus(reads) == PGRES_TUPLES_OK) {
        for (int i = 0; ok && i < PQntuples(reads); i++, n++)
            ok = redisAppendCommand(r, "HSET %sread:%s %s %s", db->redis_prefix,
                                    PQgetvalue(reads, i, 0), PQgetvalue(reads, i, 1),
                                    PQgetvalue(reads, i, 2)) == REDIS_OK;
    }
    PQclear(reads);
    /* The membership mirror presence events are routed by (chat.c). */
    PGresult *members = ok ? query(pg, "SELECT room_id, user_id FROM room_members", 0, NULL) : NULL;
    if (members && PQresultStatus(members) == PGRES_TUPLES_OK) {
        const char *pfx = db->redis_prefix;
        for (int i = 0; ok && i < PQntuples(members); i++, n += 2) {
            const char *room = PQgetvalue(members, i, 0), *user = PQgetvalue(members, i, 1);
            ok = redisAppendCommand(r, "SADD %suser_rooms:%s %s", pfx, user, room) == REDIS_OK &&
                 redisAppendCommand(r, "SADD %sroom_participants:%s %s", pfx, room, user) ==
                     REDIS_OK;
        }
    }
    PQclear(members);
    if (ok) ok = redisAppendCommand(r, "SET " PL_KEY_READY " 1") == REDIS_OK, n++;
    for (long k = 0; ok && k < n; k++) {
        void *reply = NULL;
        ok = redisGetReply(r, &reply) == REDIS_OK;
        if (reply) freeReplyObject(reply);
    }
    if (ok)
        pl_info("db: restored %d room seq(s) and %d recent cid(s) into redis", PQntuples(seqs),
                PQntuples(cids));
    else
        pl_error("db: restore into redis failed: %s", r ? r->errstr : err);
    if (r) redisFree(r);
    pl_buf_free(&key);
    PQclear(seqs);
    PQclear(cids);
    j->status = ok ? PL_DB_OK : PL_DB_EUNAVAILABLE;
    return 0;
}

/* Run one job or batch. Returns -1 if the connection was lost (nothing is decided), else 0. */
static int run(pl_db_t *db, PGconn *pg, pl_db_job_t **jobs, int n)
{
    switch (jobs[0]->kind) {
    case PL_DB_STORE:
        return run_store(pg, jobs, n);
    case PL_DB_RESTORE:
        return run_restore(db, pg, jobs[0]);
    case PL_DB_RECOVER:
        return run_recover(pg, jobs[0]);
    case PL_DB_HISTORY:
        return run_history(pg, jobs[0]);
    case PL_DB_JOIN:
    case PL_DB_MEMBER_PUT:
    case PL_DB_MEMBER_DEL:
        return run_member(pg, jobs[0]);
    case PL_DB_READ:
        return run_read(pg, jobs[0]);
    }
    return 0;
}

static void fail(pl_db_job_t **jobs, int n, int status)
{
    for (int i = 0; i < n; i++) {
        jobs[i]->status = status;
        if (jobs[i]->kind >= PL_DB_HISTORY && !jobs[i]->http_status)
            http_json(jobs[i], 503, "unavailable", "the database is unreachable; retry later");
    }
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

static void *worker_main(void *arg)
{
    pl_db_t *db = arg;
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
            fail(jobs, n, PL_DB_EUNAVAILABLE);
            post(db, jobs, n);
            continue;
        }
        if (!connected(db, &w)) {
            if (jobs[0]->kind == PL_DB_STORE) {
                requeue(db, jobs, n); /* acks wait; the messages are safe in the queue */
                sleep_until(db, w.next_try_ms);
            } else {
                fail(jobs, n, PL_DB_EUNAVAILABLE); /* queries fail fast */
                post(db, jobs, n);
            }
            continue;
        }
        if (run(db, w.pg, jobs, n) != 0) {
            pl_warn("db: connection lost: %s", PQerrorMessage(w.pg));
            if (jobs[0]->kind == PL_DB_STORE)
                requeue(db, jobs, n);
            else {
                fail(jobs, n, PL_DB_EUNAVAILABLE);
                post(db, jobs, n);
            }
            continue; /* connected() notices and reconnects */
        }
        post(db, jobs, n);
    }
    if (w.pg) {
        PQfinish(w.pg);
        atomic_fetch_sub(&db->up, 1);
    }
    return NULL;
}

pl_db_t *pl_db_start(const char *url, int workers, size_t store_limit, const pl_redis_addr_t *redis,
                     const char *redis_prefix)
{
    pl_db_t *db = calloc(1, sizeof *db);
    if (!db) return NULL;
    db->redis_prefix = strdup(redis_prefix);
    db->url = strdup(url);
    db->redis = redis;
    db->nworkers = workers;
    db->store_limit = store_limit;
    atomic_init(&db->store_reserved, 0);
    atomic_init(&db->up, 0);
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    db->threads = calloc((size_t)workers, sizeof *db->threads);
    if (!db->url || !db->threads) return NULL;
    for (int i = 0; i < workers; i++)
        if (pthread_create(&db->threads[i], NULL, worker_main, db) != 0) {
            db->nworkers = i;
            pl_db_stop(db, 0);
            return NULL;
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
    for (int i = 0; i < db->nworkers; i++)
        pthread_join(db->threads[i], NULL);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv);
    free(db->threads);
    free(db->url);
    free(db->redis_prefix);
    free(db);
}
