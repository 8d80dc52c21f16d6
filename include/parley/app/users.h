/*
 * users: one shard's index of its authenticated connections by user id, for
 * what is addressed to a user rather than a room (direct messages, a
 * disconnect) and for the per-user counts presence reports to Redis.
 *
 * A connection embeds a pl_user_link_t (the session does); an entry per user
 * chains the links of that user's connections on this shard. An entry costs
 * one small allocation per user, a connection two pointers: the index is kept
 * for every connection, so it is held to what it needs.
 *
 * Ownership: the index allocates and frees its entries (the first add
 * creates one, the last remove frees it); links belong to their connections.
 * Entries come from the index's slabs, one per 16-byte size class (names of
 * up to 143 bytes; a longer one from malloc): an entry lives as long as its
 * user's connections, and from malloc it would sit between the short-lived
 * allocations of the connection burst and strand their space.
 * Not thread-safe: an index belongs to one shard thread.
 */
#ifndef PARLEY_APP_USERS_H
#define PARLEY_APP_USERS_H

#include <stddef.h>
#include <stdint.h>

#include "parley/base/htab.h"
#include "parley/base/slab.h"

struct pl_user;

/**
 * A connection's place in its user's chain. Zeroed: not filed. Filed: in the chain. Held
 * (pl_users_remove): out of the chain, but `user` and its name stay valid until
 * pl_users_release, so that a closing connection still knows its user without a copy.
 */
typedef struct pl_user_link {
    struct pl_user_link *next; /**< the user's next connection on this shard; itself if held */
    struct pl_user *user;      /**< its entry, NULL while zeroed */
} pl_user_link_t;

/** One user with at least one connection on this shard. */
typedef struct pl_user {
    pl_hnode_t node;
    pl_user_link_t *first; /**< its connections, newest first */
    uint32_t n;            /**< how many */
    uint16_t len;          /**< <= PL_JWT_SUB_MAX */
    uint16_t refs;         /**< links filed or held: the entry is freed at 0 */
    char name[];           /**< NUL-terminated */
} pl_user_t;

/** Most links one user's entry counts (pl_user_t.refs). */
#define PL_USERS_MAX_LINKS UINT16_MAX

/** Size classes of entries: 48, 64, ... 176 bytes (the entry's 32 and a name of 15 to 143). */
#define PL_USERS_CLASSES 9

/** The index; zero-initialised is empty. */
typedef struct {
    pl_htab_t h;
    pl_slab_t slab[PL_USERS_CLASSES]; /**< set up at their first entry */
} pl_users_t;

/** Users in the index. */
static inline size_t pl_users_count(const pl_users_t *t)
{
    return t->h.count;
}

/** The entry of user `name[0..len)`, or NULL if it has no connection here. */
pl_user_t *pl_users_find(const pl_users_t *t, const char *name, size_t len);

/** File `l` (zeroed) under user `name[0..len)` (len < 65536). 0; -1 on allocation failure, or
 *  -2 if the user has PL_USERS_MAX_LINKS links on this shard already (nothing changed). */
int pl_users_add(pl_users_t *t, const char *name, size_t len, pl_user_link_t *l);

/** Unfile `l` if it is filed, and hold it: the user's last filed link takes the entry out of
 *  the index (a new connection of that user files a new one). */
void pl_users_remove(pl_users_t *t, pl_user_link_t *l);

/** Unfile `l` if filed, let go of its entry (the last link frees it) and zero it. */
void pl_users_release(pl_users_t *t, pl_user_link_t *l);

/** The user's name of a filed or held link, or NULL if zeroed. */
static inline const char *pl_users_name(const pl_user_link_t *l)
{
    return l->user ? l->user->name : NULL;
}

/** The first entry in no particular order, or NULL; with pl_users_next, each once. The index
 *  must not change during the walk. */
pl_user_t *pl_users_first(const pl_users_t *t);
/** The entry after `u` in that walk, or NULL. */
pl_user_t *pl_users_next(const pl_users_t *t, const pl_user_t *u);

/** Free every entry and the slabs (links still filed or held then dangle) and empty the
 *  index. */
void pl_users_free(pl_users_t *t);

#endif
