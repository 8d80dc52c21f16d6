/* b64: table-driven base64 and base64url; see the header. */
#include "parley/base/b64.h"

#include <stdint.h>

static const char std_digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Each character's value plus one, so that the zero-filled rest of a table means "not a
 * digit". The two alphabets share the first 62 digits. */
#define V(c, v) [(unsigned char)(c)] = (v) + 1
#define ALNUM                                                                                      \
    V('A', 0), V('B', 1), V('C', 2), V('D', 3), V('E', 4), V('F', 5), V('G', 6), V('H', 7),        \
        V('I', 8), V('J', 9), V('K', 10), V('L', 11), V('M', 12), V('N', 13), V('O', 14),          \
        V('P', 15), V('Q', 16), V('R', 17), V('S', 18), V('T', 19), V('U', 20), V('V', 21),        \
        V('W', 22), V('X', 23), V('Y', 24), V('Z', 25), V('a', 26), V('b', 27), V('c', 28),        \
        V('d', 29), V('e', 30), V('f', 31), V('g', 32), V('h', 33), V('i', 34), V('j', 35),        \
        V('k', 36), V('l', 37), V('m', 38), V('n', 39), V('o', 40), V('p', 41), V('q', 42),        \
        V('r', 43), V('s', 44), V('t', 45), V('u', 46), V('v', 47), V('w', 48), V('x', 49),        \
        V('y', 50), V('z', 51), V('0', 52), V('1', 53), V('2', 54), V('3', 55), V('4', 56),        \
        V('5', 57), V('6', 58), V('7', 59), V('8', 60), V('9', 61)
static const uint8_t std_vals[256] = {ALNUM, V('+', 62), V('/', 63)};
static const uint8_t url_vals[256] = {ALNUM, V('-', 62), V('_', 63)};

int pl_b64_encode(const unsigned char *in, size_t n, char *out, size_t out_size,
                  pl_b64_alpha_t alpha)
{
    if (out_size < PL_B64_ENCODED_SIZE(n)) return -1;
    const char *d = alpha == PL_B64_URL ? url_digits : std_digits;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = d[v >> 18];
        out[o++] = d[(v >> 12) & 63];
        out[o++] = d[(v >> 6) & 63];
        out[o++] = d[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = d[v >> 18];
        out[o++] = d[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = d[(v >> 6) & 63];
        if (alpha == PL_B64_STD) {
            if (i + 1 >= n) out[o++] = '=';
            out[o++] = '=';
        }
    }
    out[o] = '\0';
    return (int)o;
}

int pl_b64_decode(const char *in, size_t n, unsigned char *out, size_t out_size, size_t *out_len,
                  pl_b64_alpha_t alpha)
{
    if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > out_size) return -1;
    const uint8_t *t = alpha == PL_B64_URL ? url_vals : std_vals;
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        unsigned a = t[(unsigned char)in[i]], b = t[(unsigned char)in[i + 1]],
                 c = t[(unsigned char)in[i + 2]], e = t[(unsigned char)in[i + 3]];
        if (!a || !b || !c || !e) return -1;
        uint32_t v =
            (uint32_t)(a - 1) << 18 | (uint32_t)(b - 1) << 12 | (uint32_t)(c - 1) << 6 | (e - 1);
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    if (i < n) { /* two or three characters: one or two bytes */
        unsigned a = t[(unsigned char)in[i]], b = t[(unsigned char)in[i + 1]],
                 c = n - i == 3 ? t[(unsigned char)in[i + 2]] : 1;
        if (!a || !b || !c) return -1;
        uint32_t v = (uint32_t)(a - 1) << 18 | (uint32_t)(b - 1) << 12 | (uint32_t)(c - 1) << 6;
        /* The bits past the last whole byte must be zero (a canonical encoding). */
        if (v & (n - i == 3 ? 0xffu : 0xffffu)) return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (n - i == 3) out[o++] = (unsigned char)(v >> 8);
    }
    *out_len = o;
    return 0;
}
