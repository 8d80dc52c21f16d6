/*
 * dbrestore: what Redis needs back after losing its data, read from
 * PostgreSQL: each room's highest seq, recent cids, read positions and
 * memberships (db.h, pl_db_restore_t). Writing them into Redis, and in which
 * order, is the application's (app/restore.c).
 */
#include <stdio.h>

#include "db_int.h"
#include "parley/base/log.h"

/* Run one query into rows; -1 if the connection is gone, else 0 (status set on failure). The
 * query names the job's room as $1 if it has one. */
static int rows_of(PGconn *pg, pl_db_restore_t *j, const char *sql, pl_db_rows_t *out,
                   const pl__db_cols_t *cols, const char *what)
{
    const char *room = j->room;
    PGresult *r =
        PQexecParams(pg, sql, room[0] ? 1 : 0, NULL, room[0] ? &room : NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        if (pl__db_lost(pg)) return -1;
        pl_error("db: restore, %s: %s", what, PQerrorMessage(pg));
        j->h.status = PL_DB_EFAILED;
        return 0;
    }
    if (pl__db_rows(out, r, cols) != 0) j->h.status = PL_DB_EFAILED;
    PQclear(r);
    return 0;
}

int pl__db_restore(PGconn *pg, pl_db_restore_t *j)
{
    static const pl__db_cols_t seq_cols = {1, -1, -1, -1, 0, -1, -1, -1};
    /* sender, cid, id, seq, ts_ms, seconds left, room (a cluster keeps the record with it) */
    static const pl__db_cols_t cid_cols = {3, 2, 4, 5, 6, 0, 1, -1};
    static const pl__db_cols_t read_cols = {2, -1, -1, -1, 0, 1, -1, -1};
    static const pl__db_cols_t member_cols = {-1, -1, -1, -1, 0, 1, -1, -1};
    /* One room: the same queries narrowed to it ($1). */
    const char *one = j->room[0] ? " AND room_id = $1" : "";
    const char *where = j->room[0] ? " WHERE room_id = $1" : "";
    char cids[512], seqs[128], reads[128], members[128];
    snprintf(
        cids, sizeof cids,
        "SELECT sender, cid, id, seq, ts_ms, GREATEST(1, 86400 - extract(epoch FROM now() - "
        "stored_at)::bigint), room_id FROM messages WHERE cid IS NOT NULL AND stored_at > now() - "
        "make_interval(secs => %d)%s",
        j->cid_window_s, one);
    snprintf(seqs, sizeof seqs, "SELECT room_id, max(seq) FROM messages%s GROUP BY room_id", where);
    snprintf(reads, sizeof reads, "SELECT room_id, user_id, last_read_seq FROM message_status%s",
             where);
    snprintf(members, sizeof members, "SELECT room_id, user_id FROM room_members%s", where);
    int rc;
    if ((rc = rows_of(pg, j, seqs, &j->seqs, &seq_cols, "seqs")) != 0 || j->h.status) return rc;
    if ((rc = rows_of(pg, j, cids, &j->cids, &cid_cols, "cids")) != 0 || j->h.status) return rc;
    if ((rc = rows_of(pg, j, reads, &j->reads, &read_cols, "read positions")) != 0 || j->h.status)
        return rc;
    return rows_of(pg, j, members, &j->members, &member_cols, "memberships");
}
