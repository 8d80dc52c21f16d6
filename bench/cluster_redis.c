/*
 * parley-cluster-redis: what a Redis Cluster pays per published room message, with Parley's own
 * publish script and key layout, in classic Pub/Sub and in sharded Pub/Sub, side by side
 * (issue 15; driven by bench/cluster_redis.sh, figures in docs/scaling.md).
 *
 * Usage: parley-cluster-redis DIR VARIANT
 *   DIR      a cluster started by deploy/dev/redis-cluster.sh (DIR/nodes, DIR/<port>/redis.pid)
 *   VARIANT  classic: the script PUBLISHes on room:{r:R}; each instance stand-in SUBSCRIBEs to its
 *                     rooms on one node (as on one Redis). A cluster forwards every classic
 *                     PUBLISH to every node over its bus, and each node delivers to its own
 *                     subscribers;
 *            sharded: the script SPUBLISHes; each stand-in SSUBSCRIBEs to each of its rooms on the
 *                     master serving the room's slot (svc/subscriber's cluster mode).
 *
 * K instance stand-ins (svc/subscriber threads, as parleyd's) each hold the rooms whose members
 * they would have: room r is held by D of them. The publisher (svc/cluster's router, on a libuv
 * loop, as a shard) calls the publish script for MSGS messages over ROOMS rooms, WINDOW in flight,
 * each with a cid, as clients send them. Measured over the publishing, from the outside:
 *   Redis CPU: utime+stime of every redis-server (/proc/PID/stat), per message, in all and per
 *     node (masters first);
 *   output bytes: INFO stats total_net_output_bytes of every node, per message;
 *   bus messages: CLUSTER INFO cluster_stats_messages_publish(shard)_sent, per message;
 *   deliveries: messages the stand-ins received, per message (D expected), and lost ones.
 * Prints one markdown table row. Settings: CR_MSGS (60000), CR_ROOMS (300), CR_K (6), CR_D (3),
 * CR_WINDOW (256), CR_TEXT (200 bytes). Bounded: the publishing stops after 120 s whatever
 * happened, the wait for deliveries after 10 s more.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "benchlib.h"
#include "parley/base/buf.h"
#include "parley/base/clock.h"
#include "parley/base/log.h"
#include "parley/svc/cluster.h"
#include "parley/svc/script.h"
#include "parley/svc/subscriber.h"

#define NODES 6
#define K_MAX 16

static int nmsgs, nrooms, k_inst, d_rooms, window, text_len, sharded;
static pl_slots_node_t seeds[NODES];
static pid_t pids[NODES];

/* ---- the nodes, measured from the outside ---- */

/* A number from an INFO-like reply: the value after "name:". */
static long long info_num(int port, const char *cmd, const char *name)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    long long v = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, cmd);
        const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, name) : NULL;
        if (p) v = atoll(p + strlen(name) + 1);
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return v;
}

typedef struct {
    long long cpu[NODES], out[NODES], bus[NODES];
} sample_t;

static void sample(sample_t *s)
{
    for (int i = 0; i < NODES; i++) {
        s->cpu[i] = bl_proc_cpu_us(&pids[i], 1);
        s->out[i] = info_num(seeds[i].port, "INFO stats", "total_net_output_bytes");
        s->bus[i] =
            info_num(seeds[i].port, "CLUSTER INFO", "cluster_stats_messages_publish_sent") +
            info_num(seeds[i].port, "CLUSTER INFO", "cluster_stats_messages_publishshard_sent");
    }
}

/* ---- instance stand-ins ---- */

static pl_subscriber_t subs[K_MAX];
static atomic_long delivered;

static void on_message(void *ud, const char *chan, size_t chan_len, const char *payload, size_t len,
                       int pattern)
{
    atomic_fetch_add_explicit(&delivered, 1, memory_order_relaxed);
}

static void on_idle(void *ud) {}

static atomic_int answered;

static void on_chan(void *ud, pl_subscriber_chan_t *req, int ok)
{
    free(req);
    atomic_fetch_add(&answered, 1);
}

static const pl_subscriber_handlers_t handlers = {on_message, on_idle, NULL, NULL, on_chan, NULL};

/* Instance i holds room r when r is one of the D rooms starting at i (mod K): each room has D. */
static int holds(int i, int r)
{
    return ((i - r % k_inst) + k_inst) % k_inst < d_rooms;
}

static void room_name(char *out, size_t n, int r)
{
    snprintf(out, n, "r%d", r);
}

static int start_standins(void)
{
    static pl_redis_addr_t login[K_MAX];
    int want = 0;
    for (int i = 0; i < k_inst; i++) {
        int rc;
        if (sharded) {
            rc = pl_subscriber_init_cluster(&subs[i], &login[i], seeds, NODES, &handlers, NULL);
        } else {
            /* Classic Pub/Sub: any node will do; spread the stand-ins over all six. */
            login[i] =
                (pl_redis_addr_t){seeds[i % NODES].host, seeds[i % NODES].port, 0, NULL, NULL};
            rc = pl_subscriber_init(&subs[i], &login[i], NULL, 0, &handlers, NULL);
        }
        if (rc != 0 || pl_subscriber_start(&subs[i]) != 0) return -1;
        for (int r = 0; r < nrooms; r++) {
            if (!holds(i, r)) continue;
            char room[32];
            room_name(room, sizeof room, r);
            pl_buf_t b = {0};
            pl_key_room_chan(&b, room, strlen(room));
            pl_subscriber_chan_t *req = calloc(1, sizeof *req);
            req->add = 1;
            req->len = b.len;
            memcpy(req->name, b.data, b.len);
            pl_buf_free(&b);
            pl_subscriber_chan(&subs[i], req);
            want++;
        }
    }
    for (int t = 0; t < 1000 && atomic_load(&answered) < want; t++)
        usleep(10000);
    return atomic_load(&answered) == want ? 0 : -1;
}

/* ---- the publisher ---- */

static uv_loop_t loop;
static pl_cluster_t router;
static int sent, replied, failed;
static char text[4096];

static void publish_one(void);

static void reply_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    replied++;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->integer != 1) {
        if (failed++ < 3)
            fprintf(stderr, "cluster-redis: publish failed: %s\n",
                    r && r->type == REDIS_REPLY_ERROR ? r->str : "no or unexpected reply");
    }
    if (sent < nmsgs) publish_one();
}

static void publish_one(void)
{
    static pl_buf_t k[5], tail;
    char room[32], id[24], ts[24], cid[32];
    int r = rand() % nrooms;
    room_name(room, sizeof room, r);
    size_t rl = strlen(room);
    snprintf(id, sizeof id, "%d", sent + 1);
    snprintf(ts, sizeof ts, "%lld", (long long)pl_now_ms());
    snprintf(cid, sizeof cid, "c%d", sent);
    pl_key_seq(&k[0], room, rl);
    pl_key_stream(&k[1], room, rl);
    pl_key_ready(&k[2], room, rl); /* the script's keys: seq, stream, ready, cid */
    pl_key_cid(&k[3], room, rl, "bench", cid, strlen(cid));
    pl_key_room_chan(&k[4], room, rl);
    pl_buf_reset(&tail);
    pl_buf_printf(&tail,
                  "\"room\":\"%s\",\"id\":\"%s\",\"user\":\"bench\",\"text\":\"%s\",\"ts\":%s}",
                  room, id, text, ts);
    const char *pub = sharded ? pl_key_publish_cmd() : "PUBLISH";
    const char *argv[14] = {"EVALSHA", pl_script_sha(PL_SCRIPT_PUBLISH),
                            "4",       k[0].data,
                            k[1].data, k[2].data,
                            k[3].data, k[4].data,
                            tail.data, id,
                            ts,        "1000",
                            "86400",   pub};
    size_t lens[14];
    for (int i = 0; i < 14; i++)
        lens[i] = strlen(argv[i]);
    lens[3] = k[0].len, lens[4] = k[1].len, lens[5] = k[2].len, lens[6] = k[3].len;
    lens[7] = k[4].len, lens[8] = tail.len;
    sent++;
    if (pl_cluster_command(&router, pl_slots_key(k[0].data, k[0].len), reply_cb, NULL, 14, argv,
                           lens) != 0) {
        replied++;
        failed++;
    }
}

static void load_scripts(pl_cluster_t *c, pl_redis_t *node)
{
    pl_script_load_all(node);
}

static void tick_cb(uv_timer_t *t)
{
    pl_cluster_flush(&router);
}

/* Run the loop until cond() or `ms` passed. */
static void spin(int ms, int (*cond)(void))
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, tick_cb, 1, 1);
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (uv_now(&loop) < end && !(cond && cond())) {
        uv_run(&loop, UV_RUN_ONCE);
        pl_cluster_flush(&router);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static int router_up(void)
{
    return pl_cluster_up(&router);
}

static int all_replied(void)
{
    return replied >= nmsgs;
}

/* Set every room's ready key (a cluster's rooms are seeded one by one; here, all at once). */
static int ready_left;

static void ready_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    ready_left--;
}

static int readied(void)
{
    return ready_left == 0;
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    int n = v && *v ? atoi(v) : dflt;
    return n > 0 ? n : dflt;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "classic") && strcmp(argv[2], "sharded"))) {
        fprintf(stderr, "usage: %s CLUSTER_DIR classic|sharded\n", argv[0]);
        return 2;
    }
    pl_log_set_level(PL_LOG_WARN);
    sharded = strcmp(argv[2], "sharded") == 0;
    nmsgs = env_int("CR_MSGS", 60000);
    nrooms = env_int("CR_ROOMS", 300);
    k_inst = env_int("CR_K", 6);
    d_rooms = env_int("CR_D", 3);
    window = env_int("CR_WINDOW", 256);
    text_len = env_int("CR_TEXT", 200);
    if (k_inst > K_MAX || d_rooms > k_inst || text_len >= (int)sizeof text) {
        fprintf(stderr, "cluster-redis: CR_K at most %d, CR_D at most CR_K, CR_TEXT < %zu\n", K_MAX,
                sizeof text);
        return 2;
    }
    memset(text, 'x', (size_t)text_len);
    char path[512], list[512] = "";
    snprintf(path, sizeof path, "%s/nodes", argv[1]);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(list, sizeof list, f)) {
        fprintf(stderr, "cluster-redis: cannot read %s\n", path);
        return 1;
    }
    fclose(f);
    int n = 0;
    for (char *p = strtok(list, ",\n"); p && n < NODES; p = strtok(NULL, ",\n")) {
        char *colon = strrchr(p, ':');
        *colon = 0;
        snprintf(seeds[n].host, sizeof seeds[n].host, "%s", p);
        seeds[n].port = atoi(colon + 1);
        snprintf(path, sizeof path, "%s/%d/redis.pid", argv[1], seeds[n].port);
        FILE *pf = fopen(path, "r");
        if (!pf || fscanf(pf, "%d", &pids[n]) != 1) {
            fprintf(stderr, "cluster-redis: cannot read %s\n", path);
            return 1;
        }
        fclose(pf);
        n++;
    }
    if (n != NODES || pl_script_init() != 0) return 1;
    pl_key_set_cluster(1);
    srand(42);

    uv_loop_init(&loop);
    pl_redis_addr_t login = {0};
    router.on_connect = load_scripts;
    if (pl_cluster_start(&router, &loop, seeds, NODES, &login) != 0) return 1;
    spin(10000, router_up);
    if (!pl_cluster_up(&router)) {
        fprintf(stderr, "cluster-redis: the cluster did not come up\n");
        return 1;
    }
    for (int r = 0; r < nrooms; r++) {
        char room[32];
        pl_buf_t b = {0};
        room_name(room, sizeof room, r);
        pl_key_ready(&b, room, strlen(room));
        const char *a[3] = {"SET", b.data, "1"};
        size_t l[3] = {3, b.len, 1};
        if (pl_cluster_command(&router, pl_slots_key(b.data, b.len), ready_cb, NULL, 3, a, l) == 0)
            ready_left++;
        pl_buf_free(&b);
    }
    spin(10000, readied);
    if (start_standins() != 0) {
        fprintf(stderr, "cluster-redis: the instance stand-ins did not subscribe\n");
        return 1;
    }

    sample_t a, b;
    sample(&a);
    int64_t t0 = pl_now_ms();
    for (int i = 0; i < window && sent < nmsgs; i++)
        publish_one();
    spin(120000, all_replied);
    int64_t t1 = pl_now_ms();
    long want = (long)(nmsgs - failed) * d_rooms;
    for (int t = 0; t < 1000 && atomic_load(&delivered) < want; t++)
        usleep(10000);
    sample(&b);

    double cpu_us = 0, out = 0, bus = 0, m = nmsgs;
    char per[256] = "";
    /* Masters first, as the map has them now, then the others (the replicas). */
    int order[NODES], no = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < NODES; i++) {
            int master = 0;
            for (int k = 0; k < router.map.nnodes; k++)
                master |= router.map.nodes[k].port == seeds[i].port;
            if (master == (pass == 0)) order[no++] = i;
        }
    for (int j = 0; j < NODES; j++) {
        int i = order[j];
        double us = (double)(b.cpu[i] - a.cpu[i]);
        cpu_us += us;
        out += (double)(b.out[i] - a.out[i]);
        bus += (double)(b.bus[i] - a.bus[i]);
        size_t len = strlen(per);
        snprintf(per + len, sizeof per - len, "%s%.0f", j ? ", " : "", us / m);
    }
    long got = atomic_load(&delivered);
    printf("| %s | %d | %d | %d of %d | %.1f | %s | %.0f | %.2f | %.2f | %ld | %d | %.1f |\n",
           argv[2], nmsgs, nrooms, d_rooms, k_inst, cpu_us / m, per, out / m, bus / m,
           (double)got / m, want > got ? want - got : 0, failed, (double)(t1 - t0) / 1000);
    for (int i = 0; i < k_inst; i++)
        pl_subscriber_stop(&subs[i]);
    pl_cluster_stop(&router);
    uv_run(&loop, UV_RUN_DEFAULT);
    pl_cluster_free(&router);
    return failed || want > got ? 1 : 0;
}
