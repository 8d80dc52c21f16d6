/*
 * htab: an intrusive chained hash table. The caller embeds a pl_hnode_t in
 * its entries, computes their hash and compares keys itself; the table only
 * files nodes by hash, grows its bucket array (two entries per bucket at most
 * on average: the user index pays its buckets per connection) and walks them. Used by the shard's
 * room and user tables (app/room.h, app/users.h).
 *
 * Ownership: the table owns its bucket array only (pl_htab_free); entries
 * belong to the caller, which removes them before freeing them. Not
 * thread-safe.
 */
#ifndef PARLEY_BASE_HTAB_H
#define PARLEY_BASE_HTAB_H

#include <stddef.h>
#include <stdint.h>

/** The link an entry embeds. */
typedef struct pl_hnode {
    struct pl_hnode *next; /**< the bucket's chain */
    uint32_t hash;         /**< set by the caller before pl_htab_insert */
} pl_hnode_t;

/** A table; zero-initialised is empty. */
typedef struct {
    pl_hnode_t **buckets;
    size_t nbuckets; /**< 0 or a power of two */
    size_t count;    /**< nodes filed */
} pl_htab_t;

/** FNV-1a of `s[0..n)`: the hash the app's tables file names under. */
uint32_t pl_htab_hash(const char *s, size_t n);

/** Make room for one more node: 0, or -1 if the table has no buckets and none could be
 *  allocated (a full table that cannot grow still works, only slower). */
int pl_htab_reserve(pl_htab_t *t);

/** File `n` (n->hash set). pl_htab_reserve must have succeeded since the last insert. */
void pl_htab_insert(pl_htab_t *t, pl_hnode_t *n);

/** Unfile `n`, which is in the table. */
void pl_htab_remove(pl_htab_t *t, pl_hnode_t *n);

/** The chain `hash` is filed in (compare each node's hash and key), or NULL. */
static inline pl_hnode_t *pl_htab_chain(const pl_htab_t *t, uint32_t hash)
{
    return t->nbuckets ? t->buckets[hash & (t->nbuckets - 1)] : NULL;
}

/** The first node in no particular order, or NULL; with pl_htab_next, every node once. The
 *  table must not change during the walk. */
pl_hnode_t *pl_htab_first(const pl_htab_t *t);
/** The node after `n` in that walk, or NULL. */
pl_hnode_t *pl_htab_next(const pl_htab_t *t, const pl_hnode_t *n);

/** Free the bucket array (the nodes are the caller's) and empty the table. */
void pl_htab_free(pl_htab_t *t);

#endif
