/*
 * fuzz_reply: Redis replies read by hiredis' reader into svc/reply.c's arena, with arbitrary
 * bytes from the server (what the subscriber and each shard's connection read).
 *
 * Input: a byte choosing how the rest is cut into reads, then RESP bytes. Each complete reply
 * is walked the way the handlers walk it and freed with pl_reply_free; what is left, a reply
 * cut short, is freed by redisReaderFree through the arena, as when a connection is lost.
 *
 * Oracles: the sanitizers; every object of a reply lies in the arena and is what hiredis' own
 * reply functions would have built (the same tree is built by a reader with the default
 * functions and compared); the arena is reused from its start after each reply; the same
 * replies whether the bytes come in one read or in pieces.
 */
#include <string.h>

#include "fuzz.h"
#include "parley/svc/reply.h"

static void walk(const redisReply *r, fuzz_digest_t *d, int depth)
{
    FUZZ_ASSERT(depth < 16);
    fuzz_digest_int(d, r->type);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        FUZZ_ASSERT(r->str && r->str[r->len] == '\0');
        fuzz_digest_int(d, (long long)r->len);
        fuzz_digest_add(d, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        fuzz_digest_int(d, r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        fuzz_digest_int(d, (long long)r->elements);
        for (size_t i = 0; i < r->elements; i++) {
            FUZZ_ASSERT(r->element[i]);
            walk(r->element[i], d, depth + 1);
        }
        break;
    case REDIS_REPLY_NIL:
        break;
    default:
        FUZZ_ASSERT(!"unknown reply type");
    }
}

/* hiredis' own reply functions, with the same limit on arrays as the arena's. */
static redisReplyObjectFunctions own;
static void *(*own_array)(const redisReadTask *, int);
static void *limited_array(const redisReadTask *task, int elements)
{
    return elements > PL_REPLY_MAX_ELEMENTS ? NULL : own_array(task, elements);
}

/* Feed `data` cut by `cut` to a reader (`arena` NULL: hiredis' own reply functions). */
static uint64_t run(const uint8_t *data, size_t size, unsigned cut, pl_reply_arena_t *arena)
{
    fuzz_digest_t d;
    fuzz_digest_init(&d);
    redisReader *rd = redisReaderCreate();
    FUZZ_ASSERT(rd);
    if (arena) {
        pl_reply_attach(rd, arena);
    } else {
        if (!own_array) {
            own = *rd->fn;
            own_array = own.createArray;
            own.createArray = limited_array;
        }
        rd->fn = &own;
    }
    void *first = NULL;
    int err = 0;
    for (size_t off = 0; off < size && !err;) {
        size_t len = fuzz_piece(cut, off, size - off);
        if (redisReaderFeed(rd, (const char *)data + off, len) != REDIS_OK) err = 1;
        off += len;
        /* Bounded: each reply takes at least 3 bytes of input. */
        for (int k = 0; !err && k <= (int)size; k++) {
            void *reply = NULL;
            if (redisReaderGetReply(rd, &reply) != REDIS_OK) {
                err = 1;
                break;
            }
            if (!reply) break;
            walk(reply, &d, 0);
            if (arena) {
                /* Every reply starts where the first one did: the arena was emptied. */
                if (!first) first = reply;
                FUZZ_ASSERT(reply == first);
                pl_reply_free(reply);
            } else {
                freeReplyObject(reply);
            }
        }
    }
    fuzz_digest_int(&d, err);
    redisReaderFree(rd);
    return d.h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned cut = data[0] % 17;
    pl_reply_arena_t *a = pl_reply_arena_new();
    FUZZ_ASSERT(a);
    uint64_t arena_whole = run(data + 1, size - 1, 0, a);
    FUZZ_ASSERT(run(data + 1, size - 1, 0, NULL) == arena_whole);
    if (cut) FUZZ_ASSERT(run(data + 1, size - 1, cut, a) == arena_whole);
    pl_reply_arena_free(a);
    return 0;
}
