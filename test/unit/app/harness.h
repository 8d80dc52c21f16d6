/*
 * harness.h: drives the gateway's application modules (app/) without
 * sockets, Redis or PostgreSQL, in the test's own thread (h2o's t/00unit
 * style): one shard on a real loop (net/loop.h), connections attached
 * through a loopback transport (pl_sock_attach with a socket type that
 * captures what the server writes and is fed what a client sends), and in
 * place of Redis and the database pool, fakes that record commands and jobs
 * for the test to answer.
 *
 * The fakes replace the real modules at link time: this header defines
 * pl_redis_start/command/command_raw/format/of/flush/stop/connect_sync and the pool's
 * pl_db_submit/reserve/..., so the linker takes no svc/redis.o or svc/db.o from libparley.a.
 * Include it in exactly one file of a test binary.
 */
#ifndef PARLEY_TEST_HARNESS_H
#define PARLEY_TEST_HARNESS_H

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/deliver.h"
#include "parley/app/publish.h"
#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/app/shard.h"
#include "parley/base/clock.h"
#include "parley/base/jwt.h"
#include "parley/base/log.h"
#include "parley/svc/db.h"
#include "parley/svc/script.h"
#include "unit.h"

/* ---- the fake Redis: every command recorded, answered by the test ---- */

typedef struct fake_cmd {
    struct fake_cmd *next;
    int argc;
    char *argv[64];
    size_t lens[64];
    pl_redis_cb cb;
    void *priv;
} fake_cmd_t;

static struct {
    fake_cmd_t *head, *tail;
    size_t count; /* commands ever sent */
} fr;

int pl_redis_start(pl_redis_t *r, uv_loop_t *loop, const pl_redis_addr_t *addr)
{
    r->loop = loop;
    r->addr = addr;
    atomic_init(&r->connected, 1);
    return 0;
}

int pl_redis_command(pl_redis_t *r, pl_redis_cb cb, void *privdata, int argc, const char **argv,
                     const size_t *lens)
{
    if (!atomic_load(&r->connected)) return -1;
    fake_cmd_t *c = calloc(1, sizeof *c);
    c->argc = argc < 64 ? argc : 64;
    for (int i = 0; i < c->argc; i++) {
        c->argv[i] = malloc(lens[i] + 1);
        memcpy(c->argv[i], argv[i], lens[i]);
        c->argv[i][lens[i]] = '\0';
        c->lens[i] = lens[i];
    }
    c->cb = cb;
    c->priv = privdata;
    if (fr.tail)
        fr.tail->next = c;
    else
        fr.head = c;
    fr.tail = c;
    fr.count++;
    return 0;
}

void pl_redis_flush(pl_redis_t *r) {}

/* The cluster router's (svc/cluster.c, linked in through app/kv.c): never called here, where the
 * shard talks to one (fake) Redis. */
int pl_redis_command_raw(pl_redis_t *r, pl_redis_cb cb, void *privdata, const char *resp,
                         size_t len)
{
    return -1;
}
void pl_redis_format(pl_buf_t *b, int argc, const char **argv, const size_t *lens) {}
pl_redis_t *pl_redis_of(struct redisAsyncContext *ac)
{
    return NULL;
}

static inline void fake_cmd_free(fake_cmd_t *c)
{
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c);
}

/* Take the oldest pending command for which `match` is true; NULL if none. */
static inline fake_cmd_t *fr_take(int (*match)(const fake_cmd_t *, const void *), const void *arg)
{
    for (fake_cmd_t **pp = &fr.head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
        if (match(*pp, arg)) {
            fake_cmd_t *c = *pp;
            *pp = c->next;
            if (fr.tail == c) fr.tail = prev;
            return c;
        }
    return NULL;
}

static inline int is_script(const fake_cmd_t *c, const void *which)
{
    return c->argc > 1 && strcmp(c->argv[0], "EVALSHA") == 0 &&
           strcmp(c->argv[1], pl_script_sha(*(const pl_script_t *)which)) == 0;
}

static inline int is_cmd(const fake_cmd_t *c, const void *name)
{
    return strcmp(c->argv[0], name) == 0;
}

/* The oldest pending call of a script, or NULL. */
static inline fake_cmd_t *fr_script(pl_script_t which)
{
    return fr_take(is_script, &which);
}

/* Answer a command (reply NULL: the connection was lost), then forget it. */
static inline void fr_reply(fake_cmd_t *c, redisReply *r)
{
    if (c->cb) c->cb(NULL, r, c->priv);
    fake_cmd_free(c);
}

/* Replies, freed by rfree (they are the test's, not hiredis'). */
static inline redisReply *rinteger(long long v)
{
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static inline redisReply *rstr(const char *s)
{
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_STRING;
    r->len = strlen(s);
    r->str = strdup(s);
    return r;
}

/* An array of `n` replies, given as varargs (redisReply *). */
static inline redisReply *rarr(size_t n, ...)
{
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof *r->element);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static inline void rfree(redisReply *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->elements; i++)
        rfree(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

/* Answer a command with `r` and free both. */
static inline void fr_answer(fake_cmd_t *c, redisReply *r)
{
    fr_reply(c, r);
    rfree(r);
}

/* Answer what the test does not look at: script loads, readiness (ready), id nodes, the
 * resync, membership mirrors; presence batches with "not the first connection". */
static inline void fr_answer_routine(void)
{
    fake_cmd_t *c;
    while ((c = fr_take(is_cmd, "SCRIPT")))
        fr_answer(c, rstr("sha"));
    while ((c = fr_take(is_cmd, "EXISTS")))
        fr_answer(c, rinteger(1));
    while ((c = fr_take(is_cmd, "SADD")) || (c = fr_take(is_cmd, "SREM")))
        fr_answer(c, rinteger(1));
    while ((c = fr_script(PL_SCRIPT_RESYNC)))
        fr_answer(c, rinteger(0));
}

static inline void pl_redis_stop_all(void)
{
    fake_cmd_t *c;
    while ((c = fr.head)) {
        fr.head = c->next;
        fr_reply(c, NULL);
    }
    fr.tail = NULL;
}

void pl_redis_stop(pl_redis_t *r)
{
    atomic_store(&r->connected, 0);
    pl_redis_stop_all();
}

/* The subscriber thread's blocking connections (app/srvlog.c) are not driven here. */
struct redisContext *pl_redis_connect_sync(const pl_redis_addr_t *a, int timeout_ms, char *err,
                                           size_t err_size)
{
    snprintf(err, err_size, "no blocking Redis in unit tests");
    return NULL;
}

/* ---- the fake database pool: jobs recorded ---- */

static struct {
    pl_db_job_t *jobs[64];
    int n;
} fdb;

int pl_db_reserve(pl_db_t *db)
{
    return 0;
}
void pl_db_release(pl_db_t *db) {}
void pl_db_submit(pl_db_t *db, pl_db_job_t *j)
{
    fdb.jobs[fdb.n++] = j;
}
int pl_db_up(pl_db_t *db)
{
    return 1;
}
size_t pl_db_store_pending(pl_db_t *db)
{
    return 0;
}
/* The metrics read the pool's workers (app/metrics.c): the fake has none. */
int pl_db_workers(const pl_db_t *db)
{
    return 0;
}
const pl_db_stats_t *pl_db_stats(const pl_db_t *db, int i)
{
    return NULL;
}

/* ---- the loopback transport ---- */

typedef struct {
    pl_buf_t out;   /* everything the server wrote */
    size_t read_at; /* how far the test has parsed it */
} loopback_t;

static inline int lb_accept(pl_sock_t *s, void *arg, void **loop_state)
{
    s->tstate = calloc(1, sizeof(loopback_t));
    pl_sock__opened(s);
    return 0;
}

static inline void lb_read(pl_sock_t *s, char *p, size_t n)
{
    pl_sock__deliver(s, p, n);
}

static ssize_t lb_write(pl_sock_t *s, const uv_buf_t *iov, unsigned n, int *full)
{
    loopback_t *lb = s->tstate;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        pl_buf_add(&lb->out, iov[i].base, iov[i].len);
        total += iov[i].len;
    }
    *full = 0;
    return (ssize_t)total;
}

/* The last connection freed: what it was sent, for a test to read after the close (cl_closed). */
static loopback_t lb_closed;

static inline void lb_free(pl_sock_t *s)
{
    loopback_t *lb = s->tstate;
    pl_buf_free(&lb_closed.out);
    lb_closed = *lb;
    free(lb);
}

static const pl_sock_type_t loopback = {
    .name = "loopback",
    .accept = lb_accept,
    .read = lb_read,
    .write = lb_write,
    .free = lb_free,
};

/* ---- one shard, driven by hand ---- */

static pl_server_t srv;
static pl_shard_t *shard;

/* One loop turn, not blocking: inbox, hooks (output, presence batches, Redis writes). */
static inline void turn(void)
{
    for (int i = 0; i < 3; i++)
        uv_run(pl_loop_uv(srv.loops[0]), UV_RUN_NOWAIT);
}

/* A shard with a connected, ready Redis; `with_db`: the fake pool stands for PostgreSQL. */
static inline void gw_init(int with_db)
{
    static const char *const env[][2] = {{"PARLEY_JWT_SECRET", "unit-secret"},
                                         {"PARLEY_API_KEY", "unit-key"},
                                         {"PARLEY_SERVER_ID", "unit-1"},
                                         {"PARLEY_SHARDS", "1"},
                                         /* The modules' tests send faster than any client may;
                                          * the limits have tests of their own. */
                                         {"PARLEY_RATE_LIMIT", "0"},
                                         {"PARLEY_SUBSCRIBE_RATE", "0"}};
    for (size_t i = 0; i < sizeof env / sizeof *env; i++)
        setenv(env[i][0], env[i][1], 1);
    char err[256];
    char *argv[] = {"parleyd", NULL};
    memset(&srv, 0, sizeof srv);
    pl_log_set_level(PL_LOG_WARN);
    pl_wire_init();
    if (pl_config_load(&srv.cfg, 1, argv, err, sizeof err) != 0 || pl_script_init() != 0) {
        printf("  harness: %s\n", err);
        exit(1);
    }
    srv.nshards = 1;
    srv.db = with_db ? (struct pl_db *)&fdb : NULL;
    srv.rooms_mask = pl_shardmask_new(1);
    srv.loops = calloc(1, sizeof *srv.loops);
    srv.owe = calloc(1, 1);
    srv.conns = calloc(1, sizeof *srv.conns);
    pl_limits_conns_init(srv.conns, 0, 0);
    srv.loops[0] = pl_loop_new(0, sizeof(pl_shard_t));
    atomic_init(&srv.sub.connected, 1);
    if (pl_shard_init(srv.loops[0], &srv, -1, -1, NULL, 0) != 0) {
        printf("  harness: pl_shard_init failed\n");
        exit(1);
    }
    shard = pl_shard_of_loop(srv.loops[0]);
    pl_publish_redis_up(&shard->redis); /* as hiredis would on connect */
    fr_answer_routine();
    turn();
}

/* A client on the loopback transport that upgraded (with a token for `user`, or none). */
static inline pl_sock_t *cl_connect(const char *user)
{
    pl_sock_t *s = pl_sock_attach(shard->conns->sock, &loopback, NULL);
    char tok[512] = "", req[1024];
    if (user) pl_jwt_sign("unit-secret", 11, user, pl_now_ms() / 1000 + 3600, tok, sizeof tok);
    int n = snprintf(req, sizeof req,
                     "GET /ws%s%s HTTP/1.1\r\nHost: unit\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     user ? "?token=" : "", tok);
    pl_sock_feed(s, req, (size_t)n);
    return s;
}

/* An HTTP request on a new loopback connection; the answer (head and body) after a turn. */
static inline pl_sock_t *cl_http(const char *req)
{
    pl_sock_t *s = pl_sock_attach(shard->conns->sock, &loopback, NULL);
    pl_sock_feed(s, (char *)req, strlen(req));
    return s;
}

static inline const char *cl_output(pl_sock_t *s)
{
    loopback_t *lb = s->tstate;
    return lb->out.data ? lb->out.data : "";
}

/* Send a masked text frame holding `json`. */
static inline void cl_send(pl_sock_t *s, const char *json)
{
    size_t n = strlen(json);
    unsigned char hdr[14], key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t h = 0;
    hdr[h++] = 0x81;
    if (n < 126) {
        hdr[h++] = (unsigned char)(0x80 | n);
    } else {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(n >> 8);
        hdr[h++] = (unsigned char)n;
    }
    memcpy(hdr + h, key, 4);
    h += 4;
    char *buf = malloc(h + n);
    memcpy(buf, hdr, h);
    for (size_t i = 0; i < n; i++)
        buf[h + i] = (char)(json[i] ^ key[i & 3]);
    pl_sock_feed(s, buf, h + n);
    free(buf);
}

/* The next frame in what the server wrote on a connection (after the 101), or NULL. */
static inline char *lb_next(loopback_t *lb)
{
    if (!lb->out.data) return NULL;
    if (lb->read_at == 0) {
        const char *end = strstr(lb->out.data, "\r\n\r\n");
        if (!end) return NULL;
        lb->read_at = (size_t)(end + 4 - lb->out.data);
    }
    const unsigned char *p = (const unsigned char *)lb->out.data + lb->read_at;
    size_t left = lb->out.len - lb->read_at;
    if (left < 2) return NULL;
    size_t len = p[1] & 0x7f, h = 2;
    if (len == 126) {
        len = (size_t)p[2] << 8 | p[3];
        h = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        h = 10;
    }
    if (left < h + len) return NULL;
    char *out = malloc(len + 1);
    memcpy(out, p + h, len);
    out[len] = '\0';
    lb->read_at += h + len;
    return out;
}

/* The next frame the server sent `s` (its payload, NUL-terminated; the caller frees it), or NULL
 * if there is none yet. A close frame's payload is its code (2 bytes) and reason. */
static inline char *cl_next(pl_sock_t *s)
{
    return lb_next(s->tstate);
}

/* The same for the last connection freed (after its close), from where the test had read. */
static inline char *cl_closed_next(void)
{
    return lb_next(&lb_closed);
}

/* Skip frames until one whose JSON has "type":type; NULL if none (the skipped are lost). */
static inline char *cl_expect(pl_sock_t *s, const char *type)
{
    char want[64];
    snprintf(want, sizeof want, "{\"type\":\"%s\"", type);
    char *f;
    while ((f = cl_next(s))) {
        if (strncmp(f, want, strlen(want)) == 0) return f;
        free(f);
    }
    return NULL;
}

/* A room message's JSON as Redis publishes it. */
static inline void msg_json(char *out, size_t n, const char *room, long long seq, const char *text)
{
    snprintf(out, n,
             "{\"type\":\"message\",\"seq\":%lld,\"room\":\"%s\",\"id\":\"%lld\",\"from\":\"x\","
             "\"text\":\"%s\",\"ts\":1}",
             seq, room, 1000 + seq, text);
}

/* The subscriber thread's part: a message on room:<room> reaches the loop. */
static inline void bcast(const char *room, long long seq, const char *text)
{
    char chan[160], payload[512];
    snprintf(chan, sizeof chan, "room:%s", room);
    msg_json(payload, sizeof payload, room, seq, text);
    pl_deliver_handlers.on_message(&srv, chan, strlen(chan), payload, strlen(payload), 1);
    pl_deliver_handlers.on_idle(&srv);
}

/* The seq of a message frame's JSON, -1 if it is not one. */
static inline long long frame_seq(const char *f)
{
    long long seq;
    return sscanf(f, "{\"type\":\"message\",\"seq\":%lld", &seq) == 1 ? seq : -1;
}

#endif
