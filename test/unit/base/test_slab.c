/* Unit tests for src/base/slab.c: slots are distinct, aligned, zeroed and inside one page of
 * their slab; full pages are passed over and come back when a slot frees; empty pages are
 * unmapped but one. (Under a sanitizer the slab is calloc/free and only the counts apply.) */
#include "parley/base/slab.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>

#define N 5000

static void slots_distinct_zeroed_aligned(void)
{
    static char *p[N];
    pl_slab_t s;
    pl_slab_init(&s, 61); /* rounded to 64 */
    CHECK_EQ_INT(s.size, 64);
    for (int i = 0; i < N; i++) {
        p[i] = pl_slab_get(&s);
        CHECK(p[i] != NULL && (uintptr_t)p[i] % 8 == 0);
        for (int j = 0; j < 64; j++)
            if (p[i][j] != 0) {
                CHECK(!"slot not zeroed");
                break;
            }
        memset(p[i], 0xA5, 64); /* overlapping slots would show below */
        p[i][0] = (char)(i & 0x7f);
        p[i][63] = (char)(i >> 7);
    }
    CHECK_EQ_INT(s.used, N);
    for (int i = 0; i < N; i++)
        CHECK(p[i][0] == (char)(i & 0x7f) && p[i][63] == (char)(i >> 7) && p[i][1] == (char)0xA5);
    /* Freed slots come back zeroed. */
    for (int i = 0; i < N; i += 2)
        pl_slab_put(&s, p[i]);
    CHECK_EQ_INT(s.used, N / 2);
    for (int i = 0; i < N; i += 2) {
        p[i] = pl_slab_get(&s);
        CHECK(p[i] && p[i][0] == 0 && p[i][63] == 0);
    }
    CHECK_EQ_INT(s.used, N);
    /* pl_slab_take: a slot too, counted, not zeroed (contents are the caller's to set). */
    char *t = pl_slab_take(&s);
    CHECK(t != NULL && (uintptr_t)t % 8 == 0);
    CHECK_EQ_INT(s.used, N + 1);
    memset(t, 1, 64);
    pl_slab_put(&s, t);
    CHECK_EQ_INT(s.used, N);
    pl_slab_put(&s, NULL);
    CHECK_EQ_INT(s.used, N);
    /* Half are given back; the rest go with the slab's pages. In a sanitizer build (no pages:
     * calloc and free) all are given back, or the leak checker would count them. */
    for (int i = 0; i < N; i++)
        if (i < N / 2 || s.npages == 0) pl_slab_put(&s, p[i]);
    pl_slab_free(&s);
    CHECK_EQ_INT(s.used, 0);
    CHECK_EQ_INT(s.size, 64);
}

static void pages_come_and_go(void)
{
    static char *p[N];
    pl_slab_t s;
    pl_slab_init(&s, 300);
    void *probe = pl_slab_get(&s);
    int mapped = s.npages == 1; /* 0: a sanitizer build, where the slab is calloc and free */
    pl_slab_put(&s, probe);
    if (!mapped) {
        pl_slab_free(&s);
        return;
    }
    size_t per = s.per_page;
    CHECK(per >= 200 && per * 300 <= PL_SLAB_PAGE);
    for (int i = 0; i < N; i++)
        p[i] = pl_slab_get(&s);
    size_t pages = (N + per - 1) / per;
    CHECK_EQ_INT(s.npages, pages);
    /* Every slot lies in a page-aligned page, after its header. */
    for (int i = 0; i < N; i++) {
        uintptr_t off = (uintptr_t)p[i] & (PL_SLAB_PAGE - 1);
        CHECK(off >= 32 && off + 300 <= PL_SLAB_PAGE);
    }
    /* A slot freed in a full page is the next one handed out: no new page. */
    char *mid = p[per + 3];
    pl_slab_put(&s, mid);
    p[per + 3] = pl_slab_get(&s);
    CHECK(p[per + 3] == mid);
    CHECK_EQ_INT(s.npages, pages);
    /* Emptying every page unmaps all of them but the spare. */
    for (int i = 0; i < N; i++)
        pl_slab_put(&s, p[i]);
    CHECK_EQ_INT(s.used, 0);
    CHECK_EQ_INT(s.npages, 1);
    CHECK(s.partial == NULL && s.full == NULL && s.spare != NULL);
    /* The spare serves the next allocation, from its first slot. */
    char *q = pl_slab_get(&s);
    CHECK(q && ((uintptr_t)q & (PL_SLAB_PAGE - 1)) < 64);
    CHECK_EQ_INT(s.npages, 1);
    pl_slab_put(&s, q);
    pl_slab_free(&s);
    CHECK_EQ_INT(s.npages, 0);
}

/* A zeroed slab that was never set up (a table nobody used) can be freed. */
static void zeroed_slab_frees(void)
{
    pl_slab_t s;
    memset(&s, 0, sizeof s);
    pl_slab_free(&s);
    CHECK(s.size == 0 && s.npages == 0 && s.used == 0);
}

int main(void)
{
    RUN(zeroed_slab_frees);
    RUN(slots_distinct_zeroed_aligned);
    RUN(pages_come_and_go);
    UNIT_EXIT();
}
