/* buf: growable buffers and JSON string escaping (the server's only JSON encoder). */
#include "parley/base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pl_buf_reserve(pl_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) abort();
    b->data = p;
    b->cap = cap;
}

void pl_buf_add(pl_buf_t *b, const void *p, size_t n)
{
    pl_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void pl_buf_adds(pl_buf_t *b, const char *s)
{
    pl_buf_add(b, s, strlen(s));
}

void pl_buf_printf(pl_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    pl_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

size_t pl_u64_str(char out[21], uint64_t v)
{
    /* Digits from the end, then moved to the front: no printf on the hot paths. */
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, tmp + sizeof tmp - n, n);
    out[n] = '\0';
    return n;
}

void pl_buf_uint(pl_buf_t *b, uint64_t v)
{
    char tmp[21];
    pl_buf_add(b, tmp, pl_u64_str(tmp, v));
}

void pl_buf_int(pl_buf_t *b, int64_t v)
{
    if (v < 0) {
        pl_buf_add(b, "-", 1);
        pl_buf_uint(b, (uint64_t)0 - (uint64_t)v);
        return;
    }
    pl_buf_uint(b, (uint64_t)v);
}

void pl_buf_json_str(pl_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case every byte becomes \u00XX. */
    pl_buf_reserve(b, n * 6 + 2);
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

void pl_buf_free(pl_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int pl_json_has_nul(const char *p, size_t n)
{
    if (memchr(p, '\0', n)) return 1;
    for (const char *q = p; (q = memchr(q, '\\', (size_t)(p + n - q))) != NULL;) {
        /* q starts a run of backslashes; an odd run escapes what follows. */
        const char *r = q;
        while (r < p + n && *r == '\\')
            r++;
        if (((r - q) & 1) && p + n - r >= 5 && r[0] == 'u' && memcmp(r + 1, "0000", 4) == 0)
            return 1;
        q = r;
        if (q >= p + n) break;
    }
    return 0;
}
