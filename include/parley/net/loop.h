/*
 * loop: one event-loop thread (libuv) and the only ways other threads and the
 * layers above reach it (h2o's multithread receivers, uSockets' loop ext).
 *
 * - Inbox: a lock-free multi-producer queue of events. A producer that finds
 *   it empty writes the loop's eventfd, so a burst costs one wake-up. Each
 *   event names a kind; the loop hands it to the receiver registered for that
 *   kind (pl_loop_on), in the order posted.
 * - End-of-turn hooks (pl_loop_hook): run in registration order twice per
 *   libuv iteration: in the check phase, after the I/O callbacks, and in the
 *   prepare phase, after timers and the callbacks of completed writes, right
 *   before libuv computes how long to block. Callbacks only queue work (output,
 *   closes, commands); the hooks carry it out, so nothing queued outside an
 *   I/O callback waits in poll for an unrelated wake-up.
 * - Extension area: `ext_size` zeroed bytes allocated with the loop for the
 *   layer above (the application's per-loop state), at pl_loop_ext.
 *
 * Ownership: pl_loop_new allocates, pl_loop_free frees, after the thread has
 * ended. Receivers, hooks and handles on pl_loop_uv are set up before
 * pl_loop_start; from then on only the loop's thread touches the loop, and
 * other threads only post. Functions return 0 or a negative libuv error; one
 * that fails changed nothing.
 */
#ifndef PARLEY_NET_LOOP_H
#define PARLEY_NET_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "parley/base/mpsc.h"

/** Event kinds a loop can tell apart; the layers above number theirs below this. */
#define PL_LOOP_KINDS 16
/** End-of-turn hooks a loop can hold. */
#define PL_LOOP_HOOKS 8

typedef struct pl_loop pl_loop_t;

/** A cross-thread event. Owned by whatever embeds it (a message, a job, the loop's owner). */
typedef struct pl_loop_event {
    pl_mpsc_node_t node;
    uint8_t kind; /**< which receiver gets it (pl_loop_on) */
} pl_loop_event_t;

/** A receiver: called on the loop's thread with each event of its kind. */
typedef void (*pl_loop_receive_cb)(pl_loop_t *loop, pl_loop_event_t *ev);
/** An end-of-turn hook, with the argument it was added with. */
typedef void (*pl_loop_hook_cb)(pl_loop_t *loop, void *arg);
/** Called on the loop's thread once uv_run has returned (per-thread clean-up). */
typedef void (*pl_loop_exit_cb)(pl_loop_t *loop);

/** A new loop with `ext_size` bytes of extension area. NULL on failure (logged). */
pl_loop_t *pl_loop_new(int index, size_t ext_size);

/** Register the receiver of `kind` (< PL_LOOP_KINDS). Before pl_loop_start. */
int pl_loop_on(pl_loop_t *l, unsigned kind, pl_loop_receive_cb cb);

/** Add an end-of-turn hook (run after those added before it). Before pl_loop_start. */
int pl_loop_hook(pl_loop_t *l, pl_loop_hook_cb cb, void *arg);

/** Start the loop's thread (named `tag` in logs); `on_exit` may be NULL. */
int pl_loop_start(pl_loop_t *l, const char *tag, pl_loop_exit_cb on_exit);

/** Post from any thread; wakes the loop only if its inbox was empty. */
void pl_loop_post(pl_loop_t *l, pl_loop_event_t *ev);

/** Post without waking: returns 1 if a wake is owed (pl_loop_wake), for batching producers. */
int pl_loop_post_nowake(pl_loop_t *l, pl_loop_event_t *ev);

/** Wake the loop to drain its inbox. Any thread. */
void pl_loop_wake(pl_loop_t *l);

/** The loop's thread: close the loop's own handles. uv_run then returns once the layers above
 *  have closed theirs. */
void pl_loop_end(pl_loop_t *l);

/** Wait for the loop's thread to end. */
void pl_loop_join(pl_loop_t *l);

/** Free a loop whose thread has ended (or never started). */
void pl_loop_free(pl_loop_t *l);

/** The libuv loop, for handles of the layers above. */
uv_loop_t *pl_loop_uv(pl_loop_t *l);

/** This loop's index among the process's loops. */
int pl_loop_index(const pl_loop_t *l);

/** The extension area (16-byte aligned). */
void *pl_loop_ext(pl_loop_t *l);

#endif
