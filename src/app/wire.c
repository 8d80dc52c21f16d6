/* wire: protocol v1 decoding (cJSON) and encoding (pl_buf, type first). */
#include "parley/app/wire.h"

#include <cjson/cJSON.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "parley/app/room.h"

/*
 * Client frames are parsed into the caller's arena (one per loop) rather than
 * one malloc per JSON node and string (~10 for a message): cJSON's hooks
 * (installed by pl_wire_init) bump-allocate while pl_wire_decode parses, and
 * free nothing inside the arena; pl_wire_req_free empties it once no request
 * decoded into it is alive. A tree bigger than the arena continues on malloc.
 * cJSON's hooks take no context, so the arena in use is named by a
 * thread-local pointer, set only during the parse and the free; every other
 * use of cJSON, on any thread, gets plain malloc/free.
 */
static _Thread_local pl_wire_arena_t *cur;

static void *json_malloc(size_t n)
{
    pl_wire_arena_t *a = cur;
    if (a && a->armed) {
        size_t need = (n + 15) & ~(size_t)15;
        if (need <= PL_WIRE_ARENA_SIZE - a->used) {
            void *p = a->mem + a->used;
            a->used += need;
            return p;
        }
    }
    return malloc(n);
}

static void json_free(void *p)
{
    unsigned char *c = p;
    pl_wire_arena_t *a = cur;
    if (a && c >= a->mem && c < a->mem + PL_WIRE_ARENA_SIZE) return; /* goes with the arena */
    free(p);
}

void pl_wire_init(void)
{
    cJSON_Hooks hooks = {json_malloc, json_free};
    cJSON_InitHooks(&hooks);
}

static const char *const err_names[] = {
    [PL_ERR_NONE] = "none",
    [PL_ERR_BAD_JSON] = "bad_json",
    [PL_ERR_UNKNOWN_TYPE] = "unknown_type",
    [PL_ERR_BAD_REQUEST] = "bad_request",
    [PL_ERR_NOT_SUBSCRIBED] = "not_subscribed",
    [PL_ERR_TOO_LARGE] = "too_large",
    [PL_ERR_UNAUTHORIZED] = "unauthorized",
    [PL_ERR_UNAVAILABLE] = "unavailable",
    [PL_ERR_FORBIDDEN] = "forbidden",
    [PL_ERR_NOT_STORED] = "not_stored",
    [PL_ERR_RATE_LIMITED] = "rate_limited",
};

const char *pl_wire_err_name(pl_err_t code)
{
    return code < PL_ERR_COUNT ? err_names[code] : "internal";
}

static int fail(pl_wire_err_t *err, pl_err_t code, const char *message)
{
    err->code = code;
    err->message = message;
    return -1;
}

/* A string member, or NULL if absent; *bad set if present but not a string. */
static const char *str_member(const cJSON *o, const char *key, size_t *len, int *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return NULL;
    if (!cJSON_IsString(v)) {
        *bad = 1;
        return NULL;
    }
    *len = strlen(v->valuestring);
    return v->valuestring;
}

/* 1 if a string value of a "cid" key in the raw JSON has a NUL escape. */
static int cid_has_nul(const char *p, size_t len)
{
    const char *end = p + len;
    for (const char *q = p; (q = memmem(q, (size_t)(end - q), "\"cid\"", 5)) != NULL;) {
        q += 5;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        if (q >= end || *q != ':') continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        if (q >= end || *q != '"') continue;
        const char *v = ++q;
        while (q < end && *q != '"')
            q += *q == '\\' ? 2 : 1;
        if (q > end) q = end;
        if (pl_json_has_nul(v, (size_t)(q - v))) return 1;
    }
    return 0;
}

static int decode_rooms(const cJSON *root, const pl_wire_limits_t *lim, pl_req_t *req,
                        pl_wire_err_t *err)
{
    const cJSON *rooms = cJSON_GetObjectItemCaseSensitive(root, "rooms");
    if (!cJSON_IsArray(rooms)) return fail(err, PL_ERR_BAD_REQUEST, "rooms must be an array");
    size_t n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, rooms)
    {
        if (!cJSON_IsString(r) || !pl_room_id_valid(r->valuestring, strlen(r->valuestring)))
            return fail(err, PL_ERR_BAD_REQUEST,
                        "room ids are strings of 1-128 bytes of [A-Za-z0-9_.:-]");
        n++;
    }
    if (n == 0) return fail(err, PL_ERR_BAD_REQUEST, "rooms must not be empty");
    if (n > lim->max_rooms) return fail(err, PL_ERR_TOO_LARGE, "too many rooms");
    req->rooms = rooms;
    req->nrooms = n;
    return 0;
}

int pl_wire_decode(pl_wire_arena_t *a, const char *p, size_t len, const pl_wire_limits_t *lim,
                   pl_req_t *req, pl_wire_err_t *err)
{
    memset(req, 0, sizeof *req);
    req->arena = a;
    cur = a;
    a->armed = 1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(p, len, &end, 0);
    a->armed = 0;
    cur = NULL;
    if (!root) {
        if (!a->live) a->used = 0; /* a failed parse frees what it built */
        return fail(err, PL_ERR_BAD_JSON, "frame is not valid JSON");
    }
    a->live++;
    req->root = root;
    /* One JSON value per frame: "{...} x" is not a frame with a comment. */
    for (; end && end < p + len; end++)
        if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n')
            return fail(err, PL_ERR_BAD_JSON, "frame has bytes after its JSON object");
    if (!cJSON_IsObject(root)) return fail(err, PL_ERR_BAD_JSON, "frame must be a JSON object");

    int bad = 0;
    size_t cid_len = 0;
    const char *cid = str_member(root, "cid", &cid_len, &bad);
    if (bad || (cid && (cid_len == 0 || cid_len > PL_CID_MAX)))
        return fail(err, PL_ERR_BAD_REQUEST, "cid must be a string of 1-128 bytes");
    req->cid = cid;
    req->cid_len = cid_len;
    /* Checked after the cid is known so the error can echo it, unless the cid is what was cut. */
    if (pl_json_has_nul(p, len)) {
        if (cid && cid_has_nul(p, len)) req->cid = NULL, req->cid_len = 0;
        return fail(err, PL_ERR_BAD_REQUEST, "strings must not contain NUL (\\u0000)");
    }

    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!cJSON_IsString(type)) return fail(err, PL_ERR_BAD_JSON, "frame needs a string type");
    const char *t = type->valuestring;

    if (strcmp(t, "message") == 0) {
        req->type = PL_REQ_MESSAGE;
        req->room = str_member(root, "room", &req->room_len, &bad);
        req->to = str_member(root, "to", &req->to_len, &bad);
        req->text = str_member(root, "text", &req->text_len, &bad);
        if (!bad && req->to && !req->room) {
            if (!pl_user_id_valid(req->to, req->to_len))
                return fail(err, PL_ERR_BAD_REQUEST, "to must be a user id of 1-128 bytes");
        } else if (bad || !req->room || req->to || !pl_room_id_valid(req->room, req->room_len)) {
            return fail(err, PL_ERR_BAD_REQUEST, "message needs a valid room id, or a user in to");
        }
        if (!req->text || req->text_len == 0)
            return fail(err, PL_ERR_BAD_REQUEST, "message needs a non-empty string text");
        if (req->text_len > lim->max_text) return fail(err, PL_ERR_TOO_LARGE, "text too long");
        return 0;
    }
    if (strcmp(t, "subscribe") == 0) {
        req->type = PL_REQ_SUBSCRIBE;
        const cJSON *since = cJSON_GetObjectItemCaseSensitive(root, "since");
        if (since) {
            const cJSON *v;
            if (!cJSON_IsObject(since))
                return fail(err, PL_ERR_BAD_REQUEST, "since must be an object of room -> seq");
            cJSON_ArrayForEach(v, since)
            {
                if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15 ||
                    v->valuedouble != (double)(int64_t)v->valuedouble)
                    return fail(err, PL_ERR_BAD_REQUEST, "since values must be integers >= 0");
            }
            req->since = since;
        }
        return decode_rooms(root, lim, req, err);
    }
    if (strcmp(t, "unsubscribe") == 0) {
        req->type = PL_REQ_UNSUBSCRIBE;
        return decode_rooms(root, lim, req, err);
    }
    if (strcmp(t, "typing_start") == 0 || strcmp(t, "typing_stop") == 0 || strcmp(t, "read") == 0) {
        req->type = strcmp(t, "read") == 0           ? PL_REQ_READ
                    : strcmp(t, "typing_start") == 0 ? PL_REQ_TYPING_START
                                                     : PL_REQ_TYPING_STOP;
        req->room = str_member(root, "room", &req->room_len, &bad);
        if (bad || !req->room || !pl_room_id_valid(req->room, req->room_len))
            return fail(err, PL_ERR_BAD_REQUEST, "needs a valid room id");
        if (req->type == PL_REQ_READ) {
            const cJSON *seq = cJSON_GetObjectItemCaseSensitive(root, "seq");
            if (!cJSON_IsNumber(seq) || seq->valuedouble < 0 || seq->valuedouble > 9e15 ||
                seq->valuedouble != (double)(int64_t)seq->valuedouble)
                return fail(err, PL_ERR_BAD_REQUEST, "read needs an integer seq >= 0");
            req->seq = (int64_t)seq->valuedouble;
        }
        return 0;
    }
    if (strcmp(t, "ping") == 0) {
        req->type = PL_REQ_PING;
        return 0;
    }
    if (strcmp(t, "authenticate") == 0) {
        req->type = PL_REQ_AUTHENTICATE;
        req->token = str_member(root, "token", &req->token_len, &bad);
        if (bad || !req->token || req->token_len == 0)
            return fail(err, PL_ERR_BAD_REQUEST, "authenticate needs a string token");
        return 0;
    }
    return fail(err, PL_ERR_UNKNOWN_TYPE, "unknown frame type");
}

int pl_user_id_valid(const char *s, size_t n)
{
    if (n == 0 || n > 128) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

int64_t pl_wire_since(const pl_req_t *req, const char *room)
{
    if (!req->since) return -1;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req->since, room);
    return v ? (int64_t)v->valuedouble : -1;
}

void pl_wire_req_free(pl_req_t *req)
{
    if (!req->root) return;
    pl_wire_arena_t *a = req->arena;
    cur = a;
    cJSON_Delete(req->root);
    cur = NULL;
    req->root = NULL;
    if (--a->live == 0) a->used = 0;
}

/* Encoders. Keys are literals, so only values go through escaping. */

void pl_wire_authenticated(pl_buf_t *b, const char *user, const char *server, const char *session,
                           uint32_t exp)
{
    pl_buf_adds(b, "{\"type\":\"authenticated\",\"user\":");
    pl_buf_json_str(b, user, strlen(user));
    pl_buf_adds(b, ",\"server\":");
    pl_buf_json_str(b, server, strlen(server));
    pl_buf_adds(b, ",\"session\":");
    pl_buf_json_str(b, session, strlen(session));
    if (exp) pl_buf_printf(b, ",\"exp\":%lu", (unsigned long)exp);
    pl_buf_add(b, "}", 1);
}

void pl_wire_room_reply(pl_buf_t *b, const char *type, const char *room, size_t room_len)
{
    pl_buf_adds(b, "{\"type\":\"");
    pl_buf_adds(b, type);
    pl_buf_adds(b, "\",\"room\":");
    pl_buf_json_str(b, room, room_len);
    pl_buf_add(b, "}", 1);
}

void pl_wire_error(pl_buf_t *b, pl_err_t code, const char *message, const char *cid, size_t cid_len)
{
    pl_wire_error_room(b, code, message, cid, cid_len, NULL);
}

void pl_wire_error_room(pl_buf_t *b, pl_err_t code, const char *message, const char *cid,
                        size_t cid_len, const char *room)
{
    pl_buf_adds(b, "{\"type\":\"error\",\"code\":\"");
    pl_buf_adds(b, pl_wire_err_name(code));
    pl_buf_adds(b, "\",\"message\":");
    pl_buf_json_str(b, message, strlen(message));
    if (cid) {
        pl_buf_adds(b, ",\"cid\":");
        pl_buf_json_str(b, cid, cid_len);
    }
    if (room) {
        pl_buf_adds(b, ",\"room\":");
        pl_buf_json_str(b, room, strlen(room));
    }
    pl_buf_add(b, "}", 1);
}

void pl_wire_rate_limited(pl_buf_t *b, const char *message, const char *cid, size_t cid_len,
                          uint32_t retry_after_ms)
{
    pl_wire_error_room(b, PL_ERR_RATE_LIMITED, message, cid, cid_len, NULL);
    b->len--; /* the closing brace */
    pl_buf_adds(b, ",\"retry_after_ms\":");
    pl_buf_uint(b, retry_after_ms);
    pl_buf_add(b, "}", 1);
}

#define MESSAGE_HEAD "{\"type\":\"message\",\"seq\":"

void pl_wire_message_head(pl_buf_t *b, int64_t seq)
{
    pl_buf_adds(b, MESSAGE_HEAD);
    pl_buf_int(b, seq);
    pl_buf_add(b, ",", 1);
}

/* The tail of a room message or, with `to`, of a direct message. */
static void message_tail(pl_buf_t *b, const char *room, size_t room_len, uint64_t id,
                         const char *from, const char *to, const char *text, size_t text_len,
                         int64_t ts_ms, const char *cid, size_t cid_len)
{
    pl_buf_adds(b, "\"room\":");
    pl_buf_json_str(b, room, room_len);
    pl_buf_adds(b, ",\"id\":\"");
    pl_buf_uint(b, id);
    pl_buf_adds(b, "\",\"from\":");
    pl_buf_json_str(b, from, strlen(from));
    if (to) {
        pl_buf_adds(b, ",\"to\":");
        pl_buf_json_str(b, to, strlen(to));
    }
    pl_buf_adds(b, ",\"text\":");
    pl_buf_json_str(b, text, text_len);
    pl_buf_adds(b, ",\"ts\":");
    pl_buf_int(b, ts_ms);
    if (cid) {
        pl_buf_adds(b, ",\"cid\":");
        pl_buf_json_str(b, cid, cid_len);
    }
    pl_buf_add(b, "}", 1);
}

void pl_wire_message_tail(pl_buf_t *b, const char *room, size_t room_len, uint64_t id,
                          const char *from, const char *text, size_t text_len, int64_t ts_ms,
                          const char *cid, size_t cid_len)
{
    message_tail(b, room, room_len, id, from, NULL, text, text_len, ts_ms, cid, cid_len);
}

void pl_wire_dm_tail(pl_buf_t *b, const char *room, size_t room_len, uint64_t id, const char *from,
                     const char *to, const char *text, size_t text_len, int64_t ts_ms,
                     const char *cid, size_t cid_len)
{
    message_tail(b, room, room_len, id, from, to, text, text_len, ts_ms, cid, cid_len);
}

int64_t pl_wire_payload_seq(const char *p, size_t len)
{
    size_t h = sizeof MESSAGE_HEAD - 1;
    if (len <= h || memcmp(p, MESSAGE_HEAD, h) != 0) return 0;
    int64_t seq = 0;
    for (size_t i = h; i < len && p[i] >= '0' && p[i] <= '9'; i++)
        seq = seq * 10 + (p[i] - '0');
    return seq;
}

/* `,"ts":` cannot occur inside a JSON string (its quote would be escaped), and only the cid,
 * 128 bytes at most (escaped: 6 per byte), follows it: search back from the end. */
int64_t pl_wire_payload_ts(const char *p, size_t len)
{
    static const char key[] = ",\"ts\":";
    size_t k = sizeof key - 1, h = sizeof MESSAGE_HEAD - 1;
    if (len <= h || memcmp(p, MESSAGE_HEAD, h) != 0) return 0;
    size_t stop = len > 1024 ? len - 1024 : 0;
    for (size_t i = len - k; i > stop && i > h; i--) {
        if (p[i] != ',' || memcmp(p + i, key, k) != 0) continue;
        int64_t ts = 0;
        for (size_t j = i + k; j < len && p[j] >= '0' && p[j] <= '9'; j++)
            ts = ts * 10 + (p[j] - '0');
        return ts;
    }
    return 0;
}

void pl_wire_ack(pl_buf_t *b, const char *cid, size_t cid_len, uint64_t id, int64_t seq)
{
    pl_buf_adds(b, "{\"type\":\"ack\"");
    if (cid) {
        pl_buf_adds(b, ",\"cid\":");
        pl_buf_json_str(b, cid, cid_len);
    }
    pl_buf_printf(b, ",\"id\":\"%llu\",\"seq\":%lld}", (unsigned long long)id, (long long)seq);
}

void pl_wire_subscribed(pl_buf_t *b, const char *room, size_t room_len, int64_t seq, int64_t read,
                        long recovered, int truncated)
{
    pl_buf_adds(b, "{\"type\":\"subscribed\",\"room\":");
    pl_buf_json_str(b, room, room_len);
    if (seq >= 0) pl_buf_printf(b, ",\"seq\":%lld", (long long)seq);
    if (seq >= 0 && read >= 0)
        pl_buf_printf(b, ",\"read\":%lld,\"unread\":%lld", (long long)read,
                      (long long)(seq > read ? seq - read : 0));
    if (recovered >= 0) pl_buf_printf(b, ",\"recovered\":%ld", recovered);
    if (truncated) pl_buf_adds(b, ",\"truncated\":true");
    pl_buf_add(b, "}", 1);
}

void pl_wire_notice(pl_buf_t *b, const char *code, const char *message)
{
    pl_buf_adds(b, "{\"type\":\"server_notice\",\"code\":");
    pl_buf_json_str(b, code, strlen(code));
    pl_buf_adds(b, ",\"message\":");
    pl_buf_json_str(b, message, strlen(message));
    pl_buf_add(b, "}", 1);
}
