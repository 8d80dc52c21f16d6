/* Unit tests for src/proto.c: every client frame rule of docs/protocol.md,
 * and the encoders (valid JSON, `type` first, escaping, optional cid). */
#include "parley/app/wire.h"
#include "unit.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static const pl_wire_limits_t LIM = {.max_text = 16, .max_rooms = 3};
static pl_wire_arena_t arena;

/* Decode a NUL-terminated frame; the caller frees req. */
static int dec(const char *s, pl_req_t *req, pl_wire_err_t *err)
{
    err->code = PL_ERR_NONE;
    err->message = NULL;
    return pl_wire_decode(&arena, s, strlen(s), &LIM, req, err);
}

/* The frame is refused with `code` and a non-empty message; returns the req's cid or NULL. */
static int expect_err(const char *s, pl_err_t code)
{
    pl_req_t req;
    pl_wire_err_t err;
    int rc = dec(s, &req, &err);
    int ok = rc == -1 && err.code == code && err.message && *err.message;
    if (!ok) printf("  frame %s: rc %d code %d (want %d)\n", s, rc, (int)err.code, (int)code);
    pl_wire_req_free(&req);
    return ok;
}

/* ---- good frames ---- */

static void decode_subscribe(void)
{
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec("{\"type\":\"subscribe\",\"rooms\":[\"r1\",\"a.b:c-d_E9\"]}", &req, &err), 0);
    CHECK_EQ_INT(req.type, PL_REQ_SUBSCRIBE);
    CHECK_EQ_INT(req.nrooms, 2);
    CHECK(req.rooms && cJSON_IsArray(req.rooms));
    CHECK_EQ_INT(cJSON_GetArraySize(req.rooms), 2);
    CHECK_STR(cJSON_GetArrayItem(req.rooms, 0)->valuestring, "r1");
    CHECK_STR(cJSON_GetArrayItem(req.rooms, 1)->valuestring, "a.b:c-d_E9");
    CHECK(req.cid == NULL);
    pl_wire_req_free(&req);
    CHECK(req.root == NULL);

    /* max_rooms exactly, and member order does not matter */
    CHECK_EQ_INT(
        dec("{\"rooms\":[\"a\",\"b\",\"c\"],\"type\":\"subscribe\",\"cid\":\"k\"}", &req, &err), 0);
    CHECK_EQ_INT(req.nrooms, 3);
    CHECK(req.cid && req.cid_len == 1 && strcmp(req.cid, "k") == 0);
    pl_wire_req_free(&req);
}

static void decode_unsubscribe(void)
{
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec("{\"type\":\"unsubscribe\",\"rooms\":[\"r1\"]}", &req, &err), 0);
    CHECK_EQ_INT(req.type, PL_REQ_UNSUBSCRIBE);
    CHECK_EQ_INT(req.nrooms, 1);
    CHECK_STR(cJSON_GetArrayItem(req.rooms, 0)->valuestring, "r1");
    pl_wire_req_free(&req);
}

static void decode_message(void)
{
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"hello\",\"cid\":\"c-1\"}",
                     &req, &err),
                 0);
    CHECK_EQ_INT(req.type, PL_REQ_MESSAGE);
    CHECK(req.room && req.room_len == 2 && memcmp(req.room, "r1", 2) == 0);
    CHECK(req.text && req.text_len == 5 && memcmp(req.text, "hello", 5) == 0);
    CHECK(req.cid && req.cid_len == 3 && memcmp(req.cid, "c-1", 3) == 0);
    pl_wire_req_free(&req);

    CHECK_EQ_INT(dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"hi\"}", &req, &err), 0);
    CHECK_EQ_INT(req.type, PL_REQ_MESSAGE);
    CHECK(req.cid == NULL);
    CHECK_EQ_INT(req.text_len, 2);
    pl_wire_req_free(&req);

    /* text exactly max_text bytes (UTF-8 counted in bytes: 8 x 2-byte chars) */
    CHECK_EQ_INT(dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"\xc3\xa9\xc3\xa9\xc3\xa9"
                     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}",
                     &req, &err),
                 0);
    CHECK_EQ_INT(req.text_len, 16);
    pl_wire_req_free(&req);

    /* escapes in text are decoded */
    CHECK_EQ_INT(
        dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"a\\\"b\\n\\u00e9\"}", &req, &err), 0);
    CHECK(req.text_len == 6 && memcmp(req.text, "a\"b\n\xc3\xa9", 6) == 0);
    pl_wire_req_free(&req);

    /* a cid of exactly 128 bytes */
    char f[400], cid[PL_CID_MAX + 1];
    memset(cid, 'c', PL_CID_MAX);
    cid[PL_CID_MAX] = '\0';
    snprintf(f, sizeof f, "{\"type\":\"message\",\"room\":\"r\",\"text\":\"t\",\"cid\":\"%s\"}",
             cid);
    CHECK_EQ_INT(dec(f, &req, &err), 0);
    CHECK_EQ_INT(req.cid_len, PL_CID_MAX);
    pl_wire_req_free(&req);
}

static void decode_ping_and_authenticate(void)
{
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec("{\"type\":\"ping\"}", &req, &err), 0);
    CHECK_EQ_INT(req.type, PL_REQ_PING);
    pl_wire_req_free(&req);
    CHECK_EQ_INT(dec(" {\"type\" : \"ping\", \"extra\": [1,2,{}]} ", &req, &err), 0);
    CHECK_EQ_INT(req.type, PL_REQ_PING);
    pl_wire_req_free(&req);

    CHECK_EQ_INT(dec("{\"type\":\"authenticate\",\"token\":\"a.b.c\"}", &req, &err), 0);
    CHECK_EQ_INT(req.type, PL_REQ_AUTHENTICATE);
    CHECK(req.token && req.token_len == 5 && strcmp(req.token, "a.b.c") == 0);
    pl_wire_req_free(&req);
}

static void decode_respects_len(void)
{
    /* Only p[0..len) is the frame; bytes after it are not part of it. */
    const char *s = "{\"type\":\"ping\"}GARBAGE";
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(pl_wire_decode(&arena, s, 15, &LIM, &req, &err), 0);
    CHECK_EQ_INT(req.type, PL_REQ_PING);
    pl_wire_req_free(&req);
    CHECK_EQ_INT(pl_wire_decode(&arena, s, 14, &LIM, &req, &err), -1);
    CHECK_EQ_INT(err.code, PL_ERR_BAD_JSON);
    pl_wire_req_free(&req);
}

/* ---- bad frames ---- */

static void bad_json(void)
{
    CHECK(expect_err("", PL_ERR_BAD_JSON));
    CHECK(expect_err("{", PL_ERR_BAD_JSON));
    CHECK(expect_err("{\"type\":\"ping\"", PL_ERR_BAD_JSON));
    CHECK(expect_err("not json", PL_ERR_BAD_JSON));
    CHECK(expect_err("[{\"type\":\"ping\"}]", PL_ERR_BAD_JSON));
    CHECK(expect_err("\"ping\"", PL_ERR_BAD_JSON));
    CHECK(expect_err("42", PL_ERR_BAD_JSON));
    CHECK(expect_err("null", PL_ERR_BAD_JSON));
    CHECK(expect_err("{}", PL_ERR_BAD_JSON));                  /* missing type */
    CHECK(expect_err("{\"rooms\":[\"a\"]}", PL_ERR_BAD_JSON)); /* missing type */
    CHECK(expect_err("{\"type\":1}", PL_ERR_BAD_JSON));        /* non-string type */
    CHECK(expect_err("{\"type\":null}", PL_ERR_BAD_JSON));
    CHECK(expect_err("{\"type\":[\"ping\"]}", PL_ERR_BAD_JSON));
    CHECK(expect_err("{\"Type\":\"ping\"}", PL_ERR_BAD_JSON)); /* keys are case-sensitive */
    /* one JSON value per frame: anything but whitespace after it is refused */
    CHECK(expect_err("{\"type\":\"ping\"} x", PL_ERR_BAD_JSON));
    CHECK(expect_err("{\"type\":\"ping\"}{\"type\":\"ping\"}", PL_ERR_BAD_JSON));
    CHECK(expect_err("{\"type\":\"ping\"},", PL_ERR_BAD_JSON));
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec("{\"type\":\"ping\"} \r\n\t", &req, &err), 0); /* trailing whitespace */
    pl_wire_req_free(&req);
}

static void unknown_type(void)
{
    CHECK(expect_err("{\"type\":\"pong\"}", PL_ERR_UNKNOWN_TYPE));
    CHECK(expect_err("{\"type\":\"\"}", PL_ERR_UNKNOWN_TYPE));
    CHECK(expect_err("{\"type\":\"PING\"}", PL_ERR_UNKNOWN_TYPE));
    CHECK(expect_err("{\"type\":\"subscribed\"}", PL_ERR_UNKNOWN_TYPE));
    CHECK(expect_err("{\"type\":\"messages\",\"room\":\"r\",\"text\":\"t\"}", PL_ERR_UNKNOWN_TYPE));
}

static void bad_rooms(void)
{
    const char *types[] = {"subscribe", "unsubscribe"};
    for (int i = 0; i < 2; i++) {
        char f[512];
#define RF(rooms) (snprintf(f, sizeof f, "{\"type\":\"%s\",\"rooms\":%s}", types[i], rooms), f)
        CHECK(expect_err(RF("\"r1\""), PL_ERR_BAD_REQUEST)); /* not an array */
        CHECK(expect_err(RF("{\"r1\":1}"), PL_ERR_BAD_REQUEST));
        CHECK(expect_err(RF("null"), PL_ERR_BAD_REQUEST));
        CHECK(expect_err(RF("[]"), PL_ERR_BAD_REQUEST)); /* empty */
        CHECK(expect_err(RF("[\"ok\",\"bad id\"]"), PL_ERR_BAD_REQUEST));
        CHECK(expect_err(RF("[\"ok\",\"bad/id\"]"), PL_ERR_BAD_REQUEST));
        CHECK(expect_err(RF("[\"\"]"), PL_ERR_BAD_REQUEST));
        CHECK(expect_err(RF("[\"r\\u00e9\"]"), PL_ERR_BAD_REQUEST));
        CHECK(expect_err(RF("[\"ok\",7]"), PL_ERR_BAD_REQUEST)); /* non-string */
        CHECK(expect_err(RF("[[\"ok\"]]"), PL_ERR_BAD_REQUEST));
        CHECK(expect_err(RF("[null]"), PL_ERR_BAD_REQUEST));
        char r129[130];
        memset(r129, 'r', 129);
        r129[129] = '\0';
        char arr[200];
        snprintf(arr, sizeof arr, "[\"%s\"]", r129);
        CHECK(expect_err(RF(arr), PL_ERR_BAD_REQUEST)); /* 129 bytes */
        r129[128] = '\0';
        snprintf(arr, sizeof arr, "[\"%s\"]", r129);
        {
            pl_req_t req;
            pl_wire_err_t err;
            CHECK_EQ_INT(dec(RF(arr), &req, &err), 0); /* 128 is fine */
            pl_wire_req_free(&req);
        }
        CHECK(expect_err(RF("[\"a\",\"b\",\"c\",\"d\"]"), PL_ERR_TOO_LARGE)); /* too many */
        snprintf(f, sizeof f, "{\"type\":\"%s\"}", types[i]);
        CHECK(expect_err(f, PL_ERR_BAD_REQUEST)); /* missing rooms */
#undef RF
    }
}

static void bad_message(void)
{
    CHECK(expect_err("{\"type\":\"message\",\"text\":\"hi\"}", PL_ERR_BAD_REQUEST)); /* no room */
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r1\"}", PL_ERR_BAD_REQUEST)); /* no text */
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"\"}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r1\",\"text\":5}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r1\",\"text\":null}", PL_ERR_BAD_REQUEST));
    CHECK(
        expect_err("{\"type\":\"message\",\"room\":\"r1\",\"text\":[\"a\"]}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"message\",\"room\":1,\"text\":\"hi\"}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"\",\"text\":\"hi\"}", PL_ERR_BAD_REQUEST));
    CHECK(
        expect_err("{\"type\":\"message\",\"room\":\"a b\",\"text\":\"hi\"}", PL_ERR_BAD_REQUEST));
    CHECK(
        expect_err("{\"type\":\"message\",\"room\":[\"r1\"],\"text\":\"hi\"}", PL_ERR_BAD_REQUEST));
    /* 17 bytes > max_text 16 */
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"12345678901234567\"}",
                     PL_ERR_TOO_LARGE));
    /* 9 two-byte characters = 18 bytes: the limit is in bytes, not characters */
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}",
                     PL_ERR_TOO_LARGE));
}

static void bad_cid(void)
{
    CHECK(expect_err("{\"type\":\"ping\",\"cid\":5}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"ping\",\"cid\":null}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r\",\"text\":\"t\",\"cid\":{}}",
                     PL_ERR_BAD_REQUEST));
    char f[400], cid[PL_CID_MAX + 2];
    memset(cid, 'c', PL_CID_MAX + 1);
    cid[PL_CID_MAX + 1] = '\0';
    snprintf(f, sizeof f, "{\"type\":\"message\",\"room\":\"r\",\"text\":\"t\",\"cid\":\"%s\"}",
             cid);
    CHECK(expect_err(f, PL_ERR_BAD_REQUEST));
    /* a bad cid is not echoed */
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec(f, &req, &err), -1);
    CHECK(req.cid == NULL);
    pl_wire_req_free(&req);
}

static void bad_authenticate(void)
{
    CHECK(expect_err("{\"type\":\"authenticate\"}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"authenticate\",\"token\":7}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"authenticate\",\"token\":\"\"}", PL_ERR_BAD_REQUEST));
}

static void cid_kept_on_errors(void)
{
    const char *frames[] = {
        "{\"type\":\"message\",\"room\":\"r1\",\"cid\":\"x-9\"}",
        "{\"type\":\"message\",\"room\":\"r1\",\"text\":\"12345678901234567\",\"cid\":\"x-9\"}",
        "{\"cid\":\"x-9\",\"type\":\"subscribe\",\"rooms\":[]}",
        "{\"type\":\"unsubscribe\",\"rooms\":[\"a\",\"b\",\"c\",\"d\"],\"cid\":\"x-9\"}",
        "{\"type\":\"nope\",\"cid\":\"x-9\"}",
        "{\"cid\":\"x-9\"}",
        "{\"type\":\"authenticate\",\"cid\":\"x-9\"}",
    };
    for (size_t i = 0; i < sizeof frames / sizeof *frames; i++) {
        pl_req_t req;
        pl_wire_err_t err;
        CHECK_EQ_INT(dec(frames[i], &req, &err), -1);
        CHECK(err.code != PL_ERR_NONE);
        CHECK(req.cid && req.cid_len == 3 && strcmp(req.cid, "x-9") == 0);
        pl_wire_req_free(&req);
    }
    /* not an object: nothing to echo */
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec("[{\"cid\":\"x-9\"}]", &req, &err), -1);
    CHECK(req.cid == NULL);
    pl_wire_req_free(&req);
}

/* JSON strings may hold U+0000 (cJSON keeps it). Measuring them with strlen
 * would silently change what the client sent: a room id "r1\u0000zz" (not a
 * valid id: NUL is not in [A-Za-z0-9_.:-]) taken as room "r1", the text
 * "ab\u0000cd" delivered as "ab". */
static void embedded_nul_not_truncated(void)
{
    CHECK(expect_err("{\"type\":\"subscribe\",\"rooms\":[\"r1\\u0000zz\"]}", PL_ERR_BAD_REQUEST));
    CHECK(expect_err("{\"type\":\"message\",\"room\":\"r1\\u0000zz\",\"text\":\"hi\"}",
                     PL_ERR_BAD_REQUEST));
    pl_req_t req;
    pl_wire_err_t err;
    int rc = dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"ab\\u0000cd\"}", &req, &err);
    /* either refused, or accepted whole (5 bytes) - never cut to "ab" */
    CHECK(rc != 0 || req.text_len == 5);
    pl_wire_req_free(&req);

    /* refused with the (valid) cid echoed */
    rc = dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"ab\\u0000cd\",\"cid\":\"k-1\"}",
             &req, &err);
    if (rc != 0) {
        CHECK_EQ_INT(err.code, PL_ERR_BAD_REQUEST);
        CHECK(req.cid && req.cid_len == 3 && memcmp(req.cid, "k-1", 3) == 0);
    }
    pl_wire_req_free(&req);

    /* an escaped backslash followed by "u0000" is not a NUL: accepted as is */
    CHECK_EQ_INT(dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"a\\\\u0000\"}", &req, &err),
                 0);
    CHECK(req.text_len == 7 && memcmp(req.text, "a\\u0000", 7) == 0);
    pl_wire_req_free(&req);
}

/* A cid holding U+0000 is not "usable": echoing its first part ("c") would
 * attribute the error to a different cid, possibly another of the client's
 * pending requests. It must be echoed whole or not at all. */
static void nul_cid_not_echoed_cut(void)
{
    pl_req_t req;
    pl_wire_err_t err;
    int rc = dec("{\"type\":\"ping\",\"cid\":\"c\\u0000d\"}", &req, &err);
    CHECK_EQ_INT(rc, -1);
    CHECK(req.cid == NULL || req.cid_len == 3);
    pl_wire_req_free(&req);
}

static void err_names(void)
{
    CHECK_STR(pl_wire_err_name(PL_ERR_BAD_JSON), "bad_json");
    CHECK_STR(pl_wire_err_name(PL_ERR_UNKNOWN_TYPE), "unknown_type");
    CHECK_STR(pl_wire_err_name(PL_ERR_BAD_REQUEST), "bad_request");
    CHECK_STR(pl_wire_err_name(PL_ERR_NOT_SUBSCRIBED), "not_subscribed");
    CHECK_STR(pl_wire_err_name(PL_ERR_TOO_LARGE), "too_large");
    CHECK_STR(pl_wire_err_name(PL_ERR_UNAUTHORIZED), "unauthorized");
    CHECK_STR(pl_wire_err_name(PL_ERR_UNAVAILABLE), "unavailable");
}

/* ---- encoders ---- */

/* Parse `b` as one JSON object whose first key is "type" == type. */
static cJSON *parse_frame(const pl_buf_t *b, const char *type)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "{\"type\":\"%s\"", type);
    CHECK(b->len == strlen(b->data)); /* no stray NULs, len is right */
    CHECK(strncmp(b->data, prefix, strlen(prefix)) == 0);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(b->data, &end, 1); /* whole buffer, nothing after */
    CHECK(j != NULL && cJSON_IsObject(j));
    if (j) {
        CHECK(j->child && strcmp(j->child->string, "type") == 0);
        CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "type")->valuestring, type);
    }
    return j;
}

static const char *jstr(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jcount(const cJSON *j)
{
    return cJSON_GetArraySize(j);
}

static void enc_authenticated(void)
{
    pl_buf_t b = {0};
    pl_wire_authenticated(&b, "al\"ice\\", "srv-1", "12345", 0);
    cJSON *j = parse_frame(&b, "authenticated");
    if (j) {
        CHECK_STR(jstr(j, "user"), "al\"ice\\");
        CHECK_STR(jstr(j, "server"), "srv-1");
        CHECK_STR(jstr(j, "session"), "12345");
        CHECK_EQ_INT(jcount(j), 4);
    }
    cJSON_Delete(j);
    pl_buf_free(&b);
}

static void enc_room_reply(void)
{
    pl_buf_t b = {0};
    pl_wire_room_reply(&b, "subscribed", "r1xyz", 2); /* only room_len bytes */
    cJSON *j = parse_frame(&b, "subscribed");
    if (j) {
        CHECK_STR(jstr(j, "room"), "r1");
        CHECK_EQ_INT(jcount(j), 2);
    }
    cJSON_Delete(j);
    pl_buf_reset(&b);
    pl_wire_room_reply(&b, "unsubscribed", "a.b", 3);
    j = parse_frame(&b, "unsubscribed");
    if (j) CHECK_STR(jstr(j, "room"), "a.b");
    cJSON_Delete(j);
    pl_buf_free(&b);
}

static void enc_error(void)
{
    pl_buf_t b = {0};
    pl_wire_error(&b, PL_ERR_NOT_SUBSCRIBED, "not \"subscribed\"\n", "c-1xx", 3);
    cJSON *j = parse_frame(&b, "error");
    if (j) {
        CHECK_STR(jstr(j, "code"), "not_subscribed");
        CHECK_STR(jstr(j, "message"), "not \"subscribed\"\n");
        CHECK_STR(jstr(j, "cid"), "c-1");
        CHECK_EQ_INT(jcount(j), 4);
    }
    cJSON_Delete(j);
    pl_buf_reset(&b);
    pl_wire_error(&b, PL_ERR_BAD_JSON, "frame is not valid JSON", NULL, 0);
    j = parse_frame(&b, "error");
    if (j) {
        CHECK_STR(jstr(j, "code"), "bad_json");
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "cid") == NULL);
        CHECK(strstr(b.data, "cid") == NULL);
        CHECK_EQ_INT(jcount(j), 3);
    }
    cJSON_Delete(j);
    pl_buf_reset(&b);
    pl_wire_error_room(&b, PL_ERR_FORBIDDEN, "r1: not a member of this room", NULL, 0, "r1");
    j = parse_frame(&b, "error");
    if (j) {
        CHECK_STR(jstr(j, "code"), "forbidden");
        CHECK_STR(jstr(j, "room"), "r1");
        CHECK_EQ_INT(jcount(j), 4);
    }
    cJSON_Delete(j);
    pl_buf_free(&b);
}

/* A whole room message as the live path builds it: Redis's head (seq 7 here) + our tail. */
static void message(pl_buf_t *b, const pl_req_t *req, uint64_t id, const char *from, int64_t ts)
{
    pl_wire_message_head(b, 7);
    pl_wire_message_tail(b, req->room, req->room_len, id, from, req->text, req->text_len, ts,
                         req->cid, req->cid_len);
}

static void message_head_only(pl_buf_t *b)
{
    pl_wire_message_head(b, 1234567);
    CHECK_STR(b->data, "{\"type\":\"message\",\"seq\":1234567,");
    CHECK_EQ_INT(pl_wire_payload_seq(b->data, b->len), 1234567);
    CHECK_EQ_INT(pl_wire_payload_seq("{\"type\":\"pong\"}", 15), 0);
    CHECK_EQ_INT(pl_wire_payload_seq("{\"type\":\"message\",\"seq\":", 24), 0);
}

/* The ts of a message frame, found from the end: a text or cid quoting `,"ts":` does not fool
 * it (inside a JSON string the quote is escaped). */
static void payload_ts(void)
{
    pl_buf_t b = {0};
    pl_wire_message_head(&b, 3);
    pl_wire_message_tail(&b, "r", 1, 9, "u", ",\"ts\":5", 7, 1700000000123LL, ",\"ts\":6", 7);
    CHECK_EQ_INT(pl_wire_payload_ts(b.data, b.len), 1700000000123LL);
    pl_buf_reset(&b);
    pl_wire_message_head(&b, 3);
    pl_wire_message_tail(&b, "r", 1, 9, "u", "hi", 2, 42, NULL, 0);
    CHECK_EQ_INT(pl_wire_payload_ts(b.data, b.len), 42);
    const char *presence = "{\"type\":\"presence\",\"ts\":5}";
    CHECK_EQ_INT(pl_wire_payload_ts(presence, strlen(presence)), 0);
    pl_buf_free(&b);
}

static void enc_message(void)
{
    /* decode a client frame full of characters that need escaping, re-encode it */
    static const pl_wire_limits_t big = {.max_text = 1000, .max_rooms = 10};
    const char *in = "{\"type\":\"message\",\"room\":\"r1\",\"cid\":\"q\\\"\\\\\\u0001\","
                     "\"text\":\"say \\\"hi\\\" \\\\ \\b\\f\\n\\r\\t\\u0002x\\u001f\\u007f "
                     "\\u00e9\\u20ac\\ud83d\\ude00 /\"}";
    pl_req_t req;
    pl_wire_err_t err;
    CHECK_EQ_INT(pl_wire_decode(&arena, in, strlen(in), &big, &req, &err), 0);
    pl_buf_t b = {0};
    const char *from = "b\"o\\b\x01\xc3\xa9";
    message(&b, &req, 18446744073709551615ull, from, 1700000000123LL);
    cJSON *j = parse_frame(&b, "message");
    if (j) {
        CHECK_STR(jstr(j, "room"), "r1");
        CHECK_STR(jstr(j, "id"), "18446744073709551615"); /* decimal string, unsigned */
        CHECK_STR(jstr(j, "from"), from);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
        CHECK(cJSON_IsString(text));
        /* compare the decoded text with what decode produced, byte for byte */
        if (cJSON_IsString(text)) {
            CHECK(memcmp(text->valuestring, req.text, req.text_len) == 0);
            CHECK(text->valuestring[req.text_len] == '\0');
        }
        CHECK_STR(jstr(j, "cid"), "q\"\\\x01");
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
        CHECK(cJSON_IsNumber(ts) && ts->valuedouble == 1700000000123.0);
        CHECK(strstr(b.data, ",\"ts\":1700000000123") != NULL); /* an integer, not 1.7e12 */
        CHECK_EQ_INT(jcount(j), 8);
    }
    /* raw control bytes never appear in the output */
    for (size_t i = 0; i < b.len; i++)
        CHECK((unsigned char)b.data[i] >= 0x20);
    CHECK(strstr(b.data, "\\u20ac") == NULL); /* UTF-8 passes through unescaped */
    CHECK(strstr(b.data, "\xe2\x82\xac") != NULL);
    cJSON_Delete(j);
    pl_wire_req_free(&req);

    /* without cid: the member is absent */
    in = "{\"type\":\"message\",\"room\":\"lobby\",\"text\":\"hello\"}";
    CHECK_EQ_INT(pl_wire_decode(&arena, in, strlen(in), &big, &req, &err), 0);
    pl_buf_reset(&b);
    message(&b, &req, 42, "alice", 5);
    j = parse_frame(&b, "message");
    if (j) {
        CHECK(cJSON_GetObjectItemCaseSensitive(j, "cid") == NULL);
        CHECK(strstr(b.data, "cid") == NULL);
        CHECK_STR(jstr(j, "id"), "42");
        CHECK_STR(jstr(j, "text"), "hello");
        CHECK_EQ_INT(jcount(j), 7);
    }
    CHECK_STR(b.data,
              "{\"type\":\"message\",\"seq\":7,\"room\":\"lobby\",\"id\":\"42\",\"from\":\"alice\","
              "\"text\":\"hello\",\"ts\":5}");
    cJSON_Delete(j);
    pl_wire_req_free(&req);
    pl_buf_free(&b);
}

/* Room messages and their seq, acks, subscribed, since. */
static void enc_seq_frames(void)
{
    pl_buf_t b = {0};
    message_head_only(&b);
    pl_buf_reset(&b);
    pl_wire_ack(&b, "c-1", 3, 99, 12);
    CHECK_STR(b.data, "{\"type\":\"ack\",\"cid\":\"c-1\",\"id\":\"99\",\"seq\":12}");
    pl_buf_reset(&b);
    pl_wire_ack(&b, NULL, 0, 99, 12);
    CHECK_STR(b.data, "{\"type\":\"ack\",\"id\":\"99\",\"seq\":12}");
    pl_buf_reset(&b);
    pl_wire_subscribed(&b, "r1", 2, 41, -1, 4, 1);
    CHECK_STR(b.data, "{\"type\":\"subscribed\",\"room\":\"r1\",\"seq\":41,\"recovered\":4,"
                      "\"truncated\":true}");
    pl_buf_reset(&b);
    pl_wire_subscribed(&b, "r1", 2, 0, -1, -1, 0);
    CHECK_STR(b.data, "{\"type\":\"subscribed\",\"room\":\"r1\",\"seq\":0}");
    pl_buf_reset(&b);
    pl_wire_subscribed(&b, "r1", 2, 50, 42, -1, 0);
    CHECK_STR(b.data,
              "{\"type\":\"subscribed\",\"room\":\"r1\",\"seq\":50,\"read\":42,\"unread\":8}");
    pl_buf_free(&b);
}

static void since_decoding(void)
{
    pl_wire_limits_t lim = {100, 10};
    pl_req_t req;
    pl_wire_err_t err;
    const char *ok = "{\"type\":\"subscribe\",\"rooms\":[\"a\",\"b\"],\"since\":{\"a\":37}}";
    CHECK_EQ_INT(pl_wire_decode(&arena, ok, strlen(ok), &lim, &req, &err), 0);
    CHECK_EQ_INT(pl_wire_since(&req, "a"), 37);
    CHECK_EQ_INT(pl_wire_since(&req, "b"), -1);
    pl_wire_req_free(&req);
    const char *bad[] = {
        "{\"type\":\"subscribe\",\"rooms\":[\"a\"],\"since\":[1]}",
        "{\"type\":\"subscribe\",\"rooms\":[\"a\"],\"since\":{\"a\":-1}}",
        "{\"type\":\"subscribe\",\"rooms\":[\"a\"],\"since\":{\"a\":1.5}}",
        "{\"type\":\"subscribe\",\"rooms\":[\"a\"],\"since\":{\"a\":\"3\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ_INT(pl_wire_decode(&arena, bad[i], strlen(bad[i]), &lim, &req, &err), -1);
        CHECK_EQ_INT(err.code, PL_ERR_BAD_REQUEST);
        pl_wire_req_free(&req);
    }
}

/* typing_start/typing_stop/read and direct messages. */
static void chat_frames(void)
{
    pl_wire_limits_t lim = {100, 10};
    pl_req_t req;
    pl_wire_err_t err;
    struct {
        const char *in;
        int rc;
        int type;
        pl_err_t code;
    } cases[] = {
        {"{\"type\":\"typing_start\",\"room\":\"r1\"}", 0, PL_REQ_TYPING_START, 0},
        {"{\"type\":\"typing_stop\",\"room\":\"r1\"}", 0, PL_REQ_TYPING_STOP, 0},
        {"{\"type\":\"typing_start\"}", -1, 0, PL_ERR_BAD_REQUEST},
        {"{\"type\":\"typing_stop\",\"room\":\"bad room\"}", -1, 0, PL_ERR_BAD_REQUEST},
        {"{\"type\":\"read\",\"room\":\"r1\",\"seq\":42}", 0, PL_REQ_READ, 0},
        {"{\"type\":\"read\",\"room\":\"r1\",\"seq\":-1}", -1, 0, PL_ERR_BAD_REQUEST},
        {"{\"type\":\"read\",\"room\":\"r1\",\"seq\":1.5}", -1, 0, PL_ERR_BAD_REQUEST},
        {"{\"type\":\"read\",\"room\":\"r1\"}", -1, 0, PL_ERR_BAD_REQUEST},
        {"{\"type\":\"message\",\"to\":\"bob\",\"text\":\"hi\"}", 0, PL_REQ_MESSAGE, 0},
        {"{\"type\":\"message\",\"to\":\"\",\"text\":\"hi\"}", -1, 0, PL_ERR_BAD_REQUEST},
        {"{\"type\":\"message\",\"to\":\"a\\nb\",\"text\":\"hi\"}", -1, 0, PL_ERR_BAD_REQUEST},
        {"{\"type\":\"message\",\"to\":\"bob\",\"room\":\"r1\",\"text\":\"hi\"}", -1, 0,
         PL_ERR_BAD_REQUEST},
        {"{\"type\":\"message\",\"to\":5,\"text\":\"hi\"}", -1, 0, PL_ERR_BAD_REQUEST},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = pl_wire_decode(&arena, cases[i].in, strlen(cases[i].in), &lim, &req, &err);
        CHECK_EQ_INT(rc, cases[i].rc);
        if (rc == 0)
            CHECK_EQ_INT(req.type, cases[i].type);
        else
            CHECK_EQ_INT(err.code, cases[i].code);
        if (rc == 0 && req.type == PL_REQ_READ) CHECK_EQ_INT(req.seq, 42);
        if (rc == 0 && req.type == PL_REQ_MESSAGE)
            CHECK(req.to && strcmp(req.to, "bob") == 0 && !req.room);
        pl_wire_req_free(&req);
    }
    pl_buf_t b = {0};
    pl_wire_message_head(&b, 3);
    pl_wire_dm_tail(&b, "dm:ab", 5, 9, "alice", "bob", "hi", 2, 7, "c", 1);
    CHECK_STR(b.data, "{\"type\":\"message\",\"seq\":3,\"room\":\"dm:ab\",\"id\":\"9\",\"from\":"
                      "\"alice\",\"to\":\"bob\",\"text\":\"hi\",\"ts\":7,\"cid\":\"c\"}");
    pl_buf_free(&b);
    CHECK(pl_user_id_valid("alice@example.com", 17));
    CHECK(!pl_user_id_valid("", 0));
    CHECK(!pl_user_id_valid("a\x01", 2));
}

static void enc_notice(void)
{
    pl_buf_t b = {0};
    pl_wire_notice(&b, "shutdown", "server shutting down");
    CHECK_STR(
        b.data,
        "{\"type\":\"server_notice\",\"code\":\"shutdown\",\"message\":\"server shutting down\"}");
    cJSON *j = parse_frame(&b, "server_notice");
    cJSON_Delete(j);
    pl_buf_free(&b);
}

static void enc_appends(void)
{
    /* encoders append to what is already in the buffer */
    pl_buf_t b = {0};
    pl_buf_adds(&b, "X");
    pl_wire_notice(&b, "a", "b");
    CHECK(b.data[0] == 'X' && strncmp(b.data + 1, "{\"type\":\"server_notice\"", 23) == 0);
    pl_buf_free(&b);
}

/* With pl_wire_init's hooks, requests are parsed into a per-thread arena: two requests alive
 * at once, freed in either order, a tree too big for the arena (malloc continues it) and a
 * failed parse all keep their data intact; valgrind sees no leak and no invalid free. */
static void arena_use(void)
{
    pl_req_t a, b;
    pl_wire_err_t err;
    CHECK_EQ_INT(dec("{\"type\":\"message\",\"room\":\"r1\",\"text\":\"one\"}", &a, &err), 0);
    CHECK_EQ_INT(dec("{\"type\":\"message\",\"room\":\"r2\",\"text\":\"two\"}", &b, &err), 0);
    pl_wire_req_free(&a);
    CHECK(b.text && memcmp(b.text, "two", 3) == 0 && memcmp(b.room, "r2", 2) == 0);
    pl_wire_req_free(&b);

    /* ~1,000 rooms: a tree of ~50 KiB, past the 16 KiB arena. */
    static const pl_wire_limits_t many = {.max_text = 16, .max_rooms = 2000};
    pl_buf_t big = {0};
    pl_buf_adds(&big, "{\"type\":\"subscribe\",\"rooms\":[");
    for (int i = 0; i < 1000; i++) {
        if (i) pl_buf_add(&big, ",", 1);
        pl_buf_adds(&big, "\"room-");
        pl_buf_int(&big, i);
        pl_buf_add(&big, "\"", 1);
    }
    pl_buf_adds(&big, "]}");
    pl_req_t r;
    CHECK_EQ_INT(pl_wire_decode(&arena, big.data, big.len, &many, &r, &err), 0);
    CHECK_EQ_INT(r.nrooms, 1000);
    int bad = 0;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, r.rooms)
    {
        char want[16];
        snprintf(want, sizeof want, "room-%zu", i++);
        if (!cJSON_IsString(e) || strcmp(e->valuestring, want) != 0) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(i, 1000);
    pl_wire_req_free(&r);
    pl_buf_free(&big);

    CHECK(dec("{\"type\":\"message\",\"room\":", &a, &err) != 0); /* cut short */
    pl_wire_req_free(&a);
    CHECK_EQ_INT(dec("{\"type\":\"ping\"}", &a, &err), 0);
    CHECK_EQ_INT(a.type, PL_REQ_PING);
    pl_wire_req_free(&a);
}

int main(void)
{
    for (int hooks = 0; hooks < 2; hooks++) {
        if (hooks) {
            pl_wire_init(); /* again, through the arena */
            RUN(arena_use);
        }
        RUN(decode_subscribe);
        RUN(decode_unsubscribe);
        RUN(decode_message);
        RUN(decode_ping_and_authenticate);
        RUN(decode_respects_len);
        RUN(bad_json);
        RUN(unknown_type);
        RUN(bad_rooms);
        RUN(bad_message);
        RUN(bad_cid);
        RUN(bad_authenticate);
        RUN(cid_kept_on_errors);
        RUN(embedded_nul_not_truncated);
        RUN(nul_cid_not_echoed_cut);
    }
    RUN(err_names);
    RUN(enc_authenticated);
    RUN(enc_room_reply);
    RUN(enc_error);
    RUN(enc_message);
    RUN(payload_ts);
    RUN(enc_seq_frames);
    RUN(since_decoding);
    RUN(chat_frames);
    RUN(enc_notice);
    RUN(enc_appends);
    UNIT_EXIT();
}
