/*
 * reply: hiredis reply objects carved from an arena instead of one malloc per
 * element.
 *
 * hiredis builds every reply as a tree of redisReply objects, each element and
 * each string malloc'ed on its own and freed right after the reply was
 * handled: for a published message that is ~15 allocations between the
 * publishing shard (the script's reply) and the subscriber (the pmessage).
 * A reader given pl_reply_attach builds its replies in an arena instead; the
 * arena is emptied when the reply is freed, which hiredis does once the
 * reply's callback returned (async contexts) and the subscriber does with
 * pl_reply_free. A reply therefore lives exactly as long as with hiredis' own
 * functions, and must not be kept after its callback (nor should it be with
 * hiredis' own).
 *
 * One reply at a time per reader: hiredis never builds the next reply before
 * the current one was freed. Replies larger than the arena's first block
 * (catch-up with many entries) take more blocks, released on the next reset.
 */
#ifndef PARLEY_SVC_REPLY_H
#define PARLEY_SVC_REPLY_H

#include <hiredis/hiredis.h>

/**
 * Most elements one array of a reply may have (16.7 M; PARLEY_STREAM_LEN is at most 10 M). A
 * larger count fails the read as out of memory, as hiredis does when its calloc fails: its
 * element table alone would be 128 MiB or more, up to 16 GiB for the 2^31 RESP allows.
 */
#define PL_REPLY_MAX_ELEMENTS (1 << 24)

/** An arena for one reader's replies. Owned by whoever owns the reader's context. */
typedef struct pl_reply_arena pl_reply_arena_t;

/** A new, empty arena, or NULL if out of memory. */
pl_reply_arena_t *pl_reply_arena_new(void);

/** Free the arena. No reply built in it may be in use, and no reader may use it any more:
 *  free (or detach) the reader first. */
void pl_reply_arena_free(pl_reply_arena_t *a);

/** Make `r` build its replies in `a`; `a` must outlive the reader (redisFree frees a partly read
 *  reply through it). */
void pl_reply_attach(redisReader *r, pl_reply_arena_t *a);

/** Free a reply built by a reader given pl_reply_attach (what freeReplyObject is for the
 *  default reader): empties its arena. */
void pl_reply_free(void *reply);

#endif
