/* room: chained hash table of rooms, each with an array of subscriptions. */
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
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

void pl_room_table_init(pl_room_table_t *t)
{
    memset(t, 0, sizeof *t);
}

void pl_room_table_free(pl_room_table_t *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        pl_room_t *r = t->buckets[i];
        while (r) {
            pl_room_t *next = r->hnext;
            for (uint32_t j = 0; j < r->nmembers; j++)
                free(r->members[j]);
            free(r->members);
            free(r);
            r = next;
        }
    }
    free(t->buckets);
    memset(t, 0, sizeof *t);
}

pl_room_t *pl_room_find(const pl_room_table_t *t, const char *name, size_t len)
{
    if (!t->nbuckets) return NULL;
    uint32_t h = pl_room_hash(name, len);
    for (pl_room_t *r = t->buckets[h & (t->nbuckets - 1)]; r; r = r->hnext)
        if (r->hash == h && r->len == len && memcmp(r->name, name, len) == 0) return r;
    return NULL;
}

static pl_room_t *first_from(const pl_room_table_t *t, size_t bucket)
{
    for (; bucket < t->nbuckets; bucket++)
        if (t->buckets[bucket]) return t->buckets[bucket];
    return NULL;
}

pl_room_t *pl_room_first(const pl_room_table_t *t)
{
    return first_from(t, 0);
}

pl_room_t *pl_room_next(const pl_room_table_t *t, const pl_room_t *r)
{
    return r->hnext ? r->hnext : first_from(t, (r->hash & (t->nbuckets - 1)) + 1);
}

pl_sub_t *pl_room_sub_of(pl_sub_t *list, const pl_room_t *room)
{
    for (; list; list = list->next)
        if (list->room == room) return list;
    return NULL;
}

/* Keep the load factor at most 1; returns -1 on allocation failure. */
static int maybe_grow(pl_room_table_t *t)
{
    if (t->count < t->nbuckets) return 0;
    size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    pl_room_t **b = calloc(n, sizeof *b);
    if (!b) return t->nbuckets ? 0 : -1; /* a full table still works, only slower */
    for (size_t i = 0; i < t->nbuckets; i++) {
        pl_room_t *r = t->buckets[i];
        while (r) {
            pl_room_t *next = r->hnext;
            r->hnext = b[r->hash & (n - 1)];
            b[r->hash & (n - 1)] = r;
            r = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

static void room_unlink_free(pl_room_table_t *t, pl_room_t *room)
{
    pl_room_t **pp = &t->buckets[room->hash & (t->nbuckets - 1)];
    while (*pp != room)
        pp = &(*pp)->hnext;
    *pp = room->hnext;
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
        if (maybe_grow(t) != 0) return NULL;
        room = calloc(1, sizeof *room + len + 1);
        if (!room) return NULL;
        room->hash = pl_room_hash(name, len);
        room->len = (uint32_t)len;
        memcpy(room->name, name, len);
        room->hnext = t->buckets[room->hash & (t->nbuckets - 1)];
        t->buckets[room->hash & (t->nbuckets - 1)] = room;
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
    pl_sub_t *s = calloc(1, sizeof *s);
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
    free(sub);
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
    for (size_t b = 0; b < t->nbuckets; b++)
        for (pl_room_t *r = t->buckets[b]; r; r = r->hnext)
            for (uint32_t i = 0; i < r->nmembers; i++)
                cb(r->members[i], arg);
}
