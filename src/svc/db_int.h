/*
 * db_int: what the pool (db.c), its queries (dbsql.c) and the restore
 * queries (dbrestore.c) share. Internal to svc/db*.c.
 */
#ifndef PARLEY_SVC_DB_INT_H
#define PARLEY_SVC_DB_INT_H

#include <libpq-fe.h>

#include "parley/svc/db.h"

/** Which result column holds each field of a pl_db_row_t (-1: none). */
typedef struct {
    int seq, id, ts_ms, aux, room, user, cid, body;
} pl__db_cols_t;

/** Rows of `r` as `cols` says; 0, or -1 out of memory. */
int pl__db_rows(pl_db_rows_t *out, PGresult *r, const pl__db_cols_t *cols);

/** Run one job or a batch of stores on `pg`. Returns -1 if the connection was lost (nothing is
 *  decided: the jobs are retried or failed by the pool), else 0 with each job's status set. */
int pl__db_run(PGconn *pg, pl_db_job_t **jobs, int n);

/** The restore queries (dbrestore.c). Same return convention. */
int pl__db_restore(PGconn *pg, pl_db_restore_t *j);

/** 1 if a failed result means the connection is gone. */
static inline int pl__db_lost(PGconn *pg)
{
    return PQstatus(pg) != CONNECTION_OK;
}

#endif
