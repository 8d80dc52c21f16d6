/* Unit tests for src/frame.c: WebSocket headers, frame construction and
 * reference counting. */
#include "parley/net/frame.h"
#include "unit.h"

#include <pthread.h>
#include <stdlib.h>

static int bytes_are(const uint8_t *p, size_t n, const uint8_t *want, size_t wn)
{
    return n == wn && memcmp(p, want, n) == 0;
}

static void ws_header_lengths(void)
{
    uint8_t h[10];
    size_t n;
    n = pl_ws_header(h, PL_WS_TEXT, 0);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x81, 0x00}, 2));
    n = pl_ws_header(h, PL_WS_TEXT, 125);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x81, 125}, 2));
    n = pl_ws_header(h, PL_WS_TEXT, 126);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x81, 126, 0x00, 126}, 4));
    n = pl_ws_header(h, PL_WS_BINARY, 300);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x82, 126, 0x01, 0x2c}, 4));
    n = pl_ws_header(h, PL_WS_TEXT, 65535);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x81, 126, 0xff, 0xff}, 4));
    n = pl_ws_header(h, PL_WS_TEXT, 65536);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}, 10));
    n = pl_ws_header(h, PL_WS_TEXT, 0x0102030405ull);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x81, 127, 0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0x05}, 10));
    /* opcodes: FIN set, no RSV, no mask bit */
    n = pl_ws_header(h, PL_WS_CLOSE, 2);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x88, 0x02}, 2));
    n = pl_ws_header(h, PL_WS_PING, 0);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x89, 0x00}, 2));
    n = pl_ws_header(h, PL_WS_PONG, 5);
    CHECK(bytes_are(h, n, (const uint8_t[]){0x8a, 0x05}, 2));
}

static void frame_ws_layout(void)
{
    size_t sizes[] = {0, 5, 125, 126, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t len = sizes[i];
        uint8_t *p = malloc(len ? len : 1);
        for (size_t k = 0; k < len; k++)
            p[k] = (uint8_t)(k * 7);
        pl_frame_t *f = pl_frame_ws(PL_WS_BINARY, p, len);
        CHECK(f != NULL);
        if (!f) {
            free(p);
            continue;
        }
        uint8_t h[10];
        size_t hl = pl_ws_header(h, PL_WS_BINARY, len);
        CHECK_EQ_INT(f->len, hl + len);
        CHECK(memcmp(f->data, h, hl) == 0);
        CHECK(len == 0 || memcmp(f->data + hl, p, len) == 0);
        CHECK_EQ_INT(atomic_load(&f->refs), 1);
        pl_frame_unref(f);
        free(p);
    }
    pl_frame_t *t = pl_frame_text("hi", 2);
    CHECK(t && t->len == 4 && memcmp(t->data, "\x81\x02hi", 4) == 0);
    pl_frame_unref(t);
}

static void close_payload(void)
{
    pl_frame_t *f = pl_frame_close(1001, "idle timeout");
    CHECK(f != NULL);
    /* 0x88, len 14, code 0x03e9 big-endian, reason */
    CHECK(f->len == 2 + 2 + 12);
    CHECK(memcmp(f->data, "\x88\x0e\x03\xe9idle timeout", 16) == 0);
    pl_frame_unref(f);

    f = pl_frame_close(4008, NULL);
    CHECK(f && f->len == 4 && memcmp(f->data, "\x88\x02\x0f\xa8", 4) == 0);
    pl_frame_unref(f);
    f = pl_frame_close(1000, "");
    CHECK(f && f->len == 4 && memcmp(f->data, "\x88\x02\x03\xe8", 4) == 0);
    pl_frame_unref(f);

    /* a long reason is cut to 123 bytes so the payload fits a control frame (125) */
    char reason[300];
    for (int i = 0; i < 299; i++)
        reason[i] = (char)('a' + i % 26);
    reason[299] = '\0';
    f = pl_frame_close(4001, reason);
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(f->len, 2 + 125);
        CHECK_EQ_INT(f->data[0], 0x88);
        CHECK_EQ_INT(f->data[1], 125);
        CHECK(f->data[2] == 0x0f && f->data[3] == 0xa1);
        CHECK(memcmp(f->data + 4, reason, 123) == 0);
        pl_frame_unref(f);
    }
    /* exactly 123 is kept whole, 124 is cut */
    reason[123] = '\0';
    f = pl_frame_close(1000, reason);
    CHECK(f && f->len == 127 && memcmp(f->data + 4, reason, 123) == 0);
    pl_frame_unref(f);
    reason[123] = 'x';
    reason[124] = '\0';
    f = pl_frame_close(1000, reason);
    CHECK(f && f->len == 127 && f->data[1] == 125);
    pl_frame_unref(f);
}

static void raw(void)
{
    const char *resp = "HTTP/1.1 200 OK\r\n\r\n";
    pl_frame_t *f = pl_frame_raw(resp, strlen(resp));
    CHECK(f && f->len == strlen(resp) && memcmp(f->data, resp, f->len) == 0);
    CHECK_EQ_INT(atomic_load(&f->refs), 1);
    pl_frame_unref(f);
    f = pl_frame_raw(NULL, 0);
    CHECK(f && f->len == 0);
    pl_frame_unref(f);
}

static void refcounting(void)
{
    pl_frame_t *f = pl_frame_text("shared", 6);
    CHECK_EQ_INT(atomic_load(&f->refs), 1);
    CHECK(pl_frame_ref(f) == f);
    CHECK_EQ_INT(atomic_load(&f->refs), 2);
    pl_frame_ref_n(f, 1000);
    CHECK_EQ_INT(atomic_load(&f->refs), 1002);
    pl_frame_ref_n(f, 0);
    CHECK_EQ_INT(atomic_load(&f->refs), 1002);
    for (int i = 0; i < 1001; i++)
        pl_frame_unref(f);
    CHECK_EQ_INT(atomic_load(&f->refs), 1); /* still alive, contents intact */
    CHECK(memcmp(f->data, "\x81\x06shared", 8) == 0);
    pl_frame_unref(f); /* the last one frees it (valgrind: no leak, no error) */
}

/* References dropped concurrently from several threads: freed exactly once. */
enum { THREADS = 4, PER_THREAD = 20000 };

static void *drop_refs(void *arg)
{
    pl_frame_t *f = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        pl_frame_ref(f);
        pl_frame_unref(f);
    }
    pl_frame_unref(f); /* the reference handed to this thread */
    return NULL;
}

static void refcount_threads(void)
{
    pl_frame_t *f = pl_frame_text("x", 1);
    pl_frame_ref_n(f, THREADS); /* one per thread, plus ours */
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, drop_refs, f);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(atomic_load(&f->refs), 1);
    pl_frame_unref(f);
}

int main(void)
{
    RUN(ws_header_lengths);
    RUN(frame_ws_layout);
    RUN(close_payload);
    RUN(raw);
    RUN(refcounting);
    RUN(refcount_threads);
    UNIT_EXIT();
}
