/* Unit tests for src/reply.c: replies built by a real hiredis reader in an arena. */
#include "parley/svc/reply.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

static redisReader *reader(pl_reply_arena_t *a)
{
    redisReader *r = redisReaderCreate();
    if (r) pl_reply_attach(r, a);
    return r;
}

static redisReply *feed(redisReader *r, const char *resp, size_t len)
{
    void *reply = NULL;
    if (redisReaderFeed(r, resp, len) != REDIS_OK) return NULL;
    if (redisReaderGetReply(r, &reply) != REDIS_OK) return NULL;
    return reply;
}

/* A pmessage, as the subscriber reads it, byte for byte into every field. */
static void pmessage(void)
{
    pl_reply_arena_t *a = pl_reply_arena_new();
    redisReader *r = reader(a);
    CHECK(a && r);
    static const char m[] = "*4\r\n$8\r\npmessage\r\n$6\r\nroom:*\r\n$7\r\nroom:r1\r\n"
                            "$11\r\n{\"a\":\"b\0c\"}\r\n";
    redisReply *x = feed(r, m, sizeof m - 1);
    CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements == 4);
    CHECK(x->element[0]->type == REDIS_REPLY_STRING && strcmp(x->element[0]->str, "pmessage") == 0);
    CHECK_EQ_INT(x->element[2]->len, 7);
    CHECK_STR(x->element[2]->str, "room:r1");
    CHECK_EQ_INT(x->element[3]->len, 11);
    CHECK(memcmp(x->element[3]->str, "{\"a\":\"b\0c\"}", 11) == 0); /* binary-safe */
    CHECK(x->element[3]->str[11] == '\0');
    pl_reply_free(x);

    /* The next reply reuses the same memory: nothing was allocated for it. */
    redisReply *y = feed(r, m, sizeof m - 1);
    CHECK(y == x);
    pl_reply_free(y);
    redisReaderFree(r);
    pl_reply_arena_free(a);
}

/* Every reply type, nested arrays, nil and empty arrays, as a script's reply looks. */
static void types(void)
{
    pl_reply_arena_t *a = pl_reply_arena_new();
    redisReader *r = reader(a);
    static const char m[] = "*5\r\n:42\r\n$-1\r\n*0\r\n*2\r\n+OK\r\n-ERR no\r\n*-1\r\n";
    redisReply *x = feed(r, m, sizeof m - 1);
    CHECK(x && x->type == REDIS_REPLY_ARRAY && x->elements == 5);
    CHECK(x->element[0]->type == REDIS_REPLY_INTEGER && x->element[0]->integer == 42);
    CHECK(x->element[1]->type == REDIS_REPLY_NIL);
    CHECK(x->element[2]->type == REDIS_REPLY_ARRAY && x->element[2]->elements == 0);
    redisReply *in = x->element[3];
    CHECK(in->type == REDIS_REPLY_ARRAY && in->elements == 2);
    CHECK(in->element[0]->type == REDIS_REPLY_STATUS && strcmp(in->element[0]->str, "OK") == 0);
    CHECK(in->element[1]->type == REDIS_REPLY_ERROR && strcmp(in->element[1]->str, "ERR no") == 0);
    CHECK(x->element[4]->type == REDIS_REPLY_NIL); /* a nil array */
    pl_reply_free(x);

    /* A lone error and a lone integer are roots too. */
    redisReply *e = feed(r, "-NOSCRIPT x\r\n", 13);
    CHECK(e && e->type == REDIS_REPLY_ERROR && strcmp(e->str, "NOSCRIPT x") == 0);
    pl_reply_free(e);
    redisReply *i = feed(r, ":-7\r\n", 5);
    CHECK(i && i->type == REDIS_REPLY_INTEGER && i->integer == -7);
    pl_reply_free(i);
    redisReaderFree(r);
    pl_reply_arena_free(a);
}

/* A reply larger than the first block (catch-up with many entries) takes more blocks; the
 * reset gives them back (valgrind: no leak), and the arena works as before afterwards. */
static void big_reply(void)
{
    pl_reply_arena_t *a = pl_reply_arena_new();
    redisReader *r = reader(a);
    enum { N = 3000 };
    char *m = malloc(N * 16 + 16);
    size_t n = (size_t)sprintf(m, "*%d\r\n", N);
    for (int k = 0; k < N; k++)
        n += (size_t)sprintf(m + n, "$4\r\n%04d\r\n", k);
    redisReply *x = feed(r, m, n);
    CHECK(x && x->elements == N);
    int bad = 0;
    for (int k = 0; k < N; k++) {
        char want[12];
        snprintf(want, sizeof want, "%04d", k);
        if (strcmp(x->element[k]->str, want) != 0) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    pl_reply_free(x);
    redisReply *y = feed(r, ":1\r\n", 4);
    CHECK(y && y->integer == 1);
    pl_reply_free(y);
    free(m);
    redisReaderFree(r);
    pl_reply_arena_free(a);
}

/* A reply cut short by a lost connection: the reader frees the part it built through the arena. */
static void partial_then_free(void)
{
    pl_reply_arena_t *a = pl_reply_arena_new();
    redisReader *r = reader(a);
    void *reply = NULL;
    CHECK(redisReaderFeed(r, "*3\r\n$3\r\nabc\r\n:1\r\n", 17) == REDIS_OK);
    CHECK(redisReaderGetReply(r, &reply) == REDIS_OK && reply == NULL); /* not complete */
    redisReaderFree(r);
    pl_reply_arena_free(a);
}

/* An array count as large as RESP allows fails the read (as out of memory) instead of having the
 * arena allocate and zero 16 GiB for its element table; one under the limit still reads. */
static void huge_array_refused(void)
{
    pl_reply_arena_t *a = pl_reply_arena_new();
    redisReader *r = reader(a);
    void *reply = NULL;
    CHECK(redisReaderFeed(r, "*2147483647\r\n", 13) == REDIS_OK);
    CHECK(redisReaderGetReply(r, &reply) == REDIS_ERR && reply == NULL);
    CHECK_EQ_INT(r->err, REDIS_ERR_OOM);
    redisReaderFree(r);
    r = reader(a);
    char m[32];
    int n = snprintf(m, sizeof m, "*%d\r\n", PL_REPLY_MAX_ELEMENTS + 1);
    CHECK(redisReaderFeed(r, m, (size_t)n) == REDIS_OK);
    CHECK(redisReaderGetReply(r, &reply) == REDIS_ERR && reply == NULL);
    redisReaderFree(r);
    r = reader(a);
    CHECK(feed(r, "*1\r\n:5\r\n", 8) != NULL);
    redisReaderFree(r);
    pl_reply_arena_free(a);
}

int main(void)
{
    RUN(pmessage);
    RUN(types);
    RUN(big_reply);
    RUN(partial_then_free);
    RUN(huge_array_refused);
    UNIT_EXIT();
}
