/*
 * wire: protocol v1 (docs/protocol.md) as data. Decodes one client text
 * frame into a validated request and encodes every server frame.
 *
 * Pure functions: no I/O, no connection state, so every rule of the protocol
 * is unit-tested here. A decoded request borrows its strings from the parsed
 * JSON tree it owns; pl_wire_req_free releases it.
 */
#ifndef PARLEY_APP_WIRE_H
#define PARLEY_APP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "parley/base/buf.h"

struct cJSON;

/** Longest user id, in bytes. */
#define PL_WIRE_ID_MAX 128

/** Longest client message id (`cid`), in bytes. */
#define PL_CID_MAX 128

/** Client frame types. */
typedef enum {
    PL_REQ_AUTHENTICATE,
    PL_REQ_SUBSCRIBE,
    PL_REQ_UNSUBSCRIBE,
    PL_REQ_MESSAGE,
    PL_REQ_PING,
    PL_REQ_TYPING_START,
    PL_REQ_TYPING_STOP,
    PL_REQ_READ,
} pl_req_type_t;

/** Error codes of `error` frames. */
typedef enum {
    PL_ERR_NONE = 0,
    PL_ERR_BAD_JSON,
    PL_ERR_UNKNOWN_TYPE,
    PL_ERR_BAD_REQUEST,
    PL_ERR_NOT_SUBSCRIBED,
    PL_ERR_TOO_LARGE,
    PL_ERR_UNAUTHORIZED,
    PL_ERR_UNAVAILABLE,
    PL_ERR_FORBIDDEN,
    PL_ERR_NOT_STORED,   /**< accepted (maybe delivered) but not stored: resend with the same cid */
    PL_ERR_RATE_LIMITED, /**< over the connection's rate (app/limits.h): not done; retry later */
    PL_ERR_COUNT         /**< how many codes there are (not a code) */
} pl_err_t;

/** Bytes of JSON tree one arena holds before parsing continues on malloc. */
#define PL_WIRE_ARENA_SIZE 16384

/** Where requests are parsed: one per loop (the application's per-loop state). Zero it. */
typedef struct pl_wire_arena {
    _Alignas(16) unsigned char mem[PL_WIRE_ARENA_SIZE];
    size_t used;
    int armed; /**< in pl_wire_decode's parse */
    int live;  /**< requests decoded into it and not yet freed */
} pl_wire_arena_t;

/** Limits a decoded request is checked against. */
typedef struct {
    size_t max_text;  /**< longest `text`, bytes */
    size_t max_rooms; /**< most rooms in one subscribe */
} pl_wire_limits_t;

/** A validated client request. Strings are NUL-terminated and live as long as the request. */
typedef struct {
    pl_req_type_t type;
    struct cJSON *root;
    pl_wire_arena_t *arena;
    const char *cid; /**< NULL if absent */
    size_t cid_len;
    const char *token; /**< authenticate */
    size_t token_len;
    const char *room; /**< message, typing_*, read */
    size_t room_len;
    const char *to; /**< message: a direct message to this user (room is then NULL) */
    size_t to_len;
    int64_t seq;      /**< read */
    const char *text; /**< message */
    size_t text_len;
    const struct cJSON *rooms; /**< subscribe/unsubscribe: array of valid room id strings */
    size_t nrooms;
    const struct cJSON *since; /**< subscribe: object of room -> last seq seen, or NULL */
} pl_req_t;

/** Why a frame was refused: the code and a human message for the error frame. */
typedef struct {
    pl_err_t code;
    const char *message;
} pl_wire_err_t;

/**
 * Decode `p[0..len)` into arena `a`. On success returns 0 and fills `req` (free it with
 * pl_wire_req_free). On failure returns -1 and fills `err`; `req->cid` is still set when the
 * frame was an object with a usable cid, so the error can echo it, and the caller must still
 * call pl_wire_req_free.
 */
int pl_wire_decode(pl_wire_arena_t *a, const char *p, size_t len, const pl_wire_limits_t *lim,
                   pl_req_t *req, pl_wire_err_t *err);

/** The `since` seq a subscribe gave for `room`, or -1 if none. */
int64_t pl_wire_since(const pl_req_t *req, const char *room);

/** 1 if `s[0..n)` is a valid user id: 1-128 bytes, no control characters. */
int pl_user_id_valid(const char *s, size_t n);

/** Install cJSON's allocation hooks that let pl_wire_decode parse into an arena.
 *  Call once, before any thread uses cJSON; without it decoding simply mallocs. */
void pl_wire_init(void);

/** Release what pl_wire_decode allocated. Safe on a zeroed request. */
void pl_wire_req_free(pl_req_t *req);

/** The wire name of an error code ("bad_json", ...). */
const char *pl_wire_err_name(pl_err_t code);

/* Encoders: each appends one JSON object, `type` first, to `b`. */

/** {"type":"authenticated","user":..,"server":..,"session":..[,"exp":..]} (exp 0: left out) */
void pl_wire_authenticated(pl_buf_t *b, const char *user, const char *server, const char *session,
                           uint32_t exp);
/** {"type":<type>,"room":..} for "subscribed" / "unsubscribed". */
void pl_wire_room_reply(pl_buf_t *b, const char *type, const char *room, size_t room_len);
/** {"type":"error","code":..,"message":..[,"cid":..]} (cid omitted when NULL). */
void pl_wire_error(pl_buf_t *b, pl_err_t code, const char *message, const char *cid,
                   size_t cid_len);
/** The same with "room":.. last (room omitted when NULL): an error about one room of a
 *  subscribe, which may come after the frame's other rooms were answered. */
void pl_wire_error_room(pl_buf_t *b, pl_err_t code, const char *message, const char *cid,
                        size_t cid_len, const char *room);
/** {"type":"error","code":"rate_limited","message":..[,"cid":..],"retry_after_ms":N}: when the
 *  refused frame would pass. */
void pl_wire_rate_limited(pl_buf_t *b, const char *message, const char *cid, size_t cid_len,
                          uint32_t retry_after_ms);
/**
 * A room message is `{"type":"message","seq":<n>,` (the head, which Redis
 * writes when it assigns the seq) followed by the tail
 * `"room":..,"id":"<id>","from":..,"text":..,"ts":..[,"cid":..]}`.
 * Live and recovered copies are built from these two and are byte-identical.
 */
void pl_wire_message_head(pl_buf_t *b, int64_t seq);
/** The tail of a room message (see pl_wire_message_head); cid omitted when NULL. */
void pl_wire_message_tail(pl_buf_t *b, const char *room, size_t room_len, uint64_t id,
                          const char *from, const char *text, size_t text_len, int64_t ts_ms,
                          const char *cid, size_t cid_len);
/** The seq of a room message frame's JSON (its head), or 0 if it is not one. */
int64_t pl_wire_payload_seq(const char *p, size_t len);
/** The ts (unix ms) of a room or direct message frame's JSON, or 0 if it is not one. */
int64_t pl_wire_payload_ts(const char *p, size_t len);
/** {"type":"ack"[,"cid":..],"id":"<id>","seq":n} */
void pl_wire_ack(pl_buf_t *b, const char *cid, size_t cid_len, uint64_t id, int64_t seq);
/**
 * {"type":"subscribed","room":..,"seq":n[,"read":r,"unread":u][,"recovered":k][,"truncated":true]}
 * (seq < 0: omitted; read < 0: read and unread omitted; recovered < 0: omitted)
 */
void pl_wire_subscribed(pl_buf_t *b, const char *room, size_t room_len, int64_t seq, int64_t read,
                        long recovered, int truncated);
/** The tail of a direct message: like pl_wire_message_tail, with "to" after "from". */
void pl_wire_dm_tail(pl_buf_t *b, const char *room, size_t room_len, uint64_t id, const char *from,
                     const char *to, const char *text, size_t text_len, int64_t ts_ms,
                     const char *cid, size_t cid_len);
/** {"type":"server_notice","code":..,"message":..} */
void pl_wire_notice(pl_buf_t *b, const char *code, const char *message);

#endif
