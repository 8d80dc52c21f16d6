/* slab: fixed-size objects from pages of their own; see the header. */
#include "parley/base/slab.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLAB_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SLAB_MALLOC 1
#endif
#endif

/* -DPL_SLAB_NO_VALGRIND leaves the client requests out (to count native instructions under
 * callgrind, which would otherwise count them). */
#if !defined(SLAB_MALLOC) && !defined(PL_SLAB_NO_VALGRIND) && defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define SLAB_VALGRIND 1
#endif
#endif
/* Client requests only under valgrind (s->vg): each is a dozen instructions even natively,
 * and a fan-out takes and gives back a queue node per recipient. */
#ifdef SLAB_VALGRIND
#define VG(s, req)                                                                                 \
    do {                                                                                           \
        if ((s)->vg) req;                                                                          \
    } while (0)
#else
#define VG(s, req) ((void)0)
#define RUNNING_ON_VALGRIND 0
#endif

/* A page's header, at its start; the slots follow. A free slot's first word links the page's
 * free slots; slots from `bump` on were never handed out (a fresh mapping is zero). */
struct pl_slab_page {
    pl_slab_page_t *prev, *next; /* in slab->partial or slab->full (used == per_page) */
    void *free;                  /* free slots handed out before */
    uint32_t used;               /* slots handed out now */
    uint32_t bump;               /* slots [bump, per_page) never handed out */
};

#define HDR ((sizeof(pl_slab_page_t) + 15) & ~(size_t)15)

#ifndef SLAB_MALLOC /* the pages' helpers; a sanitizer build has no pages */

static pl_slab_page_t *page_of(const void *p)
{
    return (pl_slab_page_t *)((uintptr_t)p & ~(uintptr_t)(PL_SLAB_PAGE - 1));
}

/* A page aligned to its size: map two, keep the aligned one inside. */
static pl_slab_page_t *page_map(void)
{
    char *m =
        mmap(NULL, 2 * PL_SLAB_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)m + PL_SLAB_PAGE - 1) & ~(uintptr_t)(PL_SLAB_PAGE - 1));
    /* Cannot fail: whole pages of a mapping just made. */
    if (p > m) munmap(m, (size_t)(p - m));
    if (p + PL_SLAB_PAGE < m + 2 * PL_SLAB_PAGE)
        munmap(p + PL_SLAB_PAGE, (size_t)(m + 2 * PL_SLAB_PAGE - (p + PL_SLAB_PAGE)));
    return (pl_slab_page_t *)p;
}

static void unlink_page(pl_slab_page_t **list, pl_slab_page_t *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        *list = g->next;
    if (g->next) g->next->prev = g->prev;
}

static void push_page(pl_slab_page_t **list, pl_slab_page_t *g)
{
    g->prev = NULL;
    g->next = *list;
    if (*list) (*list)->prev = g;
    *list = g;
}

static void unmap_list(pl_slab_page_t *g)
{
    while (g) {
        pl_slab_page_t *next = g->next;
        munmap(g, PL_SLAB_PAGE);
        g = next;
    }
}

#endif

void pl_slab_init(pl_slab_t *s, size_t size)
{
    memset(s, 0, sizeof *s);
    s->size = (uint32_t)((size + 7) & ~(size_t)7);
    s->per_page = (uint32_t)((PL_SLAB_PAGE - HDR) / s->size);
    s->vg = RUNNING_ON_VALGRIND ? 1 : 0;
}

#ifdef SLAB_MALLOC

void *pl_slab_get(pl_slab_t *s)
{
    void *p = calloc(1, s->size);
    if (p) s->used++;
    return p;
}

void *pl_slab_take(pl_slab_t *s)
{
    void *p = malloc(s->size);
    if (p) s->used++;
    return p;
}

void pl_slab_put(pl_slab_t *s, void *p)
{
    if (!p) return;
    s->used--;
    free(p);
}

#else

void *pl_slab_take(pl_slab_t *s)
{
    pl_slab_page_t *g = s->partial;
    if (!g) {
        if ((g = s->spare))
            s->spare = NULL;
        else if ((g = page_map()))
            s->npages++;
        else
            return NULL;
        push_page(&s->partial, g);
    }
    char *p;
    if (g->free) {
        p = g->free;
        VG(s, VALGRIND_MAKE_MEM_DEFINED(p, sizeof(void *)));
        memcpy(&g->free, p, sizeof(void *));
    } else {
        p = (char *)g + HDR + (size_t)g->bump++ * s->size;
    }
    VG(s, VALGRIND_MALLOCLIKE_BLOCK(p, s->size, 0, 0));
    if (++g->used == s->per_page) {
        unlink_page(&s->partial, g);
        push_page(&s->full, g);
    }
    s->used++;
    return p;
}

void *pl_slab_get(pl_slab_t *s)
{
    void *p = pl_slab_take(s);
    /* A reused slot is zeroed like a fresh one (calloc's promise). */
    if (p) memset(p, 0, s->size);
    return p;
}

void pl_slab_put(pl_slab_t *s, void *p)
{
    if (!p) return;
    pl_slab_page_t *g = page_of(p);
    VG(s, VALGRIND_FREELIKE_BLOCK(p, 0));
    s->used--;
    if (g->used-- == s->per_page) {
        unlink_page(&s->full, g);
        push_page(&s->partial, g);
    }
    if (g->used == 0) {
        /* Empty: kept as the spare (a burst that ends often comes back), else unmapped. */
        unlink_page(&s->partial, g);
        if (!s->spare) {
            g->prev = g->next = NULL;
            g->free = NULL;
            g->bump = 0;
            s->spare = g;
        } else {
            munmap(g, PL_SLAB_PAGE);
            s->npages--;
        }
        return;
    }
    VG(s, VALGRIND_MAKE_MEM_UNDEFINED(p, sizeof(void *)));
    memcpy(p, &g->free, sizeof(void *));
    VG(s, VALGRIND_MAKE_MEM_NOACCESS(p, s->size));
    g->free = p;
}

#endif

#ifdef SLAB_VALGRIND
/* Under valgrind: the objects still in `g`'s slots are freed blocks from now on, so that a
 * later mapping at the same address does not overlap blocks memcheck still counts. */
static void vg_forget_page(pl_slab_t *s, pl_slab_page_t *g)
{
    unsigned char *is_free = calloc(s->per_page, 1);
    if (!is_free) return;
    for (char *f = g->free; f;) {
        char *next;
        VALGRIND_MAKE_MEM_DEFINED(f, sizeof(void *));
        memcpy(&next, f, sizeof next);
        is_free[(size_t)(f - ((char *)g + HDR)) / s->size] = 1;
        f = next;
    }
    for (uint32_t i = 0; i < g->bump; i++)
        if (!is_free[i]) VALGRIND_FREELIKE_BLOCK((char *)g + HDR + (size_t)i * s->size, 0);
    free(is_free);
}
#endif

void pl_slab_free(pl_slab_t *s)
{
    size_t size = s->size;
#ifdef SLAB_VALGRIND
    if (s->vg)
        for (int full = 0; full < 2; full++)
            for (pl_slab_page_t *g = full ? s->full : s->partial; g; g = g->next)
                vg_forget_page(s, g);
#endif
#ifndef SLAB_MALLOC
    unmap_list(s->partial);
    unmap_list(s->full);
    unmap_list(s->spare);
#endif
    if (size)
        pl_slab_init(s, size);
    else
        memset(s, 0, sizeof *s); /* zeroed, never set up: stays so */
}
