/* frame: construction and release of shared outgoing frames. */
#include "parley/net/frame.h"

#include <stdlib.h>
#include <string.h>

size_t pl_ws_header(uint8_t out[10], unsigned opcode, size_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0xf));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

static pl_frame_t *frame_alloc(size_t len)
{
    pl_frame_t *f = malloc(sizeof *f + len);
    if (!f) return NULL;
    atomic_init(&f->refs, 1);
    f->len = (uint32_t)len;
    return f;
}

pl_frame_t *pl_frame_text_with(const char *p, size_t len, size_t extra, void **extra_out)
{
    uint8_t hdr[10];
    size_t h = pl_ws_header(hdr, PL_WS_TEXT, len);
    size_t at = (sizeof(pl_frame_t) + h + len + 15) & ~(size_t)15; /* where `extra` starts */
    pl_frame_t *f = malloc(at + extra);
    if (!f) return NULL;
    atomic_init(&f->refs, 1);
    f->len = (uint32_t)(h + len);
    memcpy(f->data, hdr, h);
    if (len) memcpy(f->data + h, p, len);
    *extra_out = (char *)f + at;
    return f;
}

pl_frame_t *pl_frame_ws(unsigned opcode, const void *p, size_t len)
{
    uint8_t hdr[10];
    size_t h = pl_ws_header(hdr, opcode, len);
    pl_frame_t *f = frame_alloc(h + len);
    if (!f) return NULL;
    memcpy(f->data, hdr, h);
    if (len) memcpy(f->data + h, p, len);
    return f;
}

pl_frame_t *pl_frame_close(uint16_t code, const char *reason)
{
    uint8_t payload[125];
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > sizeof payload - 2) rlen = sizeof payload - 2;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rlen) memcpy(payload + 2, reason, rlen);
    return pl_frame_ws(PL_WS_CLOSE, payload, rlen + 2);
}

pl_frame_t *pl_frame_raw(const void *p, size_t len)
{
    pl_frame_t *f = frame_alloc(len);
    if (f && len) memcpy(f->data, p, len);
    return f;
}

void pl_frame_unref(pl_frame_t *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) free(f);
}
