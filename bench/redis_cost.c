/*
 * parley-redis-cost: where one Redis's time goes for a durable room message (issue 16), measured
 * on a private redis-server that nothing else uses (bench/redis_cost.sh starts it).
 *
 * Usage: parley-redis-cost PORT PID
 *
 * Each variant sends MSGS (RC_MSGS, 50,000) messages over ROOMS (RC_ROOMS, 1,000) rooms, each
 * with a new cid, in pipelined batches of BATCH (RC_BATCH, 100), as a busy shard does. One
 * connection PSUBSCRIBEs `room:*` (one instance in pattern mode) and reads everything, so
 * PUBLISH pays for a real subscriber. Per message it reports Redis's CPU (utime + stime of PID
 * from /proc, which counts reading, parsing and writing too) and the time INFO commandstats
 * charges to each command. Variants:
 *   script   Parley's publish script with its real keys and arguments (svc/script.h)
 *   plain    the script's four commands sent as commands: INCR, SET NX GET EX, XADD, PUBLISH
 *            (the same Redis work without Lua; not atomic, so not a replacement)
 *   incr, set, xadd, publish   each alone
 *   noop     a script that calls nothing: what EVALSHA itself costs
 * The difference between `script` and `plain` is what running the work inside Lua costs.
 * RC_SCRIPT=FILE runs `script` with the Lua in FILE instead (same keys and arguments): a change
 * to the publish script can be measured before it is made.
 * Prints one markdown table. Bounded: each variant stops after 60 s whatever happened.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parley/base/buf.h"
#include "parley/svc/script.h"

static int nmsgs = 50000, nrooms = 1000, batch = 100;
static int port;
static int pid;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* utime + stime of the Redis process, in microseconds. */
static long long redis_cpu_us(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st) * 1000000 / sysconf(_SC_CLK_TCK);
}

static redisContext *connect_redis(void)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    if (!c || c->err) {
        fprintf(stderr, "parley-redis-cost: cannot connect to 127.0.0.1:%d: %s\n", port,
                c ? c->errstr : "out of memory");
        exit(1);
    }
    return c;
}

/* The subscriber: reads every pmessage until the connection goes. */
static void *subscriber(void *arg)
{
    redisContext *c = arg;
    redisReply *r = redisCommand(c, "PSUBSCRIBE room:*");
    if (r) freeReplyObject(r);
    void *m;
    while (redisGetReply(c, &m) == REDIS_OK)
        freeReplyObject(m);
    return NULL;
}

/* Sum of usec INFO commandstats charges to `cmd` (cmdstat_<cmd>:...usec=N). */
static double cmd_usec(const char *info, const char *cmd)
{
    char key[64];
    snprintf(key, sizeof key, "cmdstat_%s:", cmd);
    const char *p = strstr(info, key);
    if (!p) return 0;
    p = strstr(p, "usec=");
    return p ? strtod(p + 5, NULL) : 0;
}

enum { V_SCRIPT, V_PLAIN, V_INCR, V_SET, V_XADD, V_PUBLISH, V_NOOP, V_COUNT };
static const char *const vname[V_COUNT] = {"script", "plain",   "incr", "set",
                                           "xadd",   "publish", "noop"};

static char noop_sha[41], script_sha[41];
static const char *script_src; /* the publish script, or RC_SCRIPT's */

/* Queue message i of variant v; returns the replies it will get. */
static int append(redisContext *c, int v, int i, pl_buf_t *k, pl_buf_t *tail)
{
    char room[32], id[24], ts[24], cid[32], msg[24];
    int rl = snprintf(room, sizeof room, "r%d", i % nrooms);
    snprintf(id, sizeof id, "%d", 1000000 + i);
    snprintf(ts, sizeof ts, "%d", 1764000000 + i);
    snprintf(cid, sizeof cid, "c%d-%ld", i, (long)time(NULL));
    snprintf(msg, sizeof msg, "%d:1:1", i);
    pl_key_seq(&k[0], room, (size_t)rl);
    pl_key_stream(&k[1], room, (size_t)rl);
    pl_key_ready(&k[2], room, (size_t)rl);
    pl_key_cid(&k[3], room, (size_t)rl, "bench-user", cid, strlen(cid));
    pl_key_room_chan(&k[4], room, (size_t)rl);
    pl_buf_reset(tail);
    pl_buf_printf(tail,
                  "\"room\":\"%s\",\"id\":\"%s\",\"from\":\"bench-user\",\"text\":\"%s\","
                  "\"ts\":%s,\"cid\":\"%s\"}",
                  room, id, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ts,
                  cid);
    const char *argv[14];
    size_t lens[14];
    int n = 0;
#define A(s, l) (argv[n] = (s), lens[n] = (l), n++)
#define AS(s) A(s, strlen(s))
    switch (v) {
    case V_SCRIPT:
        AS("EVALSHA"), AS(script_sha), AS("4");
        for (int j = 0; j < 5; j++)
            A(k[j].data, k[j].len);
        A(tail->data, tail->len), AS(id), AS(ts), AS("1000"), AS("86400"), AS("PUBLISH");
        redisAppendCommandArgv(c, n, argv, lens);
        return 1;
    case V_NOOP:
        AS("EVALSHA"), AS(noop_sha), AS("0");
        redisAppendCommandArgv(c, n, argv, lens);
        return 1;
    default:
        break;
    }
    int replies = 0;
    if (v == V_PLAIN || v == V_INCR) {
        const char *a[] = {"INCR", k[0].data};
        size_t l[] = {4, k[0].len};
        redisAppendCommandArgv(c, 2, a, l);
        replies++;
    }
    if (v == V_PLAIN || v == V_SET) {
        const char *a[] = {"SET", k[3].data, msg, "NX", "GET", "EX", "86400"};
        size_t l[] = {3, k[3].len, strlen(msg), 2, 3, 2, 5};
        redisAppendCommandArgv(c, 7, a, l);
        replies++;
    }
    if (v == V_PLAIN || v == V_XADD) {
        const char *a[] = {"XADD", k[1].data, "MAXLEN", "~", "1000", "*", "m", tail->data};
        size_t l[] = {4, k[1].len, 6, 1, 4, 1, 1, tail->len};
        redisAppendCommandArgv(c, 8, a, l);
        replies++;
    }
    if (v == V_PLAIN || v == V_PUBLISH) {
        const char *a[] = {"PUBLISH", k[4].data, tail->data};
        size_t l[] = {7, k[4].len, tail->len};
        redisAppendCommandArgv(c, 3, a, l);
        replies++;
    }
    return replies;
}

static void command(redisContext *c, const char *cmd)
{
    redisReply *r = redisCommand(c, cmd);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "parley-redis-cost: %s: %s\n", cmd, r ? r->str : c->errstr);
        exit(1);
    }
    freeReplyObject(r);
}

/* Every room ready (as after a restore), the scripts loaded. */
static void fresh(redisContext *c)
{
    command(c, "FLUSHALL");
    pl_buf_t k = {0};
    for (int i = 0; i < nrooms; i++) {
        char room[32];
        int rl = snprintf(room, sizeof room, "r%d", i);
        pl_key_ready(&k, room, (size_t)rl);
        redisAppendCommand(c, "SET %b 1", k.data, k.len);
    }
    for (int i = 0; i < nrooms; i++) {
        void *r;
        if (redisGetReply(c, &r) != REDIS_OK) exit(1);
        freeReplyObject(r);
    }
    pl_buf_free(&k);
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", script_src);
    if (!r || r->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "parley-redis-cost: SCRIPT LOAD: %s\n", r ? r->str : c->errstr);
        exit(1);
    }
    snprintf(script_sha, sizeof script_sha, "%s", r->str);
    freeReplyObject(r);
    r = redisCommand(c, "SCRIPT LOAD %s", "return 1");
    if (!r || r->type != REDIS_REPLY_STRING) exit(1);
    snprintf(noop_sha, sizeof noop_sha, "%s", r->str);
    freeReplyObject(r);
    command(c, "CONFIG RESETSTAT");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: parley-redis-cost PORT REDIS_PID\n");
        return 2;
    }
    port = atoi(argv[1]);
    pid = atoi(argv[2]);
    if (getenv("RC_MSGS")) nmsgs = atoi(getenv("RC_MSGS"));
    if (getenv("RC_ROOMS")) nrooms = atoi(getenv("RC_ROOMS"));
    if (getenv("RC_BATCH")) batch = atoi(getenv("RC_BATCH"));
    if (nmsgs < 1 || nrooms < 1 || batch < 1 || pl_script_init() != 0) return 2;
    script_src = pl_script_source(PL_SCRIPT_PUBLISH);
    if (getenv("RC_SCRIPT")) {
        static char src[16384];
        FILE *f = fopen(getenv("RC_SCRIPT"), "r");
        size_t n = f ? fread(src, 1, sizeof src - 1, f) : 0;
        if (f) fclose(f);
        if (!n) {
            fprintf(stderr, "parley-redis-cost: cannot read RC_SCRIPT %s\n", getenv("RC_SCRIPT"));
            return 2;
        }
        src[n] = '\0';
        script_src = src;
    }
    pthread_t sub;
    if (pthread_create(&sub, NULL, subscriber, connect_redis()) != 0) return 1;
    redisContext *c = connect_redis();
    pl_buf_t k[5] = {0}, tail = {0};
    printf("| variant | Redis CPU us per message | commandstats us per message |\n");
    printf("|---|---|---|\n");
    int rc = 0;
    for (int v = 0; v < V_COUNT; v++) {
        fresh(c);
        long long c0 = redis_cpu_us();
        double t0 = now_s();
        int sent = 0, errors = 0;
        while (sent < nmsgs && now_s() - t0 < 60) {
            int want = 0;
            for (int b = 0; b < batch && sent < nmsgs; b++, sent++)
                want += append(c, v, sent, k, &tail);
            for (int j = 0; j < want; j++) {
                redisReply *r;
                if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                    fprintf(stderr, "parley-redis-cost: %s\n", c->errstr);
                    return 1;
                }
                errors += r->type == REDIS_REPLY_ERROR;
                freeReplyObject(r);
            }
        }
        long long c1 = redis_cpu_us();
        redisReply *info = redisCommand(c, "INFO commandstats");
        if (!info || info->type != REDIS_REPLY_STRING) return 1;
        /* The commands a variant runs, each with its share; a script's includes its calls. */
        static const char *const cmds[] = {"evalsha", "incr", "set", "xadd", "publish"};
        char parts[512];
        size_t pl = 0;
        parts[0] = '\0';
        for (size_t j = 0; j < sizeof cmds / sizeof *cmds; j++) {
            double u = cmd_usec(info->str, cmds[j]);
            if (u > 0)
                pl += (size_t)snprintf(parts + pl, sizeof parts - pl, "%s%s %.2f", pl ? ", " : "",
                                       cmds[j], u / sent);
        }
        freeReplyObject(info);
        printf("| %s | %.2f | %s |\n", vname[v], (double)(c1 - c0) / sent, parts);
        if (errors) {
            fprintf(stderr, "parley-redis-cost: %s: %d error replies\n", vname[v], errors);
            rc = 1;
        }
        fflush(stdout);
    }
    return rc;
}
