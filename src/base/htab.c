/* htab: intrusive chained hash table; see the header. */
#include "parley/base/htab.h"

#include <stdlib.h>
#include <string.h>

uint32_t pl_htab_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int pl_htab_reserve(pl_htab_t *t)
{
    if (t->count < 2 * t->nbuckets) return 0; /* two per bucket: half the buckets' bytes */
    size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    pl_hnode_t **b = calloc(n, sizeof *b);
    if (!b) return t->nbuckets ? 0 : -1;
    for (size_t i = 0; i < t->nbuckets; i++) {
        pl_hnode_t *e = t->buckets[i];
        while (e) {
            pl_hnode_t *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

void pl_htab_insert(pl_htab_t *t, pl_hnode_t *n)
{
    pl_hnode_t **b = &t->buckets[n->hash & (t->nbuckets - 1)];
    n->next = *b;
    *b = n;
    t->count++;
}

void pl_htab_remove(pl_htab_t *t, pl_hnode_t *n)
{
    pl_hnode_t **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
    while (*pp != n)
        pp = &(*pp)->next;
    *pp = n->next;
    t->count--;
}

static pl_hnode_t *first_from(const pl_htab_t *t, size_t bucket)
{
    for (; bucket < t->nbuckets; bucket++)
        if (t->buckets[bucket]) return t->buckets[bucket];
    return NULL;
}

pl_hnode_t *pl_htab_first(const pl_htab_t *t)
{
    return first_from(t, 0);
}

pl_hnode_t *pl_htab_next(const pl_htab_t *t, const pl_hnode_t *n)
{
    return n->next ? n->next : first_from(t, (n->hash & (t->nbuckets - 1)) + 1);
}

void pl_htab_free(pl_htab_t *t)
{
    free(t->buckets);
    memset(t, 0, sizeof *t);
}
