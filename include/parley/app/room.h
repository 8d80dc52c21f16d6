/*
 * room: one shard's table of the rooms its connections subscribe to.
 *
 * A subscription (pl_sub_t) links one owner (a connection) to one room. The
 * room keeps an array of its subscriptions for fan-out; the owner keeps a
 * singly linked list of its own. Removal is O(1) from the room (swap with the
 * last) and O(subscriptions of that owner) from the owner's list.
 *
 * Ownership: the table owns rooms and subscriptions; a room is created by
 * its first join and freed by its last leave. Owners only hold the head of
 * their list. Not thread-safe: a table belongs to one shard thread.
 */
#ifndef PARLEY_APP_ROOM_H
#define PARLEY_APP_ROOM_H

#include <stddef.h>
#include <stdint.h>

#include "parley/base/htab.h"
#include "parley/base/slab.h"

/** Longest room id, in bytes. */
#define PL_ROOM_MAX 128

struct pl_room;
struct pl_outq_node;
struct pl_msg;
struct pl_replay;

/**
 * A catch-up in progress on a subscription (app/subscribe.c; `pending`: app/publish.c).
 * Allocated by subscribe.c when one begins, freed when the subscription is live again or ends.
 * Out of pl_sub_t, which every connection has for every room it is in, while a catch-up is rare
 * and brief.
 */
typedef struct pl_catchup {
    uint32_t gen;              /**< its generation (shard's sync_gen): older answers are ignored */
    struct pl_outq_node *held; /**< live frames held back during a catch-up, oldest first */
    struct pl_outq_node *held_tail;
    size_t held_bytes;
    struct pl_replay *replay;              /**< recovered messages still to send, or NULL */
    struct pl_msg *pending, *pending_tail; /**< the owner's messages sent while catching up */
} pl_catchup_t;

/** One owner's membership of one room. */
typedef struct pl_sub {
    struct pl_room *room;
    void *owner;
    struct pl_sub *next; /**< next subscription of the same owner */
    /* Kept by the session layer; the table only zeroes them at join. */
    int64_t last_seq;    /**< highest room seq delivered on this subscription */
    pl_catchup_t *cu;    /**< the catch-up in progress, or NULL; owned */
    uint32_t idx;        /**< position in room->members (the table's) */
    uint8_t quiet;       /**< that catch-up fills a gap: no `subscribed` frame */
    uint8_t gap_retries; /**< gap catch-ups that failed in a row (Redis unreachable) */
    uint8_t gap_retry;   /**< one waits for the shard's gap timer to be tried again */
} pl_sub_t;

/** The generation of `sub`'s catch-up in progress, 0 if none. */
static inline uint32_t pl_sub_gen(const pl_sub_t *sub)
{
    return sub->cu ? sub->cu->gen : 0;
}

/** A room with at least one subscriber on this shard. */
typedef struct pl_room {
    pl_hnode_t node; /**< in the table; node.hash is the name's pl_room_hash */
    uint32_t nmembers, cap;
    pl_sub_t **members; /**< [0, nmembers): the subscriptions, in no particular order */
    /* Kept by the shard (app/roomsub.h); the table only zeroes them. */
    uint32_t gen; /**< which of the room's lives on this shard this is */
    uint8_t live; /**< this instance's Redis subscription covers the room: catch-ups may read */
    /* Kept by deliver.c (cluster wait mode): room frames past the next seq expected wait here
     * a moment for the ones before them, which may come later on the same channel. */
    int64_t live_seq;       /**< highest seq delivered live on this shard, 0 if none yet */
    struct pl_early *early; /**< frames past live_seq + 1, by seq; each holds its frame */
    uint64_t early_since;   /**< uv_now when the oldest of them came, ms */
    uint32_t len;
    char name[]; /**< NUL-terminated */
} pl_room_t;

/** The table; zero-initialise or pl_room_table_init. */
typedef struct {
    pl_htab_t h;        /**< the rooms */
    size_t count;       /**< rooms */
    size_t subs;        /**< subscriptions, in every room */
    pl_slab_t sub_slab; /**< their memory (every connection holds one per room it is in) */
    /** If set: called with the room when it appears (first join, present = 1; before the
     *  joining subscription is added) and when it goes (last leave, present = 0; freed right
     *  after). Not called by pl_room_table_free. */
    void (*on_room)(void *ctx, struct pl_room *room, int present);
    void *on_room_ctx;
} pl_room_table_t;

/** The hash the table files `name[0..len)` under (FNV-1a), for filters outside it. */
uint32_t pl_room_hash(const char *name, size_t len);

/** 1 if `name[0..len)` is a valid room id: 1–128 bytes of [A-Za-z0-9_.:-]. */
int pl_room_id_valid(const char *name, size_t len);

/** Initialise an empty table. */
void pl_room_table_init(pl_room_table_t *t);

/** Free the table and every room and subscription still in it (owners' lists then dangle). */
void pl_room_table_free(pl_room_table_t *t);

/** Call `cb` with every subscription in the table (it must not join or leave). */
void pl_room_table_each(pl_room_table_t *t, void (*cb)(pl_sub_t *sub, void *arg), void *arg);

/** The room called `name`, or NULL if no owner on this shard is subscribed to it. */
pl_room_t *pl_room_find(const pl_room_table_t *t, const char *name, size_t len);

/** The owner's subscription to `room`, or NULL. */
pl_sub_t *pl_room_sub_of(pl_sub_t *list, const pl_room_t *room);

/**
 * Subscribe `owner` (whose list head is `*list`) to room `name`. Returns the
 * subscription, the existing one if already subscribed; NULL on allocation
 * failure (nothing changed).
 */
pl_sub_t *pl_room_join(pl_room_table_t *t, const char *name, size_t len, void *owner,
                       pl_sub_t **list);

/** Remove one subscription from its room and from the owner's list, and free it. */
void pl_room_leave(pl_room_table_t *t, pl_sub_t **list, pl_sub_t *sub);

/** Remove every subscription in the owner's list. */
void pl_room_leave_all(pl_room_table_t *t, pl_sub_t **list);

/** The first room of the table in no particular order, or NULL; with pl_room_next, every room
 *  once. The table must not change during the walk. */
pl_room_t *pl_room_first(const pl_room_table_t *t);
/** The room after `r` in the walk pl_room_first began, or NULL. */
pl_room_t *pl_room_next(const pl_room_table_t *t, const pl_room_t *r);

/** Number of subscriptions in an owner's list. */
size_t pl_room_count(const pl_sub_t *list);

#endif
