/* Unit tests for src/svc/slots.c: key slots (against values CLUSTER KEYSLOT gave on Redis
 * 7.0.15), CLUSTER SLOTS replies read through hiredis' own reader, MOVED and ASK. */
#include "parley/svc/slots.h"

#include <hiredis/hiredis.h>
#include <string.h>

#include "unit.h"

static uint16_t slot(const char *k)
{
    return pl_slots_key(k, strlen(k));
}

static void key_slots_match_redis(void)
{
    /* redis-cli -p <a cluster-enabled redis-server> CLUSTER KEYSLOT <key> */
    CHECK_EQ_INT(slot("123456789"), 12739);
    CHECK_EQ_INT(slot("foo"), 12182);
    CHECK_EQ_INT(slot("bar"), 5061);
    CHECK_EQ_INT(slot("somekey"), 11058);
    CHECK_EQ_INT(slot(""), 0);
    CHECK_EQ_INT(slot("parley:seq:{general}"), 9981);
}

static void hash_tags(void)
{
    CHECK_EQ_INT(slot("foo{hash_tag}"), 2515);
    CHECK_EQ_INT(slot("bar{hash_tag}"), 2515); /* the tag alone decides */
    CHECK_EQ_INT(slot("{user1000}.following"), 3443);
    CHECK_EQ_INT(slot("{user1000}.followers"), 3443);
    CHECK_EQ_INT(slot("{}x"), 10595);    /* an empty tag: the whole key */
    CHECK_EQ_INT(slot("a{}{b}"), 15033); /* the first '{' only, its tag empty: the whole key */
    CHECK_EQ_INT(slot("{a}{b}"), 15495); /* the first tag */
    CHECK_EQ_INT(slot("{a}{b}"), slot("a"));
    CHECK_EQ_INT(slot("x{"), 3596); /* no closing brace */
    CHECK_EQ_INT(slot("{"), 4092);
}

/* A reply as hiredis reads it from `resp`; freed by the caller. */
static redisReply *read_reply(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    if (redisReaderFeed(rd, resp, strlen(resp)) != REDIS_OK ||
        redisReaderGetReply(rd, &r) != REDIS_OK)
        r = NULL;
    redisReaderFree(rd);
    return r;
}

/* Three masters, each range with its master then one replica: node entries as Redis 7.0 sends
 * them (host, port, id, and an empty map of extra addresses). */
#define NODE(host, port, id) "*4\r\n$9\r\n" host "\r\n:" port "\r\n$2\r\n" id "\r\n*0\r\n"
static const char cluster_slots[] =
    "*3\r\n"
    "*4\r\n:0\r\n:5460\r\n" NODE("127.0.0.1", "30001", "m1") NODE(
        "127.0.0.1", "30004", "r1") "*4\r\n:5461\r\n:10922\r\n" NODE("127.0.0.1", "30002", "m2")
        NODE("127.0.0.1", "30005", "r2") "*4\r\n:10923\r\n:16383\r\n" NODE(
            "127.0.0.1", "30003", "m3") NODE("127.0.0.1", "30006", "r3");

static void parses_cluster_slots(void)
{
    static pl_slots_map_t m;
    redisReply *r = read_reply(cluster_slots);
    CHECK(r != NULL);
    CHECK_EQ_INT(pl_slots_parse(&m, r), PL_SLOTS);
    CHECK_EQ_INT(m.nnodes, 3); /* masters only */
    const pl_slots_node_t *n = pl_slots_node(&m, 0);
    CHECK(n && n->port == 30001 && strcmp(n->host, "127.0.0.1") == 0);
    CHECK_EQ_INT(pl_slots_node(&m, 5460)->port, 30001);
    CHECK_EQ_INT(pl_slots_node(&m, 5461)->port, 30002);
    CHECK_EQ_INT(pl_slots_node(&m, 12739)->port, 30003);
    CHECK_EQ_INT(pl_slots_node(&m, 16383)->port, 30003);
    CHECK_EQ_INT(n->replicas, 1); /* what cluster mode's WAIT waits for at most */
    freeReplyObject(r);
    /* A cluster with uncovered slots: those have no owner. */
    r = read_reply("*1\r\n*3\r\n:100\r\n:199\r\n" NODE("127.0.0.1", "30001", "m1"));
    CHECK_EQ_INT(pl_slots_parse(&m, r), 100);
    CHECK(pl_slots_node(&m, 99) == NULL && pl_slots_node(&m, 200) == NULL);
    CHECK(pl_slots_node(&m, 150) != NULL);
    CHECK_EQ_INT(pl_slots_node(&m, 150)->replicas, 0); /* a master a failover left alone */
    freeReplyObject(r);
}

static void refuses_what_is_not_cluster_slots(void)
{
    static pl_slots_map_t m;
    const char *bad[] = {
        "-ERR This instance has cluster support disabled\r\n",
        ":1\r\n",
        "*1\r\n*3\r\n:0\r\n:16384\r\n" NODE("127.0.0.1", "30001", "m1"),  /* past the last slot */
        "*1\r\n*3\r\n:10\r\n:5\r\n" NODE("127.0.0.1", "30001", "m1"),     /* backwards */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$9\r\n127.0.0.1\r\n:0\r\n",        /* port 0 */
        "*1\r\n*2\r\n:0\r\n:5\r\n",                                       /* no node */
        "*1\r\n*3\r\n$1\r\n0\r\n:5\r\n" NODE("127.0.0.1", "30001", "m1"), /* a string slot */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        redisReply *r = read_reply(bad[i]);
        CHECK(r != NULL);
        CHECK_EQ_INT(pl_slots_parse(&m, r), -1);
        CHECK(pl_slots_node(&m, 0) == NULL); /* cleared */
        freeReplyObject(r);
    }
}

static void redirections(void)
{
    pl_slots_redirect_t d;
    const char *moved = "MOVED 3999 127.0.0.1:6381";
    CHECK_EQ_INT(pl_slots_redirect(moved, strlen(moved), &d), 0);
    CHECK(d.ask == 0 && d.slot == 3999 && d.to.port == 6381);
    CHECK_STR(d.to.host, "127.0.0.1");
    const char *ask = "ASK 12182 10.0.0.7:30002";
    CHECK_EQ_INT(pl_slots_redirect(ask, strlen(ask), &d), 0);
    CHECK(d.ask == 1 && d.slot == 12182 && d.to.port == 30002);
    CHECK_STR(d.to.host, "10.0.0.7");
    const char *v6 = "MOVED 1 ::1:7000";
    CHECK_EQ_INT(pl_slots_redirect(v6, strlen(v6), &d), 0);
    CHECK(d.to.port == 7000);
    CHECK_STR(d.to.host, "::1");
    const char *bad[] = {"ERR unknown command", "MOVED 16384 127.0.0.1:1",
                         "MOVED x 1.2.3.4:5",   "MOVED 5 1.2.3.4",
                         "MOVED 5 1.2.3.4:0",   "MOVED 5 1.2.3.4:70000",
                         "MOVED 5 :6379",       "ASK 5 1.2.3.4:12x",
                         "MOVED  5 1.2.3.4:1",  "CLUSTERDOWN Hash slot not served"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_EQ_INT(pl_slots_redirect(bad[i], strlen(bad[i]), &d), -1);
}

int main(void)
{
    RUN(key_slots_match_redis);
    RUN(hash_tags);
    RUN(parses_cluster_slots);
    RUN(refuses_what_is_not_cluster_slots);
    RUN(redirections);
    UNIT_EXIT();
}
