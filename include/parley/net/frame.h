/*
 * frame: outgoing bytes shared by reference across connections and threads.
 *
 * A server-to-client WebSocket frame is unmasked, so it is identical for
 * every recipient: it is built once (header + payload in one allocation) and
 * each recipient's output queue holds a reference. HTTP responses travel the
 * same way so a connection has one ordered output queue for everything.
 *
 * Ownership: pl_frame_* constructors return a frame holding one reference,
 * owned by the caller. Every holder releases its reference with
 * pl_frame_unref; the last one frees the frame. Reference counts are atomic
 * because a broadcast frame is shared by every shard thread.
 */
#ifndef PARLEY_NET_FRAME_H
#define PARLEY_NET_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/** WebSocket opcodes used by the server. */
enum {
    PL_WS_TEXT = 0x1,
    PL_WS_BINARY = 0x2,
    PL_WS_CLOSE = 0x8,
    PL_WS_PING = 0x9,
    PL_WS_PONG = 0xa
};

/** Shared outgoing bytes. `data[0..len)` is written to the socket as is. */
typedef struct {
    atomic_uint refs;
    uint32_t len;
    uint8_t data[];
} pl_frame_t;

/** Write an unmasked WebSocket header (FIN set) for a payload of `len`; returns its size (2..10).
 */
size_t pl_ws_header(uint8_t out[10], unsigned opcode, size_t len);

/** A WebSocket frame with `opcode` and payload `p[0..len)`. NULL on allocation failure. */
pl_frame_t *pl_frame_ws(unsigned opcode, const void *p, size_t len);

/** A text frame: pl_frame_ws(PL_WS_TEXT, ...). */
static inline pl_frame_t *pl_frame_text(const char *p, size_t len)
{
    return pl_frame_ws(PL_WS_TEXT, p, len);
}

/**
 * A text frame followed, in the same allocation, by `extra` bytes for the
 * caller (16-byte aligned, at *extra_out), which go when the frame goes. For a
 * header that needs the frame exactly as long as the header's own reference
 * (a broadcast on its way to the shards): one allocation per message, not two.
 */
pl_frame_t *pl_frame_text_with(const char *p, size_t len, size_t extra, void **extra_out);

/** A close frame with status `code` and a reason (truncated to fit a control frame). */
pl_frame_t *pl_frame_close(uint16_t code, const char *reason);

/** Raw bytes (an HTTP response). */
pl_frame_t *pl_frame_raw(const void *p, size_t len);

/** Take another reference. */
static inline pl_frame_t *pl_frame_ref(pl_frame_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

/** Take `n` more references at once (one atomic op for a whole batch of recipients). */
static inline void pl_frame_ref_n(pl_frame_t *f, unsigned n)
{
    atomic_fetch_add_explicit(&f->refs, n, memory_order_relaxed);
}

/** Drop a reference; frees the frame when it was the last. */
void pl_frame_unref(pl_frame_t *f);

#endif
