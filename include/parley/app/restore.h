/*
 * restore: a Redis that lost its data (no parley:ready) gets back, from
 * PostgreSQL, each room's seq, the cids of the last hour, read positions and
 * the membership mirror, then parley:ready. Messages wait meanwhile, never
 * published with a wrong seq. One restore at a time per process; the rows
 * come from svc/db.h (pl_db_restore_t) and are written here, on the shard's
 * own Redis connection, in the order the publish script relies on: cids
 * before seqs.
 *
 * Ownership: a cluster's seeds (one per room) are allocated here, listed on
 * the shard, and freed when their ready key is written or the shard ends.
 */
#ifndef PARLEY_APP_RESTORE_H
#define PARLEY_APP_RESTORE_H

#include "parley/app/shard.h"

/**
 * Redis answered "not ready" for `room`: restore it (unless a restore is under way). On one
 * Redis that is every room at once. In a cluster, readiness is the room's (its key
 * parley:{r:<room>}:ready, written last): the room alone is seeded, on this shard, and
 * pl_restore_seeding says so until its ready key is written.
 */
void pl_restore_need(pl_shard_t *s, const char *room);

/** Cluster mode: 1 while rooms are being seeded on this shard. Seeds that failed are started
 *  again from here, at most every RESTORE_RETRY_MS (call it from the shard's ready timer). */
int pl_restore_seeding(pl_shard_t *s);

/** Free the shard's seeds (its loop ended). */
void pl_restore_free(pl_shard_t *s);

#endif
