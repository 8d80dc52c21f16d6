/*
 * ws: the server side of RFC 6455 that is not framing output: the opening
 * handshake's accept key, UTF-8 validation, and reading client frames.
 *
 * Client frames are parsed by wslay's frame API. A wslay_frame context costs
 * ~4.3 KB (its 4 KiB input buffer), far more than an idle connection may cost
 * (docs/performance.md), so contexts live in a per-shard pool, each in a
 * "part" with the rest of a message's reading state: a connection borrows a
 * part for the duration of a read and gives it back whenever it is between
 * whole messages with nothing buffered, which is almost always. Only a
 * connection caught in the middle of a frame or of a fragmented message keeps
 * one across reads; an idle one holds a NULL pointer.
 *
 * Ownership: the pool owns its idle parts; a pl_ws_in_t owns the part it has
 * borrowed (with its reassembly buffers) until pl_ws_in_free. One pool per
 * shard thread; nothing here is thread-safe.
 */
#ifndef PARLEY_PROTO_WS_H
#define PARLEY_PROTO_WS_H

#include <stddef.h>
#include <stdint.h>

#include "parley/base/buf.h"
#include "parley/proto/http.h"

struct wslay_frame_context;

/** Length of a Sec-WebSocket-Accept value, without NUL. */
#define PL_WS_ACCEPT_LEN 28

/** Compute Sec-WebSocket-Accept for a client's Sec-WebSocket-Key. Returns 0, or -1 on a bad key. */
int pl_ws_accept_key(const char *key, size_t len, char out[PL_WS_ACCEPT_LEN + 1]);

/** What pl_ws_handshake_check found wrong with an upgrade request, or PL_WS_HS_OK. */
typedef enum {
    PL_WS_HS_OK = 0,
    PL_WS_HS_NOT_UPGRADE, /**< not GET, or no "Upgrade: websocket": answer 400 */
    PL_WS_HS_VERSION,     /**< Sec-WebSocket-Version missing or not 13: answer 426 */
    PL_WS_HS_KEY,         /**< Sec-WebSocket-Key missing or not base64 of 16 bytes: answer 400 */
} pl_ws_hs_t;

/**
 * Check the opening handshake of a parsed upgrade request (RFC 6455 4.2.1): GET with
 * "Upgrade: websocket", Sec-WebSocket-Version 13 and a valid Sec-WebSocket-Key. On PL_WS_HS_OK
 * `accept` holds the Sec-WebSocket-Accept value to answer with. Pure: reads `h` only.
 */
pl_ws_hs_t pl_ws_handshake_check(const pl_http_t *h, char accept[PL_WS_ACCEPT_LEN + 1]);

/** 1 if `p[0..n)` is valid UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
int pl_utf8_valid(const uint8_t *p, size_t n);

/** A frame being read (ws.c): wslay's context and reassembly, from the shard's pool. */
typedef struct pl_ws_part pl_ws_part_t;

/**
 * Per-connection read state: one pointer, NULL between whole messages (an idle connection).
 * A read that ends inside a frame or a fragmented message takes a part from the shard's pool
 * until the message is whole. Zero-initialise.
 */
typedef struct {
    pl_ws_part_t *part;
} pl_ws_in_t;

/** A shard's pool of idle parts (each with its wslay frame context) and its feeding state. */
typedef struct {
    pl_ws_part_t **free;
    size_t nfree, cap;
    /* The read being fed (valid only inside pl_ws_feed). */
    const uint8_t *in;
    size_t in_len;
    pl_ws_part_t *cur;
} pl_ws_pool_t;

/**
 * Called for each complete client message: opcode PL_WS_TEXT / PL_WS_BINARY
 * (reassembled, unmasked) or a control frame (PL_WS_CLOSE, PL_WS_PING,
 * PL_WS_PONG). Returns 0 to go on, non-zero to stop reading (the connection
 * is closing).
 */
typedef int (*pl_ws_msg_cb)(void *ud, unsigned opcode, const uint8_t *p, size_t len);

/** Initialise an empty pool. */
void pl_ws_pool_init(pl_ws_pool_t *pool);
/** Free the pool's idle contexts. */
void pl_ws_pool_free(pl_ws_pool_t *pool);

/**
 * Feed bytes read from a client. Calls `cb` per complete message. Returns 0,
 * or a WebSocket close code the connection must be closed with: 1002
 * (protocol error), 1009 (message over `max_msg`), 1011 (out of memory).
 */
int pl_ws_feed(pl_ws_pool_t *pool, pl_ws_in_t *in, const uint8_t *data, size_t len, size_t max_msg,
               pl_ws_msg_cb cb, void *ud);

/** Release what `in` holds (a borrowed context is freed, not pooled: its state is unknown). */
void pl_ws_in_free(pl_ws_in_t *in);

#endif
