/* Unit tests for src/app/publish.c through the loopback transport (harness.h): messages sent
 * while the subscription catches up wait for `subscribed` and keep their order; messages wait,
 * in order, while Redis is not ready; acks. */
#include "harness.h"

static pl_sock_t *client(const char *user)
{
    pl_sock_t *c = cl_connect(user);
    turn();
    fake_cmd_t *p = fr_script(PL_SCRIPT_PRESENCE);
    if (p) fr_answer(p, rarr(1, rarr(2, rinteger(0), rarr(0))));
    free(cl_expect(c, "authenticated"));
    return c;
}

/* The text a publish script call carries (the frame's tail, ARGV[2]). */
static int publishes(const fake_cmd_t *p, const char *text)
{
    char want[64];
    snprintf(want, sizeof want, "\"text\":\"%s\"", text);
    return p && p->argc > 8 && strstr(p->argv[8], want) != NULL;
}

/*
 * Two messages sent before `subscribed` are not published while the catch-up is in flight (a
 * subscription starts where `subscribed` says: the sender's own message must come after it);
 * then they go, in the order sent, followed by one sent after.
 */
static void held_until_subscribed(void)
{
    pl_sock_t *c = client("alice");
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"r\"]}");
    cl_send(c, "{\"type\":\"message\",\"room\":\"r\",\"text\":\"m1\",\"cid\":\"a\"}");
    cl_send(c, "{\"type\":\"message\",\"room\":\"r\",\"text\":\"m2\",\"cid\":\"b\"}");
    turn();
    CHECK(fr_script(PL_SCRIPT_PUBLISH) == NULL); /* nothing published yet */
    fake_cmd_t *sync = fr_script(PL_SCRIPT_SYNC);
    CHECK(sync != NULL);
    if (!sync) return;
    fr_answer(sync, rarr(4, rinteger(7), rinteger(0), rinteger(-1), rinteger(-1)));
    cl_send(c, "{\"type\":\"message\",\"room\":\"r\",\"text\":\"m3\",\"cid\":\"c\"}");
    turn();
    char *f = cl_next(c);
    CHECK(f && strstr(f, "\"type\":\"subscribed\"") && strstr(f, "\"seq\":7"));
    free(f);
    fake_cmd_t *p1 = fr_script(PL_SCRIPT_PUBLISH), *p2 = fr_script(PL_SCRIPT_PUBLISH),
               *p3 = fr_script(PL_SCRIPT_PUBLISH);
    CHECK(publishes(p1, "m1") && publishes(p2, "m2") && publishes(p3, "m3"));
    CHECK(fr_script(PL_SCRIPT_PUBLISH) == NULL);
    /* Ids are given as messages are published, so they increase in the order sent. */
    if (p1 && p2 && p3) {
        CHECK(strtoull(p1->argv[9], NULL, 10) < strtoull(p2->argv[9], NULL, 10));
        CHECK(strtoull(p2->argv[9], NULL, 10) < strtoull(p3->argv[9], NULL, 10));
    }
    fake_cmd_t *ps[3] = {p1, p2, p3};
    for (int i = 0; i < 3; i++)
        if (ps[i]) fr_answer(ps[i], rarr(2, rinteger(1), rinteger(8 + i)));
    turn();
}

/* Redis says "not ready" (it lost its data): that message and the next wait, in order, and go
 * once Redis is ready again; no error reaches the client. */
static void waits_while_not_ready(void)
{
    pl_sock_t *c = client("bob");
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"w\"]}");
    turn();
    fake_cmd_t *sync = fr_script(PL_SCRIPT_SYNC);
    if (sync) fr_answer(sync, rarr(4, rinteger(0), rinteger(0), rinteger(-1), rinteger(-1)));
    turn();
    free(cl_expect(c, "subscribed"));
    cl_send(c, "{\"type\":\"message\",\"room\":\"w\",\"text\":\"x1\",\"cid\":\"x1\"}");
    turn();
    fake_cmd_t *p = fr_script(PL_SCRIPT_PUBLISH);
    CHECK(publishes(p, "x1"));
    if (!p) return;
    fr_answer(p, rarr(1, rinteger(-1))); /* not ready */
    cl_send(c, "{\"type\":\"message\",\"room\":\"w\",\"text\":\"x2\",\"cid\":\"x2\"}");
    turn();
    CHECK(fr_script(PL_SCRIPT_PUBLISH) == NULL); /* x2 waits behind x1 */
    fake_cmd_t *e;
    while ((e = fr_take(is_cmd, "EXISTS")))
        fr_answer(e, rinteger(1)); /* ready again */
    turn();
    fake_cmd_t *a = fr_script(PL_SCRIPT_PUBLISH), *b = fr_script(PL_SCRIPT_PUBLISH);
    CHECK(publishes(a, "x1") && publishes(b, "x2"));
    if (a) fr_answer(a, rarr(2, rinteger(1), rinteger(1)));
    if (b) fr_answer(b, rarr(2, rinteger(1), rinteger(2)));
    turn();
    char *f;
    int errors = 0;
    while ((f = cl_next(c))) {
        errors += strstr(f, "\"type\":\"error\"") != NULL;
        free(f);
    }
    CHECK_EQ_INT(errors, 0);
}

int main(void)
{
    gw_init(0);
    RUN(held_until_subscribed);
    RUN(waits_while_not_ready);
    UNIT_EXIT();
}
