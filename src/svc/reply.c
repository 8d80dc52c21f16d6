/*
 * reply: hiredis reply objects from an arena (see the header). The root object
 * of each reply is preceded by a small header naming its arena, because
 * hiredis' freeObject gets the reply and nothing else.
 */
#include "parley/svc/reply.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Enough for the replies of the hot path (a script's {1, seq}, a pmessage with a few hundred
 * bytes of payload) many times over, so they never take a second block. */
#define FIRST_BLOCK 8192
#define ALIGN 16

/* A block of arena memory; the first is kept across resets, the others are freed by them. */
typedef struct block {
    struct block *next;
    size_t cap, used;
    alignas(ALIGN) unsigned char data[];
} block_t;

/* Allocated by pl_reply_arena_new, freed by pl_reply_arena_free. */
struct pl_reply_arena {
    block_t *cur;   /* where allocations go: first, or the newest extra block */
    block_t *extra; /* blocks beyond the first, newest first */
    block_t *first;
};

/* Precedes a reply's root object. */
typedef struct {
    alignas(ALIGN) pl_reply_arena_t *arena;
} root_t;

static block_t *block_new(size_t cap)
{
    block_t *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

static void *arena_alloc(pl_reply_arena_t *a, size_t n)
{
    n = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    block_t *b = a->cur;
    if (b->cap - b->used < n) {
        b = block_new(n > FIRST_BLOCK ? n : FIRST_BLOCK);
        if (!b) return NULL;
        b->next = a->extra;
        a->extra = b;
        a->cur = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static void arena_reset(pl_reply_arena_t *a)
{
    while (a->extra) {
        block_t *b = a->extra;
        a->extra = b->next;
        free(b);
    }
    a->first->used = 0;
    a->cur = a->first;
}

pl_reply_arena_t *pl_reply_arena_new(void)
{
    pl_reply_arena_t *a = malloc(sizeof *a);
    block_t *b = block_new(FIRST_BLOCK);
    if (!a || !b) {
        free(a);
        free(b);
        return NULL;
    }
    a->cur = a->first = b;
    a->extra = NULL;
    return a;
}

void pl_reply_arena_free(pl_reply_arena_t *a)
{
    if (!a) return;
    arena_reset(a);
    free(a->first);
    free(a);
}

/* A redisReply of `type` with `extra` more bytes after it, linked into its parent array. */
static redisReply *create(const redisReadTask *task, int type, size_t extra)
{
    pl_reply_arena_t *a = task->privdata;
    redisReply *r;
    if (task->parent) {
        r = arena_alloc(a, sizeof *r + extra);
    } else {
        root_t *h = arena_alloc(a, sizeof *h + sizeof *r + extra);
        if (!h) return NULL;
        h->arena = a;
        r = (redisReply *)(h + 1);
    }
    if (!r) return NULL;
    memset(r, 0, sizeof *r);
    r->type = type;
    if (task->parent) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r = create(task, task->type, len + 1);
    if (!r) return NULL;
    r->str = (char *)(r + 1);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    /* "*2147483647\r\n" would have the arena allocate and zero 16 GiB (hiredis' own calloc at
     * least leaves the pages untouched); test/fuzz/fuzz_reply feeds such counts. */
    if (n > PL_REPLY_MAX_ELEMENTS) return NULL;
    redisReply *r = create(task, REDIS_REPLY_ARRAY, n * sizeof(redisReply *));
    if (!r) return NULL;
    r->elements = n;
    r->element = n ? (redisReply **)(r + 1) : NULL;
    if (n) memset(r->element, 0, n * sizeof(redisReply *));
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    redisReply *r = create(task, REDIS_REPLY_INTEGER, 0);
    if (r) r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    return create(task, REDIS_REPLY_NIL, 0);
}

void pl_reply_free(void *reply)
{
    if (reply) arena_reset(((root_t *)reply - 1)->arena);
}

static redisReplyObjectFunctions arena_fns = {
    create_string, create_array, create_integer, create_nil, pl_reply_free,
};

void pl_reply_attach(redisReader *r, pl_reply_arena_t *a)
{
    r->fn = &arena_fns;
    r->privdata = a;
}
