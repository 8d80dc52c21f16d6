/* Unit tests for src/app/subscribe.c, driven through the loopback transport (harness.h): the
 * seam between a catch-up and live messages, held frames, resubscribing. */
#include "harness.h"

/* Subscribe to `room` with since, answer the authentication's presence batch first. */
static pl_sock_t *subscribed_client(const char *user)
{
    pl_sock_t *c = cl_connect(user);
    turn();
    fake_cmd_t *p = fr_script(PL_SCRIPT_PRESENCE);
    if (p) fr_answer(p, rarr(1, rarr(2, rinteger(0), rarr(0))));
    char *a = cl_expect(c, "authenticated");
    CHECK(a != NULL);
    free(a);
    return c;
}

/* `c` subscribes to `room` with `since`: the sync script it makes Redis run (NULL if none). */
static fake_cmd_t *subscribe_since(pl_sock_t *c, const char *room, long long since)
{
    char frame[128], want[24];
    snprintf(frame, sizeof frame,
             "{\"type\":\"subscribe\",\"rooms\":[\"%s\"],\"since\":{\"%s\":%lld}}", room, room,
             since);
    cl_send(c, frame);
    turn();
    fake_cmd_t *sync = fr_script(PL_SCRIPT_SYNC);
    CHECK(sync != NULL);
    snprintf(want, sizeof want, "%lld", since);
    if (sync) CHECK_STR(sync->argv[7], want); /* since */
    return sync;
}

/* XRANGE's answer: messages from..to of `room` (none if from > to), each with `text`. */
static redisReply *stream_entries(const char *room, long long from, long long to, const char *text)
{
    redisReply *r = rarr(0);
    for (long long seq = from; seq <= to; seq++) {
        char m[512], id[32];
        msg_json(m, sizeof m, room, seq, text);
        snprintf(id, sizeof id, "%lld-0", seq);
        r->element = realloc(r->element, (r->elements + 1) * sizeof *r->element);
        r->element[r->elements++] = rarr(2, rstr(id), rarr(2, rstr("m"), rstr(m)));
    }
    return r;
}

/* Answer the pages the catch-up reads (XRANGE from-0 to-0 COUNT n) from a stream that holds
 * messages first..first + n - 1 of `room`, each with `text`, until it asks for no more. */
static void answer_pages(const char *room, long long first, int n, const char *text)
{
    fake_cmd_t *x;
    while (turn(), (x = fr_take(is_cmd, "XRANGE"))) {
        CHECK(x->argc == 6 && strcmp(x->argv[4], "COUNT") == 0);
        long long from = atoll(x->argv[2]), to = atoll(x->argv[3]), count = atoll(x->argv[5]);
        if (from < first) from = first;
        if (to > first + n - 1) to = first + n - 1;
        if (to > from + count - 1) to = from + count - 1;
        fr_answer(x, stream_entries(room, from, to, text));
    }
}

/* Read every frame `c` has: the seq one past the last, and how many were out of the run that
 * starts at `first`. */
static long long read_run(pl_sock_t *c, long long first, int *bad)
{
    char *f;
    *bad = 0;
    while ((f = cl_next(c))) {
        if (frame_seq(f) != first) (*bad)++;
        first++;
        free(f);
    }
    return first;
}

/* Answer a sync script as Redis would: the room is at `cur`, the catch-up reads after `since`,
 * and the stream holds messages first..first + n - 1 of `room`. */
static void answer_sync(fake_cmd_t *sync, const char *room, long long cur, long long since,
                        long long first, int n)
{
    fr_answer(sync, rarr(4, rinteger(cur), rinteger(0), rinteger(since), rinteger(-1)));
    answer_pages(room, first, n, "x");
}

/*
 * Live messages 5 and 6 arrive while the catch-up from 2 is in flight; the sync then says the
 * room is at 5 and the stream holds 3..5. The client must see subscribed, 3, 4, 5, 6: each once,
 * in order, the held 5 not repeated after the recovered one.
 */
static void seam_exact(void)
{
    pl_sock_t *c = subscribed_client("alice");
    fake_cmd_t *sync = subscribe_since(c, "r", 2);
    if (!sync) return;
    bcast("r", 5, "five");
    bcast("r", 6, "six");
    turn();
    CHECK(cl_next(c) == NULL); /* held: nothing before subscribed */
    answer_sync(sync, "r", 5, 2, 3, 3);
    turn();
    char *f = cl_next(c);
    CHECK(f && strstr(f, "\"type\":\"subscribed\"") && strstr(f, "\"seq\":5") &&
          strstr(f, "\"recovered\":3"));
    free(f);
    long long want[] = {3, 4, 5, 6};
    for (int i = 0; i < 4; i++) {
        f = cl_next(c);
        CHECK_EQ_INT(f ? frame_seq(f) : -2, want[i]);
        free(f);
    }
    CHECK(cl_next(c) == NULL);
    /* Live again: 7 goes out, a repeated 6 does not. */
    bcast("r", 6, "six");
    bcast("r", 7, "seven");
    turn();
    f = cl_next(c);
    CHECK_EQ_INT(f ? frame_seq(f) : -2, 7);
    free(f);
    CHECK(cl_next(c) == NULL);
}

/* A plain subscribe starts where `subscribed` says: live messages up to that seq that arrived
 * while it was being fetched are not delivered; the next one is. */
static void plain_subscribe_starts_at_cur(void)
{
    pl_sock_t *c = subscribed_client("dave");
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"p\"]}");
    turn();
    fake_cmd_t *sync = fr_script(PL_SCRIPT_SYNC);
    CHECK(sync != NULL);
    if (!sync) return;
    CHECK_STR(sync->argv[7], "-1");
    bcast("p", 4, "four");
    bcast("p", 5, "five");
    turn();
    fr_answer(sync, rarr(4, rinteger(5), rinteger(0), rinteger(-1), rinteger(-1)));
    bcast("p", 6, "six");
    turn();
    char *f = cl_next(c);
    CHECK(f && strstr(f, "\"type\":\"subscribed\"") && strstr(f, "\"seq\":5"));
    free(f);
    f = cl_next(c);
    CHECK_EQ_INT(f ? frame_seq(f) : -2, 6);
    free(f);
    CHECK(cl_next(c) == NULL);
}

/* A resubscribe while the first catch-up is in flight: the first answer is ignored, the second
 * one counts; nothing is delivered twice. */
static void resubscribe_during_catchup(void)
{
    pl_sock_t *c = subscribed_client("bob");
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"q\"],\"since\":{\"q\":0}}");
    turn();
    fake_cmd_t *first = fr_script(PL_SCRIPT_SYNC);
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"q\"],\"since\":{\"q\":1}}");
    turn();
    fake_cmd_t *second = fr_script(PL_SCRIPT_SYNC);
    CHECK(first && second);
    if (!first || !second) return;
    answer_sync(first, "q", 2, 0, 1, 2);
    turn();
    CHECK(cl_next(c) == NULL); /* a stale catch-up sends nothing */
    answer_sync(second, "q", 2, 1, 2, 1);
    turn();
    char *f = cl_expect(c, "subscribed");
    CHECK(f != NULL);
    free(f);
    f = cl_next(c);
    CHECK_EQ_INT(f ? frame_seq(f) : -2, 2);
    free(f);
    CHECK(cl_next(c) == NULL);
}

/* A catch-up larger than the refill mark streams: after the first turn only part of it is
 * queued; all of it, in order, once the client has read (the loopback takes everything). */
static void large_catchup_streams(void)
{
    pl_sock_t *c = subscribed_client("carol");
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"big\"],\"since\":{\"big\":0}}");
    turn();
    fake_cmd_t *sync = fr_script(PL_SCRIPT_SYNC);
    CHECK(sync != NULL);
    if (!sync) return;
    enum { N = 3000 }; /* three pages */
    fr_answer(sync, rarr(4, rinteger(N), rinteger(0), rinteger(0), rinteger(-1)));
    char text[300];
    memset(text, 'x', 200);
    text[200] = '\0';
    answer_pages("big", 1, N, text);
    bcast("big", N + 1, "live");
    turn();
    turn();
    char *f = cl_expect(c, "subscribed");
    CHECK(f != NULL);
    free(f);
    int bad;
    CHECK_EQ_INT(read_run(c, 1, &bad), N + 2); /* 1..N recovered, then the live N + 1 */
    CHECK_EQ_INT(bad, 0);
}

/*
 * Redis lost its data (the sync says -1: no parley:ready): the catch-up waits for the restore
 * instead of reading PostgreSQL, whose max(seq) may be past a message still on its way to it
 * (the soak lost such messages: held live, then taken for duplicates). Live 8 and 9 arrive
 * meanwhile and are held; once the shard sees parley:ready the room is read again, says 9
 * with 6..9 in the stream, and the client gets subscribed, 6, 7, 8, 9: each once, in order.
 */
static void catchup_waits_for_restore(void)
{
    pl_sock_t *c = subscribed_client("erin");
    fake_cmd_t *sync = subscribe_since(c, "qr", 5);
    if (!sync) return;
    fr_answer(sync, rarr(1, rinteger(-1)));
    bcast("qr", 8, "eight");
    bcast("qr", 9, "nine");
    turn();
    CHECK(cl_next(c) == NULL); /* waiting: nothing yet, nothing asked of the database */
    CHECK(fr_script(PL_SCRIPT_SYNC) == NULL);
    fake_cmd_t *ex = fr_take(is_cmd, "EXISTS"); /* the shard looks for parley:ready */
    CHECK(ex != NULL);
    if (!ex) return;
    fr_answer(ex, rinteger(1));
    turn();
    sync = fr_script(PL_SCRIPT_SYNC); /* read again */
    CHECK(sync != NULL);
    if (!sync) return;
    CHECK_STR(sync->argv[7], "5");
    answer_sync(sync, "qr", 9, 5, 6, 4);
    turn();
    char *f = cl_next(c);
    CHECK(f && strstr(f, "\"type\":\"subscribed\"") && strstr(f, "\"seq\":9"));
    free(f);
    for (int i = 0; i < 4; i++) {
        f = cl_next(c);
        CHECK_EQ_INT(f ? frame_seq(f) : -2, 6 + i);
        free(f);
    }
    CHECK(cl_next(c) == NULL);
}

/* A live frame past the next seq expected: the ones in between never came (published where
 * the subscriber was not listening: a cluster slot moving to its new master before the
 * subscription follows it). They are read from the room first, quietly (no second
 * `subscribed`), and the frame that showed the gap follows them, once. */
static void seq_jump_catches_up(void)
{
    pl_sock_t *c = subscribed_client("gina");
    fake_cmd_t *sync = subscribe_since(c, "jq", 0);
    if (!sync) return;
    answer_sync(sync, "jq", 2, 0, 1, 2);
    turn();
    free(cl_expect(c, "subscribed"));
    for (int i = 1; i <= 2; i++) {
        char *f = cl_next(c);
        CHECK_EQ_INT(f ? frame_seq(f) : -2, i);
        free(f);
    }
    bcast("jq", 3, "three"); /* the next one: straight out */
    turn();
    char *f = cl_next(c);
    CHECK_EQ_INT(f ? frame_seq(f) : -2, 3);
    free(f);
    bcast("jq", 6, "six"); /* 4 and 5 missing */
    turn();
    CHECK(cl_next(c) == NULL);
    fake_cmd_t *again = fr_script(PL_SCRIPT_SYNC);
    CHECK(again != NULL);
    if (!again) return;
    CHECK_STR(again->argv[7], "3"); /* from the last seq delivered */
    answer_sync(again, "jq", 6, 3, 4, 3);
    turn();
    for (int i = 4; i <= 6; i++) {
        f = cl_next(c);
        CHECK_EQ_INT(f ? frame_seq(f) : -2, i);
        free(f);
    }
    CHECK(cl_next(c) == NULL);
    CHECK(fr_script(PL_SCRIPT_SYNC) == NULL);
}

/* One page of a catch-up's XRANGE answered with messages from..to of `room` (none if from >
 * to); returns 0 if no page was asked for. */
static int answer_page_with(const char *room, long long from, long long to)
{
    fake_cmd_t *x = fr_take(is_cmd, "XRANGE");
    if (!x) return 0;
    redisReply *r = stream_entries(room, from, to, "t");
    fr_answer(x, r);
    turn();
    return 1;
}

/*
 * The stream is read in pages after the sync script, so it can be trimmed between two pages.
 * Page one brings 1..1000; by page two the stream starts at 1500. What came before the gap is
 * dropped and the rest is what the catch-up has (no database here: `truncated`); nothing is
 * delivered out of order or twice. Then entries up to cur vanish altogether (Redis lost its
 * data, or a burst trimmed past cur): the room is read again, from the same since.
 */
static void catchup_pages_and_trimming(void)
{
    pl_sock_t *c = subscribed_client("hana");
    fake_cmd_t *sync = subscribe_since(c, "tp", 0);
    if (!sync) return;
    fr_answer(sync, rarr(4, rinteger(2500), rinteger(0), rinteger(0), rinteger(-1)));
    turn();
    CHECK(answer_page_with("tp", 1, 1000));
    CHECK(answer_page_with("tp", 1500, 2499)); /* asked from 1001: a gap */
    CHECK(answer_page_with("tp", 2500, 2500));
    CHECK(fr_take(is_cmd, "XRANGE") == NULL); /* up to cur: done */
    char *f = cl_expect(c, "subscribed");
    CHECK(f && strstr(f, "\"truncated\":true") && strstr(f, "\"seq\":2500"));
    free(f);
    int bad;
    CHECK_EQ_INT(read_run(c, 1500, &bad), 2501);
    CHECK_EQ_INT(bad, 0);

    pl_sock_t *d = subscribed_client("ivan");
    sync = subscribe_since(d, "tv", 10);
    if (!sync) return;
    fr_answer(sync, rarr(4, rinteger(30), rinteger(0), rinteger(10), rinteger(-1)));
    turn();
    CHECK(answer_page_with("tv", 1, 0)); /* nothing up to 30 any more */
    fake_cmd_t *again = fr_script(PL_SCRIPT_SYNC);
    CHECK(again != NULL);
    if (!again) return;
    CHECK_STR(again->argv[7], "10");
    answer_sync(again, "tv", 40, 10, 11, 30);
    f = cl_expect(d, "subscribed");
    CHECK(f && strstr(f, "\"seq\":40") && !strstr(f, "truncated"));
    free(f);
    for (long long want = 11; want <= 40; want++) {
        f = cl_next(d);
        CHECK_EQ_INT(f ? frame_seq(f) : -2, want);
        free(f);
    }
    CHECK(cl_next(d) == NULL);
}

/* ---- PARLEY_SUBSCRIBE=rooms (app/roomsub.c) ---- */

/* The requests the shard made of the subscriber since the last call, oldest first (the test
 * plays the subscriber thread: it takes them off its queue and answers them). */
static int take_requests(pl_subscriber_chan_t **out, int max)
{
    int n = 0;
    for (pl_mpsc_node_t *q = pl_mpsc_take_all(&srv.sub.requests); q; q = q->next)
        if (n < max) out[n++] = (pl_subscriber_chan_t *)q;
    return n;
}

static void answer_request(pl_subscriber_chan_t *r, int ok)
{
    pl_deliver_handlers.on_chan(&srv, r, ok);
    turn();
}

/* A room's first subscriber asks for its channel and reads the room only once the
 * subscription is in effect; live frames meanwhile are held and none is doubled. */
static void rooms_mode_catchup_waits_for_the_subscription(void)
{
    pl_sock_t *c = subscribed_client("frank");
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"w\"],\"since\":{\"w\":5}}");
    turn();
    pl_subscriber_chan_t *req[4];
    CHECK_EQ_INT(take_requests(req, 4), 1);
    CHECK(req[0]->add == 1);
    CHECK_STR(req[0]->name, "room:w");
    CHECK(fr_script(PL_SCRIPT_SYNC) == NULL); /* not before the subscription */
    bcast("w", 7, "seven"); /* arrives as soon as the subscription does, before the read */
    turn();
    CHECK(cl_next(c) == NULL);
    answer_request(req[0], 1);
    fake_cmd_t *sync = fr_script(PL_SCRIPT_SYNC);
    CHECK(sync != NULL);
    if (!sync) return;
    CHECK_STR(sync->argv[7], "5");
    answer_sync(sync, "w", 7, 5, 6, 2);
    turn();
    char *f = cl_expect(c, "subscribed");
    CHECK(f && strstr(f, "\"seq\":7"));
    free(f);
    for (long long want = 6; want <= 7; want++) {
        f = cl_next(c);
        CHECK_EQ_INT(f ? frame_seq(f) : -2, want);
        free(f);
    }
    CHECK(cl_next(c) == NULL); /* the held 7 is not sent again */
    /* The room's last subscriber leaves: its channel is dropped. */
    cl_send(c, "{\"type\":\"unsubscribe\",\"rooms\":[\"w\"]}");
    turn();
    CHECK_EQ_INT(take_requests(req, 4), 1);
    CHECK(req[0]->add == 0);
    CHECK_STR(req[0]->name, "room:w");
    answer_request(req[0], 1); /* freed */
    free(cl_expect(c, "unsubscribed"));
}

/* An answer for an earlier life of the room (left and joined again meanwhile) is not taken for
 * the present one's; a failed subscription fails the subscribe. */
static void rooms_mode_stale_and_failed_answers(void)
{
    pl_sock_t *c = subscribed_client("gina");
    const char *sub = "{\"type\":\"subscribe\",\"rooms\":[\"v\"]}";
    cl_send(c, sub);
    cl_send(c, "{\"type\":\"unsubscribe\",\"rooms\":[\"v\"]}");
    cl_send(c, sub);
    turn();
    pl_subscriber_chan_t *req[4];
    CHECK_EQ_INT(take_requests(req, 4), 3);
    CHECK(req[0]->add == 1 && req[1]->add == 0 && req[2]->add == 1);
    answer_request(req[1], 1);
    answer_request(req[0], 1); /* the first life's: the second still waits */
    CHECK(fr_script(PL_SCRIPT_SYNC) == NULL);
    answer_request(req[2], 1);
    fake_cmd_t *sync = fr_script(PL_SCRIPT_SYNC);
    CHECK(sync != NULL);
    if (sync) answer_sync(sync, "v", 3, 3, 4, 0);
    turn();
    char *f = cl_expect(c, "subscribed");
    CHECK(f && strstr(f, "\"room\":\"v\""));
    free(f);
    /* Another room whose subscription cannot be made: the subscribe fails, and says why. */
    cl_send(c, "{\"type\":\"subscribe\",\"rooms\":[\"u\"]}");
    turn();
    CHECK_EQ_INT(take_requests(req, 4), 1);
    answer_request(req[0], 0);
    CHECK(fr_script(PL_SCRIPT_SYNC) == NULL);
    f = cl_expect(c, "error");
    CHECK(f && strstr(f, "\"code\":\"unavailable\"") && strstr(f, "\"room\":\"u\""));
    free(f);
    CHECK_EQ_INT(take_requests(req, 4), 1); /* the room went with it: dropped */
    CHECK(req[0]->add == 0);
    answer_request(req[0], 1);
}

int main(void)
{
    gw_init(0);
    RUN(seam_exact);
    RUN(plain_subscribe_starts_at_cur);
    RUN(resubscribe_during_catchup);
    RUN(large_catchup_streams);
    RUN(catchup_waits_for_restore);
    RUN(seq_jump_catches_up);
    RUN(catchup_pages_and_trimming);
    /* Rooms mode from here on: the subscriber is set up, never started (the test is its
     * thread). */
    srv.cfg.subscribe_rooms = 1;
    static const char *const cmds[1] = {"SUBSCRIBE server:unit-1"};
    if (pl_subscriber_init(&srv.sub, &srv.redis_addr, cmds, 1, &pl_deliver_handlers, &srv) != 0)
        return 1;
    RUN(rooms_mode_catchup_waits_for_the_subscription);
    RUN(rooms_mode_stale_and_failed_answers);
    UNIT_EXIT();
}
