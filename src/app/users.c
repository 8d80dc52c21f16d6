/* users: the shard's connections by user id; see the header. */
#include "parley/app/users.h"

#include <stdlib.h>
#include <string.h>

static pl_user_t *user_of(pl_hnode_t *n)
{
    return n ? (pl_user_t *)((char *)n - offsetof(pl_user_t, node)) : NULL;
}

/* The entry's size class for a name of `len` bytes, or -1: malloc. */
static int class_of(size_t len)
{
    size_t need = sizeof(pl_user_t) + len + 1;
    size_t c = need <= 48 ? 0 : (need - 48 + 15) / 16;
    return c < PL_USERS_CLASSES ? (int)c : -1;
}

static pl_user_t *entry_new(pl_users_t *t, size_t len)
{
    int c = class_of(len);
    if (c < 0) return malloc(sizeof(pl_user_t) + len + 1);
    pl_slab_t *s = &t->slab[c];
    if (!s->size) pl_slab_init(s, 48 + 16 * (size_t)c); /* zero-initialised */
    return pl_slab_take(s);
}

static void entry_free(pl_users_t *t, pl_user_t *u)
{
    int c = class_of(u->len);
    if (c < 0)
        free(u);
    else
        pl_slab_put(&t->slab[c], u);
}

pl_user_t *pl_users_find(const pl_users_t *t, const char *name, size_t len)
{
    uint32_t h = pl_htab_hash(name, len);
    for (pl_hnode_t *n = pl_htab_chain(&t->h, h); n; n = n->next) {
        pl_user_t *u = user_of(n);
        if (n->hash == h && u->len == len && memcmp(u->name, name, len) == 0) return u;
    }
    return NULL;
}

int pl_users_add(pl_users_t *t, const char *name, size_t len, pl_user_link_t *l)
{
    pl_user_t *u = pl_users_find(t, name, len);
    if (u && u->refs == PL_USERS_MAX_LINKS) return -2;
    if (!u) {
        if (pl_htab_reserve(&t->h) != 0) return -1;
        if (!(u = entry_new(t, len))) return -1;
        u->node.hash = pl_htab_hash(name, len);
        u->first = NULL;
        u->n = 0;
        u->refs = 0;
        u->len = (uint16_t)len;
        memcpy(u->name, name, len);
        u->name[len] = '\0';
        pl_htab_insert(&t->h, &u->node);
    }
    l->next = u->first;
    l->user = u;
    u->first = l;
    u->n++;
    u->refs++;
    return 0;
}

void pl_users_remove(pl_users_t *t, pl_user_link_t *l)
{
    pl_user_t *u = l->user;
    if (!u || l->next == l) return; /* zeroed, or held already */
    pl_user_link_t **pp = &u->first;
    while (*pp != l)
        pp = &(*pp)->next;
    *pp = l->next;
    l->next = l;
    if (--u->n == 0) pl_htab_remove(&t->h, &u->node); /* freed when the last hold goes */
}

void pl_users_release(pl_users_t *t, pl_user_link_t *l)
{
    pl_user_t *u = l->user;
    if (!u) return;
    pl_users_remove(t, l);
    if (--u->refs == 0) entry_free(t, u);
    l->next = NULL;
    l->user = NULL;
}

pl_user_t *pl_users_first(const pl_users_t *t)
{
    return user_of(pl_htab_first(&t->h));
}

pl_user_t *pl_users_next(const pl_users_t *t, const pl_user_t *u)
{
    return user_of(pl_htab_next(&t->h, &u->node));
}

void pl_users_free(pl_users_t *t)
{
    pl_hnode_t *n = pl_htab_first(&t->h);
    while (n) {
        pl_user_t *u = user_of(n);
        n = pl_htab_next(&t->h, n);
        entry_free(t, u);
    }
    pl_htab_free(&t->h);
    for (int c = 0; c < PL_USERS_CLASSES; c++)
        pl_slab_free(&t->slab[c]);
}
