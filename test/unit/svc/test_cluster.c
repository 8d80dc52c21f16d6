/* Tests of src/svc/cluster.c against a real local Redis Cluster (3 masters, 1 replica each,
 * started with deploy/dev/redis-cluster.sh and stopped at the end): commands reach the master of
 * their slot; a slot migrating (ASK) and migrated (MOVED) while commands are sent; a master
 * killed and its replica taking over. Run from the repository's root, as test/run does. */
#include "parley/svc/cluster.h"

#include <pthread.h>

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parley/svc/script.h"
#include "parley/svc/subscriber.h"
#include "unit.h"

static char dir[] = "/tmp/parley-cluster-XXXXXX";
static pl_slots_node_t seeds[6];
static int nseeds;
static uv_loop_t loop;
static pl_cluster_t router;

/* ---- the cluster, by hand ---- */

static redisReply *admin(int port, const char *fmt, ...)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    if (!c || c->err) {
        if (c) redisFree(c);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* The node id of the node on `port`, into id[41]. */
static void node_id(int port, char *id)
{
    redisReply *r = admin(port, "CLUSTER MYID");
    snprintf(id, 41, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "?");
    if (r) freeReplyObject(r);
}

/* The current map, as any live node tells it. */
static int read_map(pl_slots_map_t *m)
{
    for (int i = 0; i < nseeds; i++) {
        redisReply *r = admin(seeds[i].port, "CLUSTER SLOTS");
        if (!r) continue;
        int n = pl_slots_parse(m, r);
        freeReplyObject(r);
        if (n == PL_SLOTS) return 0;
    }
    return -1;
}

/* A key "k<n>" whose slot the master on `port` serves. */
static void key_on(const pl_slots_map_t *m, int port, char *key, size_t size)
{
    for (int n = 0;; n++) {
        snprintf(key, size, "k%d", n);
        const pl_slots_node_t *o = pl_slots_node(m, pl_slots_key(key, strlen(key)));
        if (o && o->port == port) return;
    }
}

/* ---- the router, on a loop of its own ---- */

typedef struct {
    int done;
    int type; /* REDIS_REPLY_*, or -1 for NULL */
    char str[128];
    long long e0, e1; /* a two-element array: its integers (the publish script's {1, seq}) */
    char e1s[64];     /* or its second element's text ({0, "id:seq:ts"} for a duplicate) */
} answer_t;

static void answer_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    answer_t *a = privdata;
    redisReply *r = reply;
    a->done = 1;
    a->type = r ? r->type : -1;
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
              r->type == REDIS_REPLY_ERROR))
        snprintf(a->str, sizeof a->str, "%.*s", (int)r->len, r->str);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        a->e0 = r->element[0]->integer;
        a->e1 = r->element[1]->integer;
        if (r->element[1]->type == REDIS_REPLY_STRING)
            snprintf(a->e1s, sizeof a->e1s, "%.*s", (int)r->element[1]->len, r->element[1]->str);
    }
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop for up to `ms` or until *flag is set. */
static void spin(int ms, const int *flag)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, tick_cb, 10, 10);
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (uv_now(&loop) < end && !(flag && *flag)) {
        pl_cluster_flush(&router);
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* A command through the router, waited for (up to 5 s). Returns the answer; type -2 if the
 * router refused it at once. */
static answer_t run(int argc, const char **argv)
{
    answer_t a = {0};
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    uint16_t slot = pl_slots_key(argv[1], lens[1]);
    if (pl_cluster_command(&router, slot, answer_cb, &a, argc, argv, lens) != 0) {
        a.type = -2;
        return a;
    }
    spin(5000, &a.done);
    return a;
}

static answer_t set(const char *k, const char *v)
{
    const char *argv[3] = {"SET", k, v};
    return run(3, argv);
}

static answer_t get(const char *k)
{
    const char *argv[2] = {"GET", k};
    return run(2, argv);
}

/* ---- the sharded subscriber, on its thread ---- */

static pl_subscriber_t sub;
static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;
static char got[64][96]; /* "channel payload" of each message, in order */
static int ngot;
static atomic_int subscribed_again, subscribed_first, chans_answered;

static void sub_message(void *ud, const char *chan, size_t chan_len, const char *payload,
                        size_t len, int pattern)
{
    pthread_mutex_lock(&got_lock);
    if (ngot < 64)
        snprintf(got[ngot++], sizeof got[0], "%.*s %.*s", (int)chan_len, chan, (int)len, payload);
    pthread_mutex_unlock(&got_lock);
}

static void sub_idle(void *ud) {}

static void sub_subscribed(void *ud, int again)
{
    atomic_fetch_add(again ? &subscribed_again : &subscribed_first, 1);
}

static void sub_chan(void *ud, pl_subscriber_chan_t *req, int ok)
{
    free(req);
    atomic_fetch_add(&chans_answered, 1);
}

/* The channels told to catch up, space-separated. */
static char gaps[512];

static void sub_chan_gap(void *ud, const char *chan, size_t len, const char *host, int port)
{
    pthread_mutex_lock(&got_lock);
    size_t n = strlen(gaps);
    snprintf(gaps + n, sizeof gaps - n, "%s%.*s", n ? " " : "", (int)len, chan);
    pthread_mutex_unlock(&got_lock);
}

static int gaps_are(const char *want)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&got_lock);
        int same = strcmp(gaps, want) == 0;
        pthread_mutex_unlock(&got_lock);
        if (same) return 1;
        usleep(10000);
    }
    printf("  gaps: '%s', want '%s'\n", gaps, want);
    return 0;
}

static const pl_subscriber_handlers_t sub_handlers = {sub_message,    sub_idle, NULL,
                                                      sub_subscribed, sub_chan, sub_chan_gap};
/* A second subscriber, told of gaps by on_subscribed(again) only (no on_chan_gap). */
static pl_subscriber_t sub2;
static const pl_subscriber_handlers_t sub2_handlers = {sub_message,    sub_idle, NULL,
                                                       sub_subscribed, sub_chan, NULL};

/* Add (1) or drop (0) a reference to `chan` and wait for the answer. */
static void sub_chan_wait_on(pl_subscriber_t *on, const char *chan, int add)
{
    pl_subscriber_chan_t *req = calloc(1, sizeof *req);
    req->add = add;
    req->len = strlen(chan);
    memcpy(req->name, chan, req->len);
    int before = atomic_load(&chans_answered);
    pl_subscriber_chan(on, req);
    for (int i = 0; i < 500 && atomic_load(&chans_answered) == before; i++)
        usleep(10000);
}

static void sub_chan_wait(const char *chan, int add)
{
    sub_chan_wait_on(&sub, chan, add);
}

/* Wait up to 5 s for "chan payload" to have been received. */
static int received(const char *chan, const char *payload)
{
    char want[96];
    snprintf(want, sizeof want, "%s %s", chan, payload);
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&got_lock);
        int found = 0;
        for (int k = 0; k < ngot; k++)
            found |= strcmp(got[k], want) == 0;
        pthread_mutex_unlock(&got_lock);
        if (found) return 1;
        usleep(10000);
    }
    return 0;
}

/* SPUBLISH on the master serving the channel now. */
static void spublish(const char *chan, const char *payload)
{
    pl_slots_map_t m;
    if (read_map(&m) != 0) return;
    const pl_slots_node_t *o = pl_slots_node(&m, pl_slots_key(chan, strlen(chan)));
    redisReply *r = o ? admin(o->port, "SPUBLISH %s %s", chan, payload) : NULL;
    CHECK(r && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
}

/* The channel "room:{<key>}" for a key on the master on `port`. */
static void chan_on(const pl_slots_map_t *m, int port, char *chan, size_t size)
{
    char key[32];
    key_on(m, port, key, sizeof key);
    snprintf(chan, size, "room:{%s}", key);
}

/* ---- tests ---- */

static void routes_to_each_master(void)
{
    pl_slots_map_t m;
    CHECK(read_map(&m) == 0);
    CHECK_EQ_INT(m.nnodes, 3);
    for (int k = 0; k < m.nnodes; k++) {
        char key[32];
        key_on(&m, m.nodes[k].port, key, sizeof key);
        answer_t a = set(key, "v1");
        CHECK_EQ_INT(a.type, REDIS_REPLY_STATUS);
        /* Stored on that master itself: asked directly, it answers without a redirection. */
        redisReply *r = admin(m.nodes[k].port, "GET %s", key);
        CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "v1") == 0);
        if (r) freeReplyObject(r);
    }
    CHECK_EQ_INT(pl_counter_get(&router.stats.moved), 0);
    CHECK(pl_cluster_up(&router));
}

static char sub_chans[3][48]; /* one channel on each master, held by the subscriber */

static void subscriber_receives_on_each_master(void)
{
    pl_slots_map_t m;
    CHECK(read_map(&m) == 0);
    for (int i = 0; i < 100 && atomic_load(&subscribed_first) < 2; i++)
        usleep(10000);
    CHECK_EQ_INT(atomic_load(&subscribed_first), 2); /* each subscriber once */
    for (int k = 0; k < 3; k++) {
        chan_on(&m, m.nodes[k].port, sub_chans[k], sizeof sub_chans[k]);
        sub_chan_wait(sub_chans[k], 1);
    }
    CHECK_EQ_INT(pl_counter_get(&sub.channels), 3);
    for (int k = 0; k < 3; k++) {
        spublish(sub_chans[k], "hello");
        CHECK(received(sub_chans[k], "hello"));
    }
    /* A dropped channel is unsubscribed on its node. */
    char extra[64];
    snprintf(extra, sizeof extra, "%s.x", sub_chans[0]);
    sub_chan_wait(extra, 1);
    CHECK_EQ_INT(pl_counter_get(&sub.channels), 4);
    sub_chan_wait(extra, 0);
    for (int i = 0; i < 100 && pl_counter_get(&sub.channels) != 3; i++)
        usleep(10000);
    CHECK_EQ_INT(pl_counter_get(&sub.channels), 3);
    CHECK_EQ_INT(atomic_load(&subscribed_again), 0);
    /* The second subscriber holds the third channel only. */
    sub_chan_wait_on(&sub2, sub_chans[2], 1);
    CHECK_EQ_INT(pl_counter_get(&sub2.channels), 1);
}

static void follows_a_migrating_slot(void)
{
    pl_slots_map_t m;
    CHECK(read_map(&m) == 0);
    int from = m.nodes[0].port, to = m.nodes[1].port;
    char key[32], absent[48], from_id[41], to_id[41];
    /* The key the subscriber's first channel is tagged with: its subscription moves too. */
    snprintf(key, sizeof key, "%.*s", (int)strlen(sub_chans[0]) - 7, sub_chans[0] + 6);
    CHECK(pl_slots_node(&m, pl_slots_key(key, strlen(key)))->port == from);
    uint16_t slot = pl_slots_key(key, strlen(key));
    snprintf(absent, sizeof absent, "{%s}new", key); /* same slot, not yet written */
    CHECK_EQ_INT(set(key, "before").type, REDIS_REPLY_STATUS);
    node_id(from, from_id);
    node_id(to, to_id);

    /* Migrating: keys still on `from` are served there, the others are asked of `to`. */
    freeReplyObject(admin(to, "CLUSTER SETSLOT %d IMPORTING %s", slot, from_id));
    freeReplyObject(admin(from, "CLUSTER SETSLOT %d MIGRATING %s", slot, to_id));
    uint64_t ask0 = pl_counter_get(&router.stats.ask);
    answer_t a = get(key);
    CHECK(a.type == REDIS_REPLY_STRING && strcmp(a.str, "before") == 0);
    a = set(absent, "during");
    CHECK_EQ_INT(a.type, REDIS_REPLY_STATUS);
    CHECK(pl_counter_get(&router.stats.ask) > ask0);
    a = get(absent);
    CHECK(a.type == REDIS_REPLY_STRING && strcmp(a.str, "during") == 0);

    /* Moved: the remaining key goes over, then every master is told the slot's new owner. */
    redisReply *r = admin(from, "MIGRATE 127.0.0.1 %d %s 0 5000", to, key);
    CHECK(r && r->type == REDIS_REPLY_STATUS);
    if (r) freeReplyObject(r);
    for (int k = 0; k < m.nnodes; k++)
        freeReplyObject(admin(m.nodes[k].port, "CLUSTER SETSLOT %d NODE %s", slot, to_id));
    uint64_t moved0 = pl_counter_get(&router.stats.moved);
    a = get(key);
    CHECK(a.type == REDIS_REPLY_STRING && strcmp(a.str, "before") == 0);
    CHECK_EQ_INT(pl_counter_get(&router.stats.moved), moved0 + 1);
    /* The map now points there: no second redirection. */
    a = get(absent);
    CHECK(a.type == REDIS_REPLY_STRING && strcmp(a.str, "during") == 0);
    CHECK_EQ_INT(pl_counter_get(&router.stats.moved), moved0 + 1);
    CHECK(pl_cluster_node(&router, slot) && pl_cluster_node(&router, slot)->addr->port == to);

    /* The old owner ended the subscription (sunsubscribe); it is taken up on the new one and the
     * application told to catch up that channel, and no other. */
    CHECK(gaps_are(sub_chans[0]));
    CHECK_EQ_INT(pl_counter_get(&sub.channels), 3);
    CHECK_EQ_INT(atomic_load(&subscribed_again), 0); /* sub2 holds nothing that moved */
    spublish(sub_chans[0], "after-move");
    CHECK(received(sub_chans[0], "after-move"));
}

/* ---- Parley's publish script across a reshard of its room's slot ---- */

/* Publish one message in `room` with `cid` through the router, Parley's script and its cluster
 * key layout, waiting for the answer (up to 5 s). */
static answer_t publish(const char *room, const char *cid)
{
    static pl_buf_t k[5];
    size_t rl = strlen(room);
    pl_key_seq(&k[0], room, rl);
    pl_key_stream(&k[1], room, rl);
    pl_key_ready(&k[2], room, rl);
    pl_key_cid(&k[3], room, rl, "u", cid, strlen(cid));
    pl_key_room_chan(&k[4], room, rl);
    char tail[96];
    snprintf(tail, sizeof tail, "\"room\":\"%s\",\"text\":\"%s\"}", room, cid);
    const char *argv[14] = {"EVALSHA", pl_script_sha(PL_SCRIPT_PUBLISH),
                            "4",       k[0].data,
                            k[1].data, k[2].data,
                            k[3].data, k[4].data,
                            tail,      cid,
                            "1",       "1000",
                            "86400",   pl_key_publish_cmd()};
    size_t lens[14];
    for (int i = 0; i < 14; i++)
        lens[i] = strlen(argv[i]);
    answer_t a = {0};
    if (pl_cluster_command(&router, pl_slots_key(k[0].data, k[0].len), answer_cb, &a, 14, argv,
                           lens) != 0) {
        a.type = -2;
        return a;
    }
    spin(5000, &a.done);
    return a;
}

/* What the migration timer moves: every key of `mig_slot` from `mig_from` to `mig_to`, then the
 * slot itself, as redis-cli --cluster reshard does. */
static int mig_slot, mig_from, mig_to, mig_done;
static char mig_to_id[41];

static void migrate_keys(void)
{
    for (;;) {
        redisReply *r = admin(mig_from, "CLUSTER GETKEYSINSLOT %d 100", mig_slot);
        size_t n = r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        for (size_t i = 0; i < n; i++)
            freeReplyObject(
                admin(mig_from, "MIGRATE 127.0.0.1 %d %s 0 5000", mig_to, r->element[i]->str));
        freeReplyObject(r);
        if (n == 0) return;
    }
}

static void finish_migration_cb(uv_timer_t *t)
{
    migrate_keys();
    pl_slots_map_t m;
    if (read_map(&m) == 0)
        for (int k = 0; k < m.nnodes; k++)
            freeReplyObject(
                admin(m.nodes[k].port, "CLUSTER SETSLOT %d NODE %s", mig_slot, mig_to_id));
    mig_done = 1;
    uv_close((uv_handle_t *)t, NULL);
}

/* A busy room's slot resharded while it publishes: every message gets the next seq, once, none
 * is lost, and a resend after the move is still recognised. The script's keys are all declared,
 * so a half-migrated room answers TRYAGAIN (retried) instead of running against missing keys. */
static void publishes_through_a_reshard(void)
{
    const char *room = "busy";
    pl_buf_t key = {0};
    pl_key_seq(&key, room, strlen(room));
    mig_slot = pl_slots_key(key.data, key.len);
    pl_key_ready(&key, room, strlen(room));
    answer_t a = set(key.data, "1"); /* the room is seeded (docs/redis.md, readiness per room) */
    CHECK_EQ_INT(a.type, REDIS_REPLY_STATUS);
    pl_buf_free(&key);
    pl_slots_map_t m;
    CHECK(read_map(&m) == 0);
    mig_from = pl_slots_node(&m, (uint16_t)mig_slot)->port;
    mig_to = m.nodes[0].port == mig_from ? m.nodes[1].port : m.nodes[0].port;
    char from_id[41];
    node_id(mig_from, from_id);
    node_id(mig_to, mig_to_id);

    char cid[16];
    int seq = 0;
    for (; seq < 5; seq++) {
        snprintf(cid, sizeof cid, "c%d", seq + 1);
        a = publish(room, cid);
        CHECK(a.type == REDIS_REPLY_ARRAY && a.e0 == 1 && a.e1 == seq + 1);
    }
    /* The reshard begins. A new message's cid key would be created on the old owner while the
     * room's other keys may already have moved, so Redis answers TRYAGAIN (its keys are all
     * declared) and the router retries until the slot has moved; then ASK or MOVED takes it to
     * the new owner, which has the room's seq. */
    freeReplyObject(admin(mig_to, "CLUSTER SETSLOT %d IMPORTING %s", mig_slot, from_id));
    freeReplyObject(admin(mig_from, "CLUSTER SETSLOT %d MIGRATING %s", mig_slot, mig_to_id));
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    mig_done = 0;
    uv_timer_start(&t, finish_migration_cb, 300, 0);
    uint64_t retried0 = pl_counter_get(&router.stats.retried);
    a = publish(room, "c6");
    CHECK(a.type == REDIS_REPLY_ARRAY && a.e0 == 1 && a.e1 == 6);
    CHECK(pl_counter_get(&router.stats.retried) > retried0);
    spin(2000, &mig_done);
    CHECK(mig_done);
    for (int k = 7; k <= 8; k++) {
        snprintf(cid, sizeof cid, "c%d", k);
        a = publish(room, cid);
        CHECK(a.type == REDIS_REPLY_ARRAY && a.e0 == 1 && a.e1 == k);
    }
    /* A resend of a message from before the move: recognised, its seq given back. */
    a = publish(room, "c3");
    CHECK(a.type == REDIS_REPLY_ARRAY && a.e0 == 0 && strncmp(a.e1s, "c3:3:", 5) == 0);
    /* Everything is on the new owner, in order, once. */
    pl_key_stream(&key, room, strlen(room));
    redisReply *r = admin(mig_to, "XRANGE %s - +", key.data);
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 8);
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        char id[32];
        snprintf(id, sizeof id, "%zu-0", i + 1);
        CHECK_STR(r->element[i]->element[0]->str, id);
    }
    freeReplyObject(r);
    pl_key_seq(&key, room, strlen(room));
    r = admin(mig_to, "GET %s", key.data);
    CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "8") == 0);
    freeReplyObject(r);
    pl_buf_free(&key);
}

static void survives_a_failover(void)
{
    pl_slots_map_t m;
    CHECK(read_map(&m) == 0);
    /* The master of the subscriber's third channel. */
    int victim = pl_slots_node(&m, pl_slots_key(sub_chans[2], strlen(sub_chans[2])))->port;
    char key[32];
    key_on(&m, victim, key, sizeof key);
    CHECK_EQ_INT(set(key, "kept").type, REDIS_REPLY_STATUS);
    /* Wait until the replica has it: a failover keeps what was replicated. */
    redisReply *r = admin(victim, "WAIT 1 2000");
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    if (r) freeReplyObject(r);

    char pidf[128];
    snprintf(pidf, sizeof pidf, "%s/%d/redis.pid", dir, victim);
    FILE *f = fopen(pidf, "r");
    int pid = 0;
    CHECK(f && fscanf(f, "%d", &pid) == 1 && pid > 0);
    if (f) fclose(f);
    if (pid > 0) kill(pid, SIGKILL);

    /* Until the replica takes over the key's slot is unavailable; afterwards it is served again
     * without the router being told anything. */
    answer_t a = {0};
    int tries = 0;
    for (; tries < 300; tries++) {
        a = get(key);
        if (a.type == REDIS_REPLY_STRING) break;
        spin(100, NULL);
    }
    CHECK(a.type == REDIS_REPLY_STRING && strcmp(a.str, "kept") == 0);
    CHECK(pl_cluster_up(&router));
    const pl_redis_t *n = pl_cluster_node(&router, pl_slots_key(key, strlen(key)));
    CHECK(n && n->addr->port != victim);

    /* The subscribers' channel on the lost master is subscribed on the promoted replica: the
     * first is told that channel's gap, the second (no on_chan_gap) on_subscribed(again). */
    char want[128];
    snprintf(want, sizeof want, "%s %s", sub_chans[0], sub_chans[2]);
    CHECK(gaps_are(want));
    for (int i = 0; i < 500 && !atomic_load(&subscribed_again); i++)
        usleep(10000);
    CHECK_EQ_INT(atomic_load(&subscribed_again), 1);
    for (int i = 0; i < 500 && !(atomic_load(&sub.connected) && atomic_load(&sub2.connected)); i++)
        usleep(10000);
    CHECK(atomic_load(&sub.connected) && atomic_load(&sub2.connected));
    spublish(sub_chans[2], "after-failover");
    CHECK(received(sub_chans[2], "after-failover"));
    snprintf(want, sizeof want, "%s after-failover", sub_chans[2]);
    int copies = 0;
    for (int i = 0; i < 500 && copies < 2; i++) {
        usleep(10000);
        copies = 0;
        pthread_mutex_lock(&got_lock);
        for (int k = 0; k < ngot; k++)
            copies += strcmp(got[k], want) == 0;
        pthread_mutex_unlock(&got_lock);
    }
    CHECK_EQ_INT(copies, 2); /* one per subscriber */
}

static void load_scripts(pl_cluster_t *c, pl_redis_t *node)
{
    pl_script_load_all(node);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir)) return 1;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "deploy/dev/redis-cluster.sh start %s >/dev/null", dir);
    if (system(cmd) != 0) {
        printf("FAIL test_cluster: deploy/dev/redis-cluster.sh could not start a cluster\n");
        return 1;
    }
    char list[512] = "";
    snprintf(cmd, sizeof cmd, "%s/nodes", dir);
    FILE *f = fopen(cmd, "r");
    if (!f || !fgets(list, sizeof list, f)) return 1;
    fclose(f);
    for (char *p = strtok(list, ",\n"); p && nseeds < 6; p = strtok(NULL, ",\n")) {
        char *colon = strrchr(p, ':');
        *colon = 0;
        snprintf(seeds[nseeds].host, sizeof seeds[nseeds].host, "%s", p);
        seeds[nseeds++].port = atoi(colon + 1);
    }

    uv_loop_init(&loop);
    pl_redis_addr_t login = {0};
    if (pl_script_init() != 0) return 1;
    pl_key_set_cluster(1);
    router.on_connect = load_scripts;
    if (pl_cluster_start(&router, &loop, seeds, 1, &login) != 0) return 1;
    /* Only the first seed is given: the map brings the rest. */
    for (int i = 0; i < 300 && !pl_cluster_up(&router); i++)
        spin(10, NULL);

    if (pl_subscriber_init_cluster(&sub, &login, seeds, 1, &sub_handlers, NULL) != 0 ||
        pl_subscriber_start(&sub) != 0 ||
        pl_subscriber_init_cluster(&sub2, &login, seeds, 1, &sub2_handlers, NULL) != 0 ||
        pl_subscriber_start(&sub2) != 0)
        return 1;

    RUN(routes_to_each_master);
    RUN(subscriber_receives_on_each_master);
    RUN(follows_a_migrating_slot);
    RUN(publishes_through_a_reshard);
    RUN(survives_a_failover);

    pl_subscriber_stop(&sub);
    pl_subscriber_stop(&sub2);
    pl_cluster_stop(&router);
    uv_run(&loop, UV_RUN_DEFAULT);
    pl_cluster_free(&router);
    uv_loop_close(&loop);
    snprintf(cmd, sizeof cmd, "deploy/dev/redis-cluster.sh stop %s; rm -rf %s", dir, dir);
    if (system(cmd) != 0) printf("note: stopping the cluster reported an error\n");
    UNIT_EXIT();
}
