/* room: the shard's rooms (an htab), each with an array of subscriptions. */
#include "parley/app/room.h"

#include <stdlib.h>
#include <string.h>

int pl_room_id_valid(const char *name, size_t len)
{
    if (len == 0 || len > PL_ROOM_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

uint32_t pl_room_hash(const char *s, size_t n)
{
    return pl_htab_hash(s, n);
}

static pl_room_t *room_of(pl_hnode_t *n)
{
    return n ? (pl_room_t *)((char *)n - offsetof(pl_room_t, node)) : NULL;
}

void pl_room_table_init(pl_room_table_t *t)
{
    memset(t, 0, sizeof *t);
}

void pl_room_table_free(pl_room_table_t *t)
{
    pl_hnode_t *n = pl_htab_first(&t->h);
    while (n) {
        pl_room_t *r = room_of(n);
        n = pl_htab_next(&t->h, n);
        for (uint32_t j = 0; j < r->nmembers; j++) /* one by one: memory checkers count them */
            pl_slab_put(&t->sub_slab, r->members[j]);
        free(r->members);
        free(r);
    }
    pl_htab_free(&t->h);
    pl_slab_free(&t->sub_slab);
    memset(t, 0, sizeof *t);
}

pl_room_t *pl_room_find(const pl_room_table_t *t, const char *name, size_t len)
{
    uint32_t h = pl_room_hash(name, len);
    for (pl_hnode_t *n = pl_htab_chain(&t->h, h); n; n = n->next) {
        pl_room_t *r = room_of(n);
        if (n->hash == h && r->len == len && memcmp(r->name, name, len) == 0) return r;
    }
    return NULL;
}

pl_room_t *pl_room_first(const pl_room_table_t *t)
{
    return room_of(pl_htab_first(&t->h));
}

pl_room_t *pl_room_next(const pl_room_table_t *t, const pl_room_t *r)
{
    return room_of(pl_htab_next(&t->h, &r->node));
}

pl_sub_t *pl_room_sub_of(pl_sub_t *list, const pl_room_t *room)
{
    for (; list; list = list->next)
        if (list->room == room) return list;
    return NULL;
}

static void room_unlink_free(pl_room_table_t *t, pl_room_t *room)
{
    pl_htab_remove(&t->h, &room->node);
    t->count--;
    if (t->on_room) t->on_room(t->on_room_ctx, room, 0);
    free(room->members);
    free(room);
}

pl_sub_t *pl_room_join(pl_room_table_t *t, const char *name, size_t len, void *owner,
                       pl_sub_t **list)
{
    pl_room_t *room = pl_room_find(t, name, len);
    if (room) {
        pl_sub_t *s = pl_room_sub_of(*list, room);
        if (s) return s;
    } else {
        if (pl_htab_reserve(&t->h) != 0) return NULL;
        room = calloc(1, sizeof *room + len + 1);
        if (!room) return NULL;
        room->node.hash = pl_room_hash(name, len);
        room->len = (uint32_t)len;
        memcpy(room->name, name, len);
        pl_htab_insert(&t->h, &room->node);
        t->count++;
        if (t->on_room) t->on_room(t->on_room_ctx, room, 1);
    }
    if (room->nmembers == room->cap) {
        uint32_t cap = room->cap ? room->cap * 2 : 4;
        pl_sub_t **m = realloc(room->members, cap * sizeof *m);
        if (!m) goto fail;
        room->members = m;
        room->cap = cap;
    }
    if (!t->sub_slab.size) pl_slab_init(&t->sub_slab, sizeof(pl_sub_t)); /* zero-initialised */
    pl_sub_t *s = pl_slab_get(&t->sub_slab);
    if (!s) goto fail;
    s->room = room;
    s->owner = owner;
    s->idx = room->nmembers;
    room->members[room->nmembers++] = s;
    t->subs++;
    s->next = *list;
    *list = s;
    return s;
fail:
    if (room->nmembers == 0) room_unlink_free(t, room);
    return NULL;
}

void pl_room_leave(pl_room_table_t *t, pl_sub_t **list, pl_sub_t *sub)
{
    pl_sub_t **pp = list;
    while (*pp && *pp != sub)
        pp = &(*pp)->next;
    if (*pp) *pp = sub->next;

    pl_room_t *room = sub->room;
    pl_sub_t *last = room->members[--room->nmembers];
    room->members[sub->idx] = last;
    last->idx = sub->idx;
    t->subs--;
    pl_slab_put(&t->sub_slab, sub);
    if (room->nmembers == 0) room_unlink_free(t, room);
}

void pl_room_leave_all(pl_room_table_t *t, pl_sub_t **list)
{
    while (*list)
        pl_room_leave(t, list, *list);
}

size_t pl_room_count(const pl_sub_t *list)
{
    size_t n = 0;
    for (; list; list = list->next)
        n++;
    return n;
}

void pl_room_table_each(pl_room_table_t *t, void (*cb)(pl_sub_t *sub, void *arg), void *arg)
{
    for (pl_room_t *r = pl_room_first(t); r; r = pl_room_next(t, r))
        for (uint32_t i = 0; i < r->nmembers; i++)
            cb(r->members[i], arg);
}
