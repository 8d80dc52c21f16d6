/* Unit tests for src/app/srvlog.c without Redis: the "_lid" member read off a live frame of
 * server:{id}, stream ids, and which frames are handed on (each once, newest only). Reading the
 * log back from a real Redis is tested in test/integration/redis.test.mjs. */
#include "parley/app/srvlog.h"
#include "unit.h"

static int strip(const char *s, pl_srvlog_id_t *id, size_t *keep)
{
    return pl_srvlog_strip(s, strlen(s), id, keep);
}

static void test_strip_reads_the_id_and_cuts_the_member(void)
{
    const char *f =
        "{\"type\":\"message\",\"to\":\"bob\",\"text\":\"hi\",\"_lid\":\"1796160082633-16\"}";
    pl_srvlog_id_t id = {0, 0};
    size_t keep = 0;
    CHECK_EQ_INT(strip(f, &id, &keep), 1);
    CHECK(id.ms == 1796160082633ULL && id.n == 16);
    /* The kept bytes end at the comma, which becomes the closing brace. */
    CHECK_EQ_INT(keep, strlen("{\"type\":\"message\",\"to\":\"bob\",\"text\":\"hi\","));
    CHECK(f[keep - 1] == ',');
}

static void test_strip_leaves_frames_without_it(void)
{
    pl_srvlog_id_t id = {7, 7};
    size_t keep = 99;
    /* An older instance's frame, a text that merely mentions the member, broken ids. */
    CHECK_EQ_INT(strip("{\"type\":\"message\",\"text\":\"hi\"}", &id, &keep), 0);
    CHECK_EQ_INT(strip("{\"text\":\"x,\\\"_lid\\\":\\\"1-2\\\"\"}", &id, &keep), 0);
    CHECK_EQ_INT(strip("{\"a\":1,\"_lid\":\"12\"}", &id, &keep), 0);
    CHECK_EQ_INT(strip("{\"a\":1,\"_lid\":\"1-x\"}", &id, &keep), 0);
    CHECK_EQ_INT(strip("{\"a\":1,\"_lid\":\"-1\"}", &id, &keep), 0);
    CHECK_EQ_INT(strip("{\"a\":1,\"_lid\":\"99999999999999999999-1\"}", &id, &keep), 0);
    CHECK_EQ_INT(strip("\"}", &id, &keep), 0);
    CHECK_EQ_INT(strip("", &id, &keep), 0);
    CHECK(id.ms == 7 && id.n == 7 && keep == 99);
}

static void test_id_parse(void)
{
    pl_srvlog_id_t id;
    CHECK_EQ_INT(pl_srvlog_id_parse("0-0", 3, &id), 0);
    CHECK(id.ms == 0 && id.n == 0);
    CHECK_EQ_INT(pl_srvlog_id_parse("18446744073709551-3", 19, &id), 0);
    CHECK(id.ms == 18446744073709551ULL && id.n == 3);
    CHECK_EQ_INT(pl_srvlog_id_parse("12", 2, &id), -1);
    CHECK_EQ_INT(pl_srvlog_id_parse("1-", 2, &id), -1);
    CHECK_EQ_INT(pl_srvlog_id_parse("1-2 ", 4, &id), -1);
}

static void test_admit_hands_each_on_once(void)
{
    pl_srvlog_t l;
    CHECK_EQ_INT(pl_srvlog_init(&l, "ws:", "it-1"), 0);
    CHECK_STR(l.key, "ws:srvlog:it-1");
    /* Unknown position: the first id is taken. */
    CHECK_EQ_INT(pl_srvlog_admit(&l, (pl_srvlog_id_t){5, 0}), 1);
    /* Read back from the log: 5-1 and 6-0 are new; then the same arrive live and are dropped. */
    CHECK_EQ_INT(pl_srvlog_admit(&l, (pl_srvlog_id_t){5, 1}), 1);
    CHECK_EQ_INT(pl_srvlog_admit(&l, (pl_srvlog_id_t){6, 0}), 1);
    CHECK_EQ_INT(pl_srvlog_admit(&l, (pl_srvlog_id_t){5, 1}), 0);
    CHECK_EQ_INT(pl_srvlog_admit(&l, (pl_srvlog_id_t){6, 0}), 0);
    CHECK_EQ_INT(pl_srvlog_admit(&l, (pl_srvlog_id_t){6, 1}), 1);
    CHECK(l.last.ms == 6 && l.last.n == 1 && l.known);
}

int main(void)
{
    RUN(test_strip_reads_the_id_and_cuts_the_member);
    RUN(test_strip_leaves_frames_without_it);
    RUN(test_id_parse);
    RUN(test_admit_hands_each_on_once);
    UNIT_EXIT();
}
