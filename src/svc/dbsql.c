/*
 * dbsql: the statements behind each job kind (db.h), run on a worker's
 * connection. They return statuses and rows; no JSON, no frames.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_int.h"
#include "parley/base/log.h"

static PGresult *query(PGconn *pg, const char *sql, int n, const char *const *params)
{
    return PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
}

/*
 * A statement failed (r is cleared here). Returns -1 if the connection is gone (nothing is
 * decided: the pool retries or fails the job), else logs it once, marks the job failed and
 * returns 0.
 */
static int stmt_failed(PGconn *pg, PGresult *r, pl_db_job_t *j, const char *what)
{
    PQclear(r);
    if (pl__db_lost(pg)) return -1;
    pl_error("db: %s: %s", what, PQerrorMessage(pg));
    j->status = PL_DB_EFAILED;
    return 0;
}

int pl__db_rows(pl_db_rows_t *out, PGresult *r, const pl__db_cols_t *c)
{
    memset(out, 0, sizeof *out);
    int n = PQntuples(r);
    if (n == 0) return 0;
    const int str[4] = {c->room, c->user, c->cid, c->body};
    size_t bytes = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            if (str[k] >= 0 && !PQgetisnull(r, i, str[k]))
                bytes += (size_t)PQgetlength(r, i, str[k]) + 1;
    out->row = calloc((size_t)n, sizeof *out->row);
    out->strings = malloc(bytes ? bytes : 1);
    if (!out->row || !out->strings) {
        pl_db_rows_free(out);
        return -1;
    }
    char *p = out->strings;
    for (int i = 0; i < n; i++) {
        pl_db_row_t *row = &out->row[i];
        if (c->seq >= 0) row->seq = strtoll(PQgetvalue(r, i, c->seq), NULL, 10);
        if (c->id >= 0) row->id = strtoull(PQgetvalue(r, i, c->id), NULL, 10);
        if (c->ts_ms >= 0) row->ts_ms = strtoll(PQgetvalue(r, i, c->ts_ms), NULL, 10);
        if (c->aux >= 0) row->aux = strtoll(PQgetvalue(r, i, c->aux), NULL, 10);
        const char **dst[4] = {&row->room, &row->user, &row->cid, &row->body};
        for (int k = 0; k < 4; k++) {
            if (str[k] < 0 || PQgetisnull(r, i, str[k])) continue;
            size_t len = (size_t)PQgetlength(r, i, str[k]);
            memcpy(p, PQgetvalue(r, i, str[k]), len + 1);
            *dst[k] = p;
            if (k == 3) row->body_len = len;
            p += len + 1;
        }
    }
    out->n = (size_t)n;
    return 0;
}

/* Columns of the message queries: seq, id, sender, cid, body, ts_ms. */
static const pl__db_cols_t message_cols = {0, 1, 5, -1, -1, 2, 3, 4};

/* STORE: one multi-row INSERT; rows that were already there answer for their duplicates. */
static int run_store(PGconn *pg, pl_db_job_t **jobs, int n)
{
    enum { COLS = 7 };
    char nums[PL_DB_BATCH][3][24];
    const char *params[PL_DB_BATCH * COLS];
    pl_buf_t sql = {0};
    pl_buf_adds(&sql, "INSERT INTO messages (id, room_id, seq, sender, cid, body, ts_ms) VALUES ");
    for (int i = 0; i < n; i++) {
        const pl_db_msg_t *m = ((pl_db_store_t *)jobs[i])->msg;
        snprintf(nums[i][0], 24, "%llu", (unsigned long long)m->id);
        snprintf(nums[i][1], 24, "%lld", (long long)m->seq);
        snprintf(nums[i][2], 24, "%lld", (long long)m->ts_ms);
        const char **p = params + i * COLS;
        p[0] = nums[i][0];
        p[1] = m->room;
        p[2] = nums[i][1];
        p[3] = m->sender;
        p[4] = m->cid;
        p[5] = m->text;
        p[6] = nums[i][2];
        int k = i * COLS;
        pl_buf_printf(&sql, "%s($%d::bigint,$%d,$%d::bigint,$%d,$%d,$%d,$%d::bigint)", i ? "," : "",
                      k + 1, k + 2, k + 3, k + 4, k + 5, k + 6, k + 7);
    }
    pl_buf_adds(&sql, " ON CONFLICT DO NOTHING RETURNING id");
    PGresult *r = query(pg, sql.data, n * COLS, params);
    pl_buf_free(&sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int lost = pl__db_lost(pg);
        pl_error("db: storing %d message(s): %s", n, PQerrorMessage(pg));
        PQclear(r);
        if (lost) return -1;
        for (int i = 0; i < n; i++)
            jobs[i]->status = PL_DB_EFAILED;
        return 0;
    }
    /* Inserted rows are done; the rest are looked up below. */
    int inserted = PQntuples(r);
    for (int i = 0; i < n; i++) {
        pl_db_store_t *j = (pl_db_store_t *)jobs[i];
        int found = 0;
        for (int row = 0; row < inserted && !found; row++)
            found = strtoull(PQgetvalue(r, row, 0), NULL, 10) == j->msg->id;
        j->h.status = found ? PL_DB_OK : PL_DB_ECONFLICT;
        j->id = j->msg->id;
        j->seq = j->msg->seq;
    }
    PQclear(r);
    for (int i = 0; i < n; i++) {
        pl_db_store_t *j = (pl_db_store_t *)jobs[i];
        if (j->h.status == PL_DB_OK) continue;
        /* A duplicate: answer with the row stored for this sender and cid, or this very id. */
        const char *p[3] = {j->msg->sender, j->msg->cid ? j->msg->cid : "", nums[i][0]};
        PGresult *d =
            query(pg,
                  "SELECT id, seq FROM messages WHERE (sender = $1 AND cid = $2 AND $2 <> '')"
                  " OR id = $3::bigint LIMIT 1",
                  3, p);
        if (PQresultStatus(d) != PGRES_TUPLES_OK) {
            int lost = pl__db_lost(pg);
            PQclear(d);
            if (lost) return -1;
            j->h.status = PL_DB_EFAILED;
            continue;
        }
        if (PQntuples(d) == 1) {
            j->id = strtoull(PQgetvalue(d, 0, 0), NULL, 10);
            j->seq = strtoll(PQgetvalue(d, 0, 1), NULL, 10);
            j->h.status = PL_DB_OK;
        } else {
            pl_error("db: room %s seq %lld is taken by another message; message %llu not stored",
                     j->msg->room, (long long)j->msg->seq, (unsigned long long)j->msg->id);
            j->h.status = PL_DB_ECONFLICT;
        }
        PQclear(d);
    }
    return 0;
}

static int run_recover(PGconn *pg, pl_db_recover_t *j)
{
    const char *p1[1] = {j->room};
    PGresult *r = query(pg, "SELECT COALESCE(max(seq), 0) FROM messages WHERE room_id = $1", 1, p1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return stmt_failed(pg, r, &j->h, "max seq");
    j->max_seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    /* Open-ended catch-up: never more than `limit`; the newest ones are the ones to keep. */
    if (j->before == 0 && j->after >= 0 && j->max_seq - j->after > j->limit) {
        j->after = j->max_seq - j->limit;
        j->truncated = 1;
    }
    char after[24], before[24], limit[16];
    snprintf(after, sizeof after, "%lld", (long long)j->after);
    snprintf(before, sizeof before, "%lld", (long long)j->before);
    snprintf(limit, sizeof limit, "%d", j->limit);
    const char *p[4] = {j->room, after, before, limit};
    r = query(pg,
              "SELECT seq, id, sender, cid, body, ts_ms FROM messages"
              " WHERE room_id = $1 AND seq > $2::bigint AND ($3::bigint = 0 OR seq < $3::bigint)"
              " ORDER BY seq LIMIT $4::int",
              4, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return stmt_failed(pg, r, &j->h, "recovering");
    if (pl__db_rows(&j->rows, r, &message_cols) != 0) j->h.status = PL_DB_EFAILED;
    PQclear(r);
    return 0;
}

static int is_member(PGconn *pg, const char *room, const char *user, int *member)
{
    const char *p[2] = {room, user};
    PGresult *r = query(pg, "SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2", 2, p);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (ok)
        *member = PQntuples(r) > 0;
    else if (!pl__db_lost(pg))
        pl_error("db: membership %s/%s: %s", room, user, PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

static int run_history(PGconn *pg, pl_db_history_t *j)
{
    j->member = 1;
    if (j->user[0] && is_member(pg, j->room, j->user, &j->member) != 0)
        return pl__db_lost(pg) ? -1 : (j->h.status = PL_DB_EFAILED, 0);
    if (!j->member) return 0;
    char before[24], limit[16];
    snprintf(before, sizeof before, "%lld", (long long)j->before);
    snprintf(limit, sizeof limit, "%d", j->limit + 1); /* one more tells whether there is more */
    const char *p[3] = {j->room, before, limit};
    PGresult *r = query(pg,
                        "SELECT seq, id, sender, cid, body, ts_ms FROM messages"
                        " WHERE room_id = $1 AND ($2::bigint = 0 OR seq < $2::bigint)"
                        " ORDER BY seq DESC LIMIT $3::int",
                        3, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return stmt_failed(pg, r, &j->h, "history");
    if (pl__db_rows(&j->rows, r, &message_cols) != 0) j->h.status = PL_DB_EFAILED;
    PQclear(r);
    j->has_more = j->rows.n > (size_t)j->limit;
    if (j->has_more) j->rows.n = (size_t)j->limit;
    return 0;
}

static const char upsert_member[] =
    "WITH u AS (INSERT INTO users (id) VALUES ($2) ON CONFLICT DO NOTHING),"
    " r AS (INSERT INTO rooms (id) VALUES ($1) ON CONFLICT DO NOTHING)"
    " INSERT INTO room_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";

static const char upsert_member_pair[] =
    "WITH u AS (INSERT INTO users (id) VALUES ($2), ($3) ON CONFLICT DO NOTHING),"
    " r AS (INSERT INTO rooms (id) VALUES ($1) ON CONFLICT DO NOTHING)"
    " INSERT INTO room_members (room_id, user_id) VALUES ($1, $2), ($1, $3) ON CONFLICT DO NOTHING";

static int run_member(PGconn *pg, pl_db_member_t *j)
{
    if (j->op == PL_DB_MEMBER_CHECK) {
        if (is_member(pg, j->room, j->user, &j->member) != 0)
            return pl__db_lost(pg) ? -1 : (j->h.status = PL_DB_EFAILED, 0);
        return 0;
    }
    const char *p[3] = {j->room, j->user, j->user2};
    int pair = j->op == PL_DB_MEMBER_ADD && j->user2[0];
    const char *sql = j->op == PL_DB_MEMBER_DEL
                          ? "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2"
                      : pair ? upsert_member_pair
                             : upsert_member;
    PGresult *r = query(pg, sql, pair ? 3 : 2, p);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return stmt_failed(pg, r, &j->h, "membership");
    j->changed = atoi(PQcmdTuples(r)) > 0;
    j->member = j->op == PL_DB_MEMBER_ADD;
    PQclear(r);
    return 0;
}

static int run_read(PGconn *pg, pl_db_read_t *j)
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
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return stmt_failed(pg, r, &j->h, "read position");
    PQclear(r);
    return 0;
}

/* Columns of the rooms query: room, seq, read (aux), the other member of a dm: room. */
static const pl__db_cols_t rooms_cols = {1, -1, -1, 2, 0, 3, -1, -1};

static int run_rooms(PGconn *pg, pl_db_rooms_t *j)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", PL_DB_ROOMS_MAX);
    const char *p[2] = {j->user, limit};
    /* max(seq) per room walks the (room_id, seq) index backwards: one row each. */
    PGresult *r =
        query(pg,
              "SELECT m.room_id,"
              " COALESCE((SELECT max(x.seq) FROM messages x WHERE x.room_id = m.room_id), 0),"
              " COALESCE(s.last_read_seq, 0),"
              " CASE WHEN m.room_id LIKE 'dm:%' THEN (SELECT o.user_id FROM room_members o"
              "  WHERE o.room_id = m.room_id AND o.user_id <> m.user_id LIMIT 1) END"
              " FROM room_members m LEFT JOIN message_status s"
              "  ON s.room_id = m.room_id AND s.user_id = m.user_id"
              " WHERE m.user_id = $1 ORDER BY m.room_id LIMIT $2::int",
              2, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return stmt_failed(pg, r, &j->h, "rooms");
    if (pl__db_rows(&j->rows, r, &rooms_cols) != 0) j->h.status = PL_DB_EFAILED;
    PQclear(r);
    return 0;
}

int pl__db_run(PGconn *pg, pl_db_job_t **jobs, int n)
{
    switch (jobs[0]->kind) {
    case PL_DB_STORE:
        return run_store(pg, jobs, n);
    case PL_DB_RECOVER:
        return run_recover(pg, (pl_db_recover_t *)jobs[0]);
    case PL_DB_HISTORY:
        return run_history(pg, (pl_db_history_t *)jobs[0]);
    case PL_DB_MEMBER:
        return run_member(pg, (pl_db_member_t *)jobs[0]);
    case PL_DB_READ:
        return run_read(pg, (pl_db_read_t *)jobs[0]);
    case PL_DB_RESTORE:
        return pl__db_restore(pg, (pl_db_restore_t *)jobs[0]);
    case PL_DB_ROOMS:
        return run_rooms(pg, (pl_db_rooms_t *)jobs[0]);
    }
    return 0;
}
