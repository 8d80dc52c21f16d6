/*
 * subscriber: blocking hiredis in a thread of its own. Each pmessage on
 * `room:<id>` becomes one frame and one pl_bcast_t posted to every shard;
 * shards are woken once per drained batch.
 */
#include "parley/svc/subscriber.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "parley/base/log.h"
#include "parley/svc/reply.h"
#include "parley/app/wire.h"
#include "parley/app/room.h"
#include "parley/app/server.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* Guards `fd` against pl_subscriber_stop shutting down a socket being closed or reused. */
static pthread_mutex_t fd_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_fd(pl_subscriber_t *s, int fd)
{
    pthread_mutex_lock(&fd_lock);
    atomic_store(&s->fd, fd);
    pthread_mutex_unlock(&fd_lock);
}

/* Sleep in short steps so a stop request is seen promptly. */
static void backoff_sleep(pl_subscriber_t *s, int ms)
{
    for (int slept = 0; slept < ms && !atomic_load(&s->stop); slept += 50) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Copy a string member of a small JSON object (typing, direct messages: not the hot path). */
static int json_user(const cJSON *o, const char *key, char out[129])
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || strlen(v->valuestring) > 128) return -1;
    strcpy(out, v->valuestring);
    return 0;
}

static void dispatch(pl_subscriber_t *s, redisReply *r, unsigned char *owe)
{
    /* ["pmessage", pattern, "room:<id>", payload] or ["message", "server:<us>", payload] */
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    pl_bcast_kind_t kind;
    const redisReply *chan, *payload;
    if (r->elements == 4 && strcmp(r->element[0]->str, "pmessage") == 0) {
        chan = r->element[2], payload = r->element[3];
        kind = PL_BC_ROOM;
    } else if (r->elements == 3 && strcmp(r->element[0]->str, "message") == 0) {
        chan = r->element[1], payload = r->element[2];
        kind = PL_BC_DM;
    } else {
        return; /* (p)subscribe confirmations */
    }
    const char *room = "";
    size_t room_len = 0;
    char user_a[129] = "", user_b[129] = "";
    if (kind == PL_BC_ROOM) {
        if (chan->len <= 5 || memcmp(chan->str, "room:", 5) != 0) return;
        room = chan->str + 5;
        room_len = chan->len - 5;
        if (payload->len > 16 && memcmp(payload->str, "{\"type\":\"typing_", 16) == 0) {
            cJSON *j = cJSON_ParseWithLength(payload->str, payload->len);
            int bad = json_user(j, "user", user_a);
            cJSON_Delete(j);
            if (bad) return;
            kind = PL_BC_TYPING;
        }
    } else {
        cJSON *j = cJSON_ParseWithLength(payload->str, payload->len);
        int bad = json_user(j, "from", user_a) || json_user(j, "to", user_b);
        cJSON_Delete(j);
        if (bad) {
            pl_warn("ignoring a malformed direct message on %.*s", (int)chan->len, chan->str);
            return;
        }
    }
    if (kind != PL_BC_DM && !pl_room_id_valid(room, room_len)) {
        pl_warn("ignoring message on invalid channel '%.*s'",
                (int)(chan->len > 200 ? 200 : chan->len), chan->str);
        return;
    }
    pl_server_t *srv = s->srv;
    /* Room events go only to the shards that hold the room (a direct message to every shard:
     * its users may be anywhere); none, and the message is not even framed. */
    uint64_t to = srv->nshards == 64 ? ~(uint64_t)0 : ((uint64_t)1 << srv->nshards) - 1;
    if (kind != PL_BC_DM) to &= pl_shardmask_get(srv->rooms_mask, pl_room_hash(room, room_len));
    if (!to) return;
    int n = __builtin_popcountll(to);
    /* The broadcast rides in the frame's allocation and holds its first reference. */
    void *extra;
    pl_frame_t *f = pl_frame_text_with(payload->str, payload->len,
                                       sizeof(pl_bcast_t) + (size_t)n * sizeof(pl_event_t), &extra);
    if (!f) {
        pl_error("out of memory: dropped a message for room %.*s", (int)room_len, room);
        return;
    }
    pl_bcast_t *b = extra;
    b->frame = f;
    b->seq = pl_proto_payload_seq(payload->str, payload->len);
    b->kind = kind;
    memcpy(b->user_a, user_a, sizeof user_a);
    memcpy(b->user_b, user_b, sizeof user_b);
    atomic_init(&b->pending, (unsigned)n);
    b->room_len = (uint32_t)room_len;
    memcpy(b->room, room, room_len);
    b->room[room_len] = '\0';
    for (int i = 0, k = 0; i < srv->nshards; i++) {
        if (!(to & ((uint64_t)1 << i))) continue;
        b->ev[k].kind = PL_EV_BCAST;
        b->ev[k].bcast = b;
        if (pl_shard_post_nowake(srv->shards[i], &b->ev[k])) owe[i] = 1;
        k++;
    }
}

static void wake_owed(pl_subscriber_t *s, unsigned char *owe)
{
    for (int i = 0; i < s->srv->nshards; i++)
        if (owe[i]) {
            owe[i] = 0;
            pl_shard_wake(s->srv->shards[i]);
        }
}

static void serve(pl_subscriber_t *s, redisContext *c, unsigned char *owe)
{
    for (;;) {
        void *reply = NULL;
        /* Drain what is already buffered, then wake the shards once and block. */
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) return;
        if (!reply) {
            wake_owed(s, owe);
            if (redisGetReply(c, &reply) != REDIS_OK || !reply) return;
        }
        dispatch(s, reply, owe);
        pl_reply_free(reply);
    }
}

static void *sub_main(void *arg)
{
    pl_subscriber_t *s = arg;
    pl_log_set_thread("redis-sub");
    const pl_config_t *cfg = &s->srv->cfg;
    unsigned char *owe = calloc((size_t)s->srv->nshards, 1);
    /* Replies are built in one arena, emptied after each: no allocation per message. */
    pl_reply_arena_t *arena = pl_reply_arena_new();
    int backoff = BACKOFF_MIN_MS, logged_down = 0;
    if (!owe || !arena) pl_error("subscriber: out of memory; not subscribing");
    while (owe && arena && !atomic_load(&s->stop)) {
        char err[256];
        /* A short timeout: a shutdown waits for it. */
        redisContext *c = pl_redis_connect_sync(&s->srv->redis_addr, 1000, err, sizeof err);
        if (!c) {
            if (!logged_down) pl_warn("subscriber: redis %s; retrying", err);
            logged_down = 1;
            backoff_sleep(s, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        pl_reply_attach(c->reader, arena);
        set_fd(s, c->fd);
        redisEnableKeepAlive(c); /* notice a Redis that vanished without closing */
        /* Rooms from everyone; direct messages only for the users connected here. */
        int ok = redisAppendCommand(c, "PSUBSCRIBE room:*") == REDIS_OK &&
                 redisAppendCommand(c, "SUBSCRIBE server:%s", cfg->server_id) == REDIS_OK;
        for (int confirmed = 0; ok && confirmed < 2;) {
            void *reply = NULL;
            ok = redisGetReply(c, &reply) == REDIS_OK && reply;
            if (!ok) break;
            redisReply *rr = reply;
            if (rr->type == REDIS_REPLY_ARRAY && rr->elements == 3 &&
                rr->element[0]->type == REDIS_REPLY_STRING &&
                (!strcmp(rr->element[0]->str, "psubscribe") ||
                 !strcmp(rr->element[0]->str, "subscribe")))
                confirmed++;
            else if (rr->type == REDIS_REPLY_ERROR)
                ok = 0;
            else
                dispatch(s, rr, owe);
            pl_reply_free(reply);
        }
        if (ok) {
            struct timeval none = {0, 0}; /* block for as long as Redis is quiet */
            redisSetTimeout(c, none);
            atomic_store(&s->connected, 1);
            backoff = BACKOFF_MIN_MS;
            logged_down = 0;
            pl_info("subscriber: PSUBSCRIBE room:*, SUBSCRIBE server:%s on %s:%d", cfg->server_id,
                    cfg->redis_host, cfg->redis_port);
            serve(s, c, owe);
            atomic_store(&s->connected, 0);
            wake_owed(s, owe);
            if (!atomic_load(&s->stop))
                pl_warn("subscriber: redis connection lost (%s); reconnecting",
                        c->errstr[0] ? c->errstr : "closed");
        }
        set_fd(s, -1);
        redisFree(c);
        if (!atomic_load(&s->stop)) backoff_sleep(s, backoff);
    }
    free(owe);
    pl_reply_arena_free(arena); /* after redisFree: it frees a partly read reply through it */
    return NULL;
}

int pl_subscriber_start(pl_subscriber_t *s, struct pl_server *srv)
{
    s->srv = srv;
    atomic_init(&s->connected, 0);
    atomic_init(&s->stop, 0);
    atomic_init(&s->fd, -1);
    int rc = pthread_create(&s->thread, NULL, sub_main, s);
    return rc ? -rc : 0;
}

void pl_subscriber_stop(pl_subscriber_t *s)
{
    atomic_store(&s->stop, 1);
    pthread_mutex_lock(&fd_lock);
    int fd = atomic_load(&s->fd);
    if (fd >= 0) shutdown(fd, SHUT_RDWR); /* unblocks redisGetReply */
    pthread_mutex_unlock(&fd_lock);
    pthread_join(s->thread, NULL);
}
