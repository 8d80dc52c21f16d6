/*
 * buf: a growable byte buffer, and JSON string escaping into it.
 *
 * The owner of a pl_buf_t owns its storage: pl_buf_free releases it. Buffers
 * are meant to be reused (pl_buf_reset keeps the capacity), so steady-state
 * encoding allocates nothing. Allocation failure aborts: at that point a
 * gateway cannot do anything useful for anyone.
 */
#ifndef PARLEY_BASE_BUF_H
#define PARLEY_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>

/** Growable buffer; `data` is NUL-terminated after every append for convenience. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} pl_buf_t;

/** Make room for `extra` more bytes (plus a NUL). */
void pl_buf_reserve(pl_buf_t *b, size_t extra);
/** Append `n` raw bytes. */
void pl_buf_add(pl_buf_t *b, const void *p, size_t n);
/** Append a NUL-terminated string. */
void pl_buf_adds(pl_buf_t *b, const char *s);
/** Append printf-formatted text. */
void pl_buf_printf(pl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Append `s` as a JSON string literal, quotes included. Invalid UTF-8 is not checked here. */
void pl_buf_json_str(pl_buf_t *b, const char *s, size_t n);
/**
 * 1 if the JSON text `p[0..n)` has a string escape `\u0000` (or a raw NUL).
 * cJSON's strings end at the first NUL, so such text would be read cut
 * short: callers refuse it instead.
 */
int pl_json_has_nul(const char *p, size_t n);
/** Append a signed integer in decimal. */
void pl_buf_int(pl_buf_t *b, int64_t v);
/** Append an unsigned integer in decimal. */
void pl_buf_uint(pl_buf_t *b, uint64_t v);
/** Write `v` in decimal to `out`, NUL-terminated; returns its length (1..20). */
size_t pl_u64_str(char out[21], uint64_t v);
/** Empty the buffer, keeping its storage. */
static inline void pl_buf_reset(pl_buf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}
/** Release the storage. */
void pl_buf_free(pl_buf_t *b);

#endif
