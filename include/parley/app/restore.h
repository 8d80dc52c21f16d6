/*
 * restore: a Redis that lost its data (no parley:ready) gets back, from
 * PostgreSQL, each room's seq, the cids of the last hour, read positions and
 * the membership mirror, then parley:ready. Messages wait meanwhile, never
 * published with a wrong seq. One restore at a time per process; the rows
 * come from svc/db.h (pl_db_restore_t) and are written here, on the shard's
 * own Redis connection, in the order the publish script relies on: cids
 * before seqs.
 */
#ifndef PARLEY_APP_RESTORE_H
#define PARLEY_APP_RESTORE_H

#include "parley/app/shard.h"

/** Redis answered "not ready": restore it (unless a restore is under way). */
void pl_restore_need(pl_shard_t *s);

#endif
