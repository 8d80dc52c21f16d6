/*
 * slab: objects of one size for one thread, carved from 64 KiB pages of their own.
 *
 * For what every connection holds as long as it lives (the transport's connection block, a room
 * subscription). From malloc such an object pays a header and rounding to 16 bytes, and it sits
 * in the arena between the short-lived allocations of the connection burst (HTTP parsers,
 * first catch-ups, queued frames), so the arena cannot give their pages back. Here a slot is
 * the object's size rounded to 8, a page holds one size only, and a page left empty is
 * unmapped (one is kept for the next burst).
 *
 * Memory checkers see slots as heap blocks: under AddressSanitizer or ThreadSanitizer the slab
 * is plain calloc/free, under valgrind each slot is announced as a block (memcheck's client
 * requests), so use after free and leaks are still caught.
 *
 * Ownership: the slab owns its pages; pl_slab_free unmaps them all, with any object still in
 * them. Not thread-safe: a slab belongs to one thread.
 */
#ifndef PARLEY_BASE_SLAB_H
#define PARLEY_BASE_SLAB_H

#include <stddef.h>
#include <stdint.h>

/** Bytes of a page (mapped aligned to its size, so a slot finds its page by masking). */
#define PL_SLAB_PAGE 65536

/** Largest object a slab takes (a page holds at least 16). */
#define PL_SLAB_MAX 4000

typedef struct pl_slab_page pl_slab_page_t;

/** A slab; pl_slab_init sets it up, pl_slab_free releases it. */
typedef struct {
    pl_slab_page_t *partial; /**< pages with a free slot and a used one */
    pl_slab_page_t *full;    /**< pages without a free slot */
    pl_slab_page_t *spare;   /**< an empty page kept, or NULL */
    uint32_t size;           /**< bytes per slot */
    uint32_t per_page;       /**< slots per page */
    uint32_t vg;             /**< running under valgrind: slots are announced to it */
    size_t npages;           /**< pages mapped, the spare included */
    size_t used;             /**< objects allocated */
} pl_slab_t;

/** Set up `s` for objects of `size` bytes (1..PL_SLAB_MAX). Maps nothing yet. */
void pl_slab_init(pl_slab_t *s, size_t size);

/** A zeroed object, aligned to 8; NULL if no page could be mapped. */
void *pl_slab_get(pl_slab_t *s);

/** The same, not zeroed (its bytes are undefined): for objects the caller fills whole on a hot
 *  path (an output queue node per recipient). */
void *pl_slab_take(pl_slab_t *s);

/** Give back `p`, from pl_slab_get on `s` (NULL: nothing). */
void pl_slab_put(pl_slab_t *s, void *p);

/** Unmap every page of `s`; it is empty and initialised again for the same size (a zeroed
 *  slab, never initialised, is left zeroed). */
void pl_slab_free(pl_slab_t *s);

#endif
