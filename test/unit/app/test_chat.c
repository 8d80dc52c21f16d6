/* Unit tests for src/app/chat.c through the loopback transport (harness.h): presence changes of
 * one loop turn go to Redis as one script call, in order. */
#include "harness.h"

/* The (op, user) pairs of a presence batch, as "u:alice d:bob ...". */
static void pairs(const fake_cmd_t *p, char *out, size_t n)
{
    out[0] = '\0';
    for (int i = 8; i + 1 < p->argc; i += 2)
        snprintf(out + strlen(out), n - strlen(out), "%s%s:%s", i > 8 ? " " : "", p->argv[i],
                 p->argv[i + 1]);
}

static void batches_per_turn(void)
{
    /* Three connections authenticate in one turn: one script call, in order. */
    pl_sock_t *a = cl_connect("alice"), *b = cl_connect("bob"), *c = cl_connect("carol");
    turn();
    fake_cmd_t *p = fr_script(PL_SCRIPT_PRESENCE);
    CHECK(p != NULL);
    CHECK(fr_script(PL_SCRIPT_PRESENCE) == NULL);
    if (!p) return;
    char got[256];
    pairs(p, got, sizeof got);
    CHECK_STR(got, "u:alice u:bob u:carol");
    CHECK_STR(p->argv[4], "unit-1"); /* the server */
    CHECK_STR(p->argv[5], "0");      /* the shard */
    /* alice is the user's first connection anywhere and had DMs waiting: she gets them. */
    fr_answer(p, rarr(3, rarr(2, rinteger(1), rarr(1, rstr("{\"type\":\"message\",\"seq\":1}"))),
                      rarr(2, rinteger(1), rarr(0)), rarr(2, rinteger(0), rarr(0))));
    turn();
    char *f = cl_expect(a, "authenticated");
    free(f);
    f = cl_next(a);
    CHECK(f && frame_seq(f) == 1);
    free(f);
    /* Two close in one turn: one call, their order kept; the third is untouched. */
    static const char close_frame[] = {(char)0x88, (char)0x82, 0, 0, 0, 0, 0x03, (char)0xe8};
    pl_sock_feed(a, (char *)close_frame, sizeof close_frame);
    pl_sock_feed(c, (char *)close_frame, sizeof close_frame);
    turn();
    p = fr_script(PL_SCRIPT_PRESENCE);
    CHECK(p != NULL);
    CHECK(fr_script(PL_SCRIPT_PRESENCE) == NULL);
    if (!p) return;
    pairs(p, got, sizeof got);
    CHECK(strcmp(got, "d:alice d:carol") == 0 || strcmp(got, "d:carol d:alice") == 0);
    fr_answer(p, rarr(2, rinteger(1), rinteger(1)));
    turn();
    (void)b;
}

/* Redis unreachable when connections open: nothing is counted, and the resync when Redis is
 * back counts exactly the connections still open. */
static void resync_after_outage(void)
{
    atomic_store(&shard->redis.connected, 0);
    pl_sock_t *d = cl_connect("dave"), *e = cl_connect("dave");
    turn();
    CHECK(fr_script(PL_SCRIPT_PRESENCE) == NULL);
    static const char close_frame[] = {(char)0x88, (char)0x82, 0, 0, 0, 0, 0x03, (char)0xe8};
    pl_sock_feed(e, (char *)close_frame, sizeof close_frame);
    turn();
    atomic_store(&shard->redis.connected, 1);
    pl_publish_redis_up(&shard->redis);
    fake_cmd_t *r = fr_script(PL_SCRIPT_RESYNC);
    CHECK(r != NULL);
    if (!r) return;
    /* prefix server shard now ttl, then user/count pairs: bob 1 (still open), dave 1 */
    int dave = -1;
    for (int i = 8; i + 1 < r->argc; i += 2)
        if (strcmp(r->argv[i], "dave") == 0) dave = atoi(r->argv[i + 1]);
    CHECK_EQ_INT(dave, 1);
    fr_answer(r, rinteger(0));
    fr_answer_routine();
    turn();
    (void)d;
}

/* dave closes before his "u" is answered: his "d" waits for the answer (the script may have
 * refused to count him) and goes once he was counted. erin's token was revoked by a disconnect:
 * the answer says so ({-1}); she gets the notice and 4003, and no "d" ever goes for her. */
static void revoked_and_deferred(void)
{
    pl_sock_t *d = cl_connect("dave");
    cl_connect("erin");
    turn();
    fake_cmd_t *p = fr_script(PL_SCRIPT_PRESENCE);
    CHECK(p != NULL);
    if (!p) return;
    char got[256];
    pairs(p, got, sizeof got);
    CHECK_STR(got, "u:dave u:erin");
    static const char close_frame[] = {(char)0x88, (char)0x82, 0, 0, 0, 0, 0x03, (char)0xe8};
    pl_sock_feed(d, (char *)close_frame, sizeof close_frame);
    turn();
    CHECK(fr_script(PL_SCRIPT_PRESENCE) == NULL); /* dave's "d" waits */
    fr_answer(p, rarr(2, rarr(2, rinteger(1), rarr(0)), rarr(2, rinteger(-1), rarr(0))));
    turn();
    /* erin's connection is closed and freed by now: read what it was sent. */
    char *f = cl_closed_next();
    CHECK(f && strstr(f, "\"type\":\"authenticated\""));
    free(f);
    f = cl_closed_next();
    CHECK(f && strstr(f, "\"type\":\"server_notice\"") && strstr(f, "\"code\":\"disconnected\""));
    free(f);
    f = cl_closed_next(); /* the close frame's payload: 4003 and the reason */
    CHECK(f && (unsigned char)f[0] == 0x0f && (unsigned char)f[1] == 0xa3 &&
          strcmp(f + 2, "token revoked") == 0);
    free(f);
    p = fr_script(PL_SCRIPT_PRESENCE);
    CHECK(p != NULL);
    if (!p) return;
    pairs(p, got, sizeof got);
    CHECK_STR(got, "d:dave");
    fr_answer(p, rarr(1, rinteger(1)));
    turn();
    CHECK(fr_script(PL_SCRIPT_PRESENCE) == NULL); /* erin's close counts nothing down */
    CHECK_EQ_INT(pl_counter_get(&shard->stats.auth_failures[PL_AUTH_FAIL_REVOKED]), 1);
}

int main(void)
{
    gw_init(0);
    RUN(batches_per_turn);
    RUN(resync_after_outage);
    RUN(revoked_and_deferred);
    UNIT_EXIT();
}
