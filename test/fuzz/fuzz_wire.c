/*
 * fuzz_wire: protocol v1 decoding (app/wire.c: cJSON parsing into the per-loop arena and the
 * validation of every frame type) with an arbitrary client text frame, and the encoders that
 * echo what a client sent (error frames with its cid, message frames with its room and text).
 *
 * Oracles: the sanitizers (the arena falls back to malloc for big trees; a free of arena
 * memory or a leak of malloc'ed nodes shows); what a decoded request promises (NUL-terminated
 * strings of the stated lengths, room ids valid, the limits kept); the arena empty once every
 * request decoded into it is freed, also with two alive at once; and every encoded frame
 * parses back as JSON giving the same strings.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "fuzz.h"
#include "parley/app/room.h"
#include "parley/app/wire.h"

static const pl_wire_limits_t LIM = {.max_text = 16384, .max_rooms = 1024};
static pl_wire_arena_t arena;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_wire_init();
    return 0;
}

/* `v[0..n)` went out as the string member `key` of the JSON in `b`: it must come back equal. */
static void check_echo(const pl_buf_t *b, const char *key, const char *v, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(b->data, b->len);
    FUZZ_ASSERT(j && cJSON_IsObject(j));
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, key);
    FUZZ_ASSERT(cJSON_IsString(s) && strlen(s->valuestring) == n &&
                memcmp(s->valuestring, v, n) == 0);
    cJSON_Delete(j);
}

static void check_req(const pl_req_t *r)
{
    if (r->cid) FUZZ_ASSERT(strlen(r->cid) == r->cid_len && r->cid_len <= PL_CID_MAX);
    if (r->room)
        FUZZ_ASSERT(strlen(r->room) == r->room_len && pl_room_id_valid(r->room, r->room_len));
    if (r->to) FUZZ_ASSERT(strlen(r->to) == r->to_len && pl_user_id_valid(r->to, r->to_len));
    if (r->text) FUZZ_ASSERT(strlen(r->text) == r->text_len && r->text_len <= LIM.max_text);
    if (r->token) FUZZ_ASSERT(strlen(r->token) == r->token_len && r->token_len > 0);
    switch (r->type) {
    case PL_REQ_MESSAGE:
        FUZZ_ASSERT(r->text && r->text_len > 0 && (r->room != NULL) != (r->to != NULL));
        break;
    case PL_REQ_SUBSCRIBE:
    case PL_REQ_UNSUBSCRIBE: {
        FUZZ_ASSERT(r->nrooms >= 1 && r->nrooms <= LIM.max_rooms);
        size_t n = 0;
        const cJSON *room;
        cJSON_ArrayForEach(room, r->rooms)
        {
            FUZZ_ASSERT(pl_room_id_valid(room->valuestring, strlen(room->valuestring)));
            int64_t since = pl_wire_since(r, room->valuestring);
            FUZZ_ASSERT(since >= -1 && since <= 9000000000000000ll);
            n++;
        }
        FUZZ_ASSERT(n == r->nrooms);
        break;
    }
    case PL_REQ_READ:
        FUZZ_ASSERT(r->seq >= 0);
        /* fall through */
    case PL_REQ_TYPING_START:
    case PL_REQ_TYPING_STOP:
        FUZZ_ASSERT(r->room != NULL);
        break;
    case PL_REQ_AUTHENTICATE:
        FUZZ_ASSERT(r->token != NULL);
        break;
    case PL_REQ_PING:
        break;
    }
}

/* What session.c sends back: an error echoing the cid, or the message built from the request. */
static void echo(const pl_req_t *r, int rc, const pl_wire_err_t *err)
{
    pl_buf_t b = {0};
    if (rc != 0) {
        FUZZ_ASSERT(err->code != PL_ERR_NONE && err->message);
        pl_wire_error(&b, err->code, err->message, r->cid, r->cid_len);
        if (r->cid)
            check_echo(&b, "cid", r->cid, r->cid_len);
        else
            check_echo(&b, "message", err->message, strlen(err->message));
    } else if (r->type == PL_REQ_MESSAGE && r->room) {
        pl_wire_message_head(&b, 42);
        pl_wire_message_tail(&b, r->room, r->room_len, 7, "user", r->text, r->text_len,
                             1700000000000, r->cid, r->cid_len);
        check_echo(&b, "text", r->text, r->text_len);
        check_echo(&b, "room", r->room, r->room_len);
        if (r->cid) check_echo(&b, "cid", r->cid, r->cid_len);
        FUZZ_ASSERT(pl_wire_payload_seq(b.data, b.len) == 42);
        FUZZ_ASSERT(pl_wire_payload_ts(b.data, b.len) == 1700000000000);
    } else if (r->type == PL_REQ_MESSAGE) {
        pl_wire_message_head(&b, 42);
        pl_wire_dm_tail(&b, "dm:a:b", 6, 7, "user", r->to, r->text, r->text_len, 1, r->cid,
                        r->cid_len);
        check_echo(&b, "to", r->to, r->to_len);
        check_echo(&b, "text", r->text, r->text_len);
    }
    pl_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    pl_req_t a, b;
    pl_wire_err_t ea = {0}, eb = {0};
    int ra = pl_wire_decode(&arena, p, size, &LIM, &a, &ea);
    if (ra == 0) check_req(&a);
    echo(&a, ra, &ea);
    /* A second request decoded while the first is alive: the same answer, its own memory. */
    int rb = pl_wire_decode(&arena, p, size, &LIM, &b, &eb);
    FUZZ_ASSERT(ra == rb && (ra == 0 || (ea.code == eb.code && ea.message == eb.message)));
    FUZZ_ASSERT((a.cid == NULL) == (b.cid == NULL) && a.type == b.type);
    pl_wire_req_free(&a);
    if (rb == 0) check_req(&b);
    pl_wire_req_free(&b);
    FUZZ_ASSERT(arena.used == 0 && arena.live == 0 && !arena.armed);
    return 0;
}
