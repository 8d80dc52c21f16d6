/*
 * benchlib.h: the load generator's and the floor's pure logic, header-only so
 * unit tests (test/unit/test_bench_*.c) can include it directly.
 *
 *  - RFC 6455 frame header parsing and building (masked and unmasked)
 *  - cheap scanning of type-first JSON frames (no JSON library)
 *  - a latency histogram (1 us buckets up to 1 s, 1 ms buckets up to 60 s) with
 *    exact percentiles at that resolution
 *  - the `text` payload the bench embeds: "<seq>:<send ns>"
 *  - ws:// and wss:// URL parsing
 *  - a process' CPU time from /proc
 *
 * Everything is `static inline` and allocation-free except bl_hist_*.
 */
#ifndef PARLEY_BENCHLIB_H
#define PARLEY_BENCHLIB_H

#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t bl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double bl_now_s(void)
{
    return (double)bl_now_ns() / 1e9;
}

/* ---------------------------------------------------------------- frames */

enum {
    BL_OP_CONT = 0,
    BL_OP_TEXT = 1,
    BL_OP_BIN = 2,
    BL_OP_CLOSE = 8,
    BL_OP_PING = 9,
    BL_OP_PONG = 10
};

typedef struct {
    int fin;
    int opcode;
    int masked;
    uint8_t mask[4];
    size_t hdr_len; /* bytes of header (incl. mask key) */
    uint64_t len;   /* payload length */
} bl_frame;

/*
 * Parse a frame header at p[0..n). Returns 1 when the header and the whole
 * payload are present (frame occupies f->hdr_len + f->len bytes), 0 when more
 * bytes are needed, -1 on a malformed header (reserved bits, bad opcode,
 * control frame too long, non-minimal or 63-bit-overflowing length).
 */
static inline int bl_ws_parse(const uint8_t *p, size_t n, bl_frame *f)
{
    f->len = 0;
    f->hdr_len = 0;
    f->masked = f->fin = f->opcode = 0;
    if (n < 2) return 0;
    uint8_t b0 = p[0], b1 = p[1];
    if (b0 & 0x70) return -1;
    f->fin = (b0 & 0x80) != 0;
    f->opcode = b0 & 0x0f;
    if ((f->opcode > 2 && f->opcode < 8) || f->opcode > 10) return -1;
    f->masked = (b1 & 0x80) != 0;
    uint64_t len = b1 & 0x7f;
    size_t h = 2;
    if (len == 126) {
        if (n < 4) return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        h = 4;
        if (len < 126) return -1;
    } else if (len == 127) {
        if (n < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        h = 10;
        if (len >> 63 || len < 65536) return -1;
    }
    if (f->opcode >= 8 && (len > 125 || !f->fin)) return -1;
    if (f->masked) {
        if (n < h + 4) return 0;
        memcpy(f->mask, p + h, 4);
        h += 4;
    }
    f->hdr_len = h;
    f->len = len;
    if ((uint64_t)(n - h) < len) return 0;
    return 1;
}

/* Write a frame header (FIN set) for `len` payload bytes; `mask` NULL for an
 * unmasked (server) frame. Returns the header length (2..14). */
static inline size_t bl_ws_header(uint8_t *out, int opcode, uint64_t len, const uint8_t *mask)
{
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | (opcode & 0x0f));
    uint8_t mbit = mask ? 0x80 : 0;
    if (len < 126) {
        out[h++] = (uint8_t)(mbit | len);
    } else if (len < 65536) {
        out[h++] = (uint8_t)(mbit | 126);
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = (uint8_t)(mbit | 127);
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)(len >> (8 * i));
    }
    if (mask) {
        memcpy(out + h, mask, 4);
        h += 4;
    }
    return h;
}

/* XOR `len` bytes with the 4-byte mask (in place when dst == src). */
static inline void bl_ws_mask(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4])
{
    for (size_t i = 0; i < len; i++)
        dst[i] = src[i] ^ mask[i & 3];
}

/* Build a complete masked text frame into out (needs len + 14 bytes). */
static inline size_t bl_ws_client_text(uint8_t *out, const char *payload, size_t len,
                                       const uint8_t mask[4])
{
    size_t h = bl_ws_header(out, BL_OP_TEXT, len, mask);
    bl_ws_mask(out + h, (const uint8_t *)payload, len, mask);
    return h + len;
}

/* -------------------------------------------------------- frame scanning */

enum {
    BL_T_OTHER = 0,
    BL_T_MESSAGE,
    BL_T_SUBSCRIBED,
    BL_T_AUTHENTICATED,
    BL_T_ERROR,
    BL_T_PONG,
    BL_T_UNSUBSCRIBED,
    BL_T_NOTICE,
    BL_T_ACK,
};

/* Dispatch on a type-first server frame: `{"type":"<name>"`. */
static inline int bl_frame_type(const char *p, size_t n)
{
    static const char pre[] = "{\"type\":\"";
    const size_t pl = sizeof pre - 1;
    if (n < pl + 2 || memcmp(p, pre, pl) != 0) return BL_T_OTHER;
    p += pl;
    n -= pl;
#define BL_IS(s) (n > sizeof(s) - 1 && memcmp(p, s "\"", sizeof(s)) == 0)
    if (BL_IS("message")) return BL_T_MESSAGE;
    if (BL_IS("subscribed")) return BL_T_SUBSCRIBED;
    if (BL_IS("authenticated")) return BL_T_AUTHENTICATED;
    if (BL_IS("error")) return BL_T_ERROR;
    if (BL_IS("pong")) return BL_T_PONG;
    if (BL_IS("unsubscribed")) return BL_T_UNSUBSCRIBED;
    if (BL_IS("server_notice")) return BL_T_NOTICE;
    if (BL_IS("ack")) return BL_T_ACK;
#undef BL_IS
    return BL_T_OTHER;
}

/*
 * Find the string member `key` in compact JSON p[0..n) by scanning for
 * `"key":"` (whitespace around ':' tolerated). Returns a pointer to the
 * first byte of the raw (still escaped) value and sets *vlen, or NULL.
 * Not a JSON parser: a key-like sequence inside an earlier string value
 * could match, which is fine for frames whose layout we know.
 */
static inline const char *bl_json_str(const char *p, size_t n, const char *key, size_t *vlen)
{
    size_t kl = strlen(key);
    const char *end = p + n;
    const char *s = p;
    while (s < end) {
        const char *q = memchr(s, '"', (size_t)(end - s));
        if (!q || (size_t)(end - q) < kl + 2) return NULL;
        if (memcmp(q + 1, key, kl) == 0 && q[kl + 1] == '"') {
            const char *v = q + kl + 2;
            while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
                v++;
            if (v < end && *v == ':') {
                v++;
                while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
                    v++;
                if (v < end && *v == '"') {
                    v++;
                    const char *e = v;
                    while (e < end && *e != '"') {
                        if (*e == '\\') e++;
                        e++;
                    }
                    if (e >= end) return NULL;
                    *vlen = (size_t)(e - v);
                    return v;
                }
            }
        }
        s = q + 1;
    }
    return NULL;
}

/*
 * The bench's message text is "<seq>:<send ns>". Parse it from a delivered
 * frame (finds "text":"). Returns 0 and sets *seq / *ns, or -1.
 */
static inline int bl_parse_stamp(const char *p, size_t n, uint64_t *seq, uint64_t *ns)
{
    static const char k[] = "\"text\":\"";
    const char *v = memmem(p, n, k, sizeof k - 1);
    if (!v) return -1;
    v += sizeof k - 1;
    const char *end = p + n;
    uint64_t a = 0, b = 0;
    int da = 0, db = 0;
    while (v < end && *v >= '0' && *v <= '9') {
        a = a * 10 + (uint64_t)(*v++ - '0');
        da++;
    }
    if (!da || v >= end || *v != ':') return -1;
    v++;
    while (v < end && *v >= '0' && *v <= '9') {
        b = b * 10 + (uint64_t)(*v++ - '0');
        db++;
    }
    if (!db || v >= end || *v != '"') return -1;
    *seq = a;
    *ns = b;
    return 0;
}

/* ------------------------------------------------------------- histogram */

/* 1 us buckets below 1 s, then 1 ms buckets below 60 s (a slow peer can be seconds
 * behind); anything later counts as 60 s. */
#define BL_HIST_US 1000000u
#define BL_HIST_MS 59000u
#define BL_HIST_MAX_US (BL_HIST_US + (uint64_t)BL_HIST_MS * 1000)
#define BL_HIST_BUCKETS (BL_HIST_US + BL_HIST_MS + 1)

typedef struct {
    uint32_t *b; /* BL_HIST_BUCKETS buckets */
    uint64_t n;
    uint64_t max_ns;
    uint64_t sum_ns;
} bl_hist;

static inline int bl_hist_init(bl_hist *h)
{
    h->b = calloc(BL_HIST_BUCKETS, sizeof *h->b);
    h->n = h->max_ns = h->sum_ns = 0;
    return h->b ? 0 : -1;
}

static inline void bl_hist_reset(bl_hist *h)
{
    memset(h->b, 0, BL_HIST_BUCKETS * sizeof *h->b);
    h->n = h->max_ns = h->sum_ns = 0;
}

static inline void bl_hist_free(bl_hist *h)
{
    free(h->b);
    h->b = NULL;
}

static inline void bl_hist_add(bl_hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000;
    if (us < BL_HIST_US)
        h->b[us]++;
    else if (us < BL_HIST_MAX_US)
        h->b[BL_HIST_US + (us - BL_HIST_US) / 1000]++;
    else
        h->b[BL_HIST_BUCKETS - 1]++;
    h->n++;
    h->sum_ns += ns;
    if (ns > h->max_ns) h->max_ns = ns;
}

/*
 * The p-th percentile (0 < p <= 100) in microseconds: the smallest bucket
 * value v such that at least ceil(p/100 * n) samples are <= v (nearest-rank;
 * above 1 s, v is the bucket's first microsecond). 0 for an empty histogram.
 */
static inline uint64_t bl_hist_pct(const bl_hist *h, double p)
{
    if (!h->n) return 0;
    /* integer nearest rank: ceil(p/100 * n) with p in thousandths, so that
     * 99.9% of 1000 is exactly 999 (no floating-point rounding up) */
    uint64_t pm = (uint64_t)(p * 1000.0 + 0.5);
    uint64_t rank = (pm * h->n + 99999) / 100000;
    if (rank < 1) rank = 1;
    if (rank > h->n) rank = h->n;
    uint64_t c = 0;
    for (uint32_t i = 0; i < BL_HIST_BUCKETS; i++) {
        c += h->b[i];
        if (c >= rank) return i < BL_HIST_US ? i : BL_HIST_US + (uint64_t)(i - BL_HIST_US) * 1000;
    }
    return BL_HIST_MAX_US;
}

/* -------------------------------------------------------------------- URL */

typedef struct {
    char host[256];
    int port;
    char path[512];
    int tls; /**< wss:// */
} bl_url;

/* Parse ws://host[:port][/path] or wss://... (default port 80 or 443). Returns 0 or -1. */
static inline int bl_parse_url(const char *s, bl_url *u)
{
    if (strncmp(s, "ws://", 5) == 0)
        u->tls = 0, s += 5;
    else if (strncmp(s, "wss://", 6) == 0)
        u->tls = 1, s += 6;
    else
        return -1;
    const char *hs = s;
    while (*s && *s != ':' && *s != '/')
        s++;
    size_t hl = (size_t)(s - hs);
    if (!hl || hl >= sizeof u->host) return -1;
    memcpy(u->host, hs, hl);
    u->host[hl] = 0;
    u->port = u->tls ? 443 : 80;
    if (*s == ':') {
        s++;
        char *e;
        long p = strtol(s, &e, 10);
        if (e == s || p < 1 || p > 65535) return -1;
        u->port = (int)p;
        s = e;
    }
    if (!*s) s = "/";
    if (*s != '/' || strlen(s) >= sizeof u->path) return -1;
    strcpy(u->path, s);
    return 0;
}

/* utime + stime of the processes `pids[0..n)` (/proc/PID/stat), microseconds; -1 if one is gone. */
static inline long long bl_proc_cpu_us(const pid_t *pids, int n)
{
    long long tot = 0;
    long tck = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < n; i++) {
        char p[64], b[2048];
        snprintf(p, sizeof p, "/proc/%d/stat", (int)pids[i]);
        FILE *f = fopen(p, "r");
        if (!f) return -1;
        size_t k = fread(b, 1, sizeof b - 1, f);
        fclose(f);
        b[k] = 0;
        char *s = strrchr(b, ')');
        if (!s) return -1;
        s += 2; /* field 3 */
        unsigned long long ut = 0, st = 0;
        int field = 3;
        while (*s && field < 14) {
            if (*s++ == ' ') field++;
        }
        if (sscanf(s, "%llu %llu", &ut, &st) != 2) return -1;
        tot += (long long)((ut + st) * 1000000ull / (unsigned long long)tck);
    }
    return tot;
}

#endif
