/*
 * dbjob: the parts of a database job that belong to whoever submits it
 * (db.h): setting up a job's header and freeing its rows. Apart from the
 * pool (db.c) so that code that builds jobs links without the pool.
 */
#include <stdlib.h>
#include <string.h>

#include "parley/svc/db.h"

void pl_db_job_init(pl_db_job_t *j, pl_db_kind_t kind, pl_loop_t *loop, unsigned ev_kind,
                    pl_db_done_cb done)
{
    j->ev.kind = (uint8_t)ev_kind;
    j->next = NULL;
    j->loop = loop;
    j->kind = kind;
    j->status = PL_DB_OK;
    j->done = done;
}

void pl_db_rows_free(pl_db_rows_t *r)
{
    free(r->row);
    free(r->strings);
    memset(r, 0, sizeof *r);
}

void pl_db_restore_free(pl_db_restore_t *j)
{
    pl_db_rows_free(&j->seqs);
    pl_db_rows_free(&j->cids);
    pl_db_rows_free(&j->reads);
    pl_db_rows_free(&j->members);
}
