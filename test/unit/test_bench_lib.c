/* Unit tests for the load generator's logic: bench/benchlib.h (frames,
 * frame scanning, stamps, percentiles, URLs) and token minting through
 * pl_jwt_sign as build/parley-bench does it. */
#include "../../bench/benchlib.h"
#include "parley/base/jwt.h"
#include "unit.h"

#include <stdlib.h>
#include <time.h>

static void frame_roundtrip_masked(void)
{
    static const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
    const char *msg = "{\"type\":\"ping\"}";
    uint8_t buf[64];
    size_t fl = bl_ws_client_text(buf, msg, strlen(msg), mask);
    CHECK_EQ_INT(fl, 2 + 4 + strlen(msg));
    CHECK_EQ_INT(buf[0], 0x81);
    CHECK_EQ_INT(buf[1], 0x80 | strlen(msg));
    bl_frame f;
    CHECK_EQ_INT(bl_ws_parse(buf, fl, &f), 1);
    CHECK(f.masked && f.fin && f.opcode == BL_OP_TEXT);
    CHECK_EQ_INT(f.len, strlen(msg));
    CHECK_EQ_INT(f.hdr_len, 6);
    uint8_t *p = buf + f.hdr_len;
    bl_ws_mask(p, p, f.len, f.mask);
    CHECK(memcmp(p, msg, f.len) == 0);
    /* every prefix is incomplete */
    for (size_t k = 0; k < fl; k++)
        CHECK_EQ_INT(bl_ws_parse(buf, k, &f), 0);
}

static void frame_lengths(void)
{
    static uint8_t buf[70000 + 14];
    size_t sizes[] = {0, 125, 126, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t h = bl_ws_header(buf, BL_OP_TEXT, sizes[i], NULL);
        CHECK_EQ_INT(h, sizes[i] < 126 ? 2 : sizes[i] < 65536 ? 4 : 10);
        memset(buf + h, 'x', sizes[i]);
        bl_frame f;
        CHECK_EQ_INT(bl_ws_parse(buf, h + sizes[i], &f), 1);
        CHECK_EQ_INT(f.len, sizes[i]);
        CHECK(!f.masked);
        CHECK_EQ_INT(f.hdr_len, h);
        if (sizes[i]) CHECK_EQ_INT(bl_ws_parse(buf, h + sizes[i] - 1, &f), 0);
    }
}

static void frame_bad(void)
{
    bl_frame f;
    uint8_t rsv[] = {0xC1, 0x00};
    CHECK_EQ_INT(bl_ws_parse(rsv, 2, &f), -1);
    uint8_t op3[] = {0x83, 0x00};
    CHECK_EQ_INT(bl_ws_parse(op3, 2, &f), -1);
    uint8_t bigping[] = {0x89, 126, 0, 200};
    CHECK_EQ_INT(bl_ws_parse(bigping, 4, &f), -1);
    uint8_t nonmin[] = {0x81, 126, 0, 5, 'a', 'b', 'c', 'd', 'e'};
    CHECK_EQ_INT(bl_ws_parse(nonmin, sizeof nonmin, &f), -1);
    uint8_t fragping[] = {0x09, 0};
    CHECK_EQ_INT(bl_ws_parse(fragping, 2, &f), -1);
    uint8_t close[] = {0x88, 2, 0x03, 0xe8};
    CHECK_EQ_INT(bl_ws_parse(close, 4, &f), 1);
    CHECK_EQ_INT(f.opcode, BL_OP_CLOSE);
}

static void frame_types(void)
{
#define T(s) bl_frame_type(s, strlen(s))
    CHECK_EQ_INT(T("{\"type\":\"message\",\"room\":\"r\"}"), BL_T_MESSAGE);
    CHECK_EQ_INT(T("{\"type\":\"subscribed\",\"room\":\"r\"}"), BL_T_SUBSCRIBED);
    CHECK_EQ_INT(T("{\"type\":\"unsubscribed\",\"room\":\"r\"}"), BL_T_UNSUBSCRIBED);
    CHECK_EQ_INT(T("{\"type\":\"authenticated\",\"user\":\"u\"}"), BL_T_AUTHENTICATED);
    CHECK_EQ_INT(T("{\"type\":\"error\",\"code\":\"x\"}"), BL_T_ERROR);
    CHECK_EQ_INT(T("{\"type\":\"pong\"}"), BL_T_PONG);
    CHECK_EQ_INT(T("{\"type\":\"messages\"}"), BL_T_OTHER);
    CHECK_EQ_INT(T("{\"type\":\"mess"), BL_T_OTHER);
    CHECK_EQ_INT(T("{\"room\":\"r\",\"type\":\"message\"}"), BL_T_OTHER);
    CHECK_EQ_INT(T(""), BL_T_OTHER);
#undef T
}

static void stamps_and_fields(void)
{
    const char *m = "{\"type\":\"message\",\"room\":\"fanout\",\"id\":\"77\",\"from\":\"bench-0\","
                    "\"text\":\"42:123456789012\",\"ts\":1700000000000,\"cid\":\"c42\"}";
    uint64_t seq = 0, ns = 0;
    CHECK_EQ_INT(bl_parse_stamp(m, strlen(m), &seq, &ns), 0);
    CHECK_EQ_INT(seq, 42);
    CHECK_EQ_INT(ns, 123456789012ll);
    const char *bad1 = "{\"type\":\"message\",\"text\":\"hello\"}";
    CHECK_EQ_INT(bl_parse_stamp(bad1, strlen(bad1), &seq, &ns), -1);
    const char *bad2 = "{\"type\":\"message\",\"text\":\"1:2";
    CHECK_EQ_INT(bl_parse_stamp(bad2, strlen(bad2), &seq, &ns), -1);
    size_t vl = 0;
    const char *v = bl_json_str(m, strlen(m), "room", &vl);
    CHECK(v && vl == 6 && memcmp(v, "fanout", 6) == 0);
    const char *sp = "{ \"type\" : \"subscribe\" , \"rooms\":[\"a\"] }";
    v = bl_json_str(sp, strlen(sp), "type", &vl);
    CHECK(v && vl == 9 && memcmp(v, "subscribe", 9) == 0);
    const char *esc = "{\"text\":\"a\\\"b\",\"cid\":\"x\"}";
    v = bl_json_str(esc, strlen(esc), "text", &vl);
    CHECK(v && vl == 4);
    v = bl_json_str(esc, strlen(esc), "cid", &vl);
    CHECK(v && vl == 1 && *v == 'x');
    CHECK(bl_json_str(esc, strlen(esc), "room", &vl) == NULL);
}

static void percentiles(void)
{
    bl_hist h;
    CHECK_EQ_INT(bl_hist_init(&h), 0);
    CHECK_EQ_INT(bl_hist_pct(&h, 50), 0);
    /* 1..1000 us, one sample each */
    for (uint64_t us = 1; us <= 1000; us++)
        bl_hist_add(&h, us * 1000 + 500);
    CHECK_EQ_INT(h.n, 1000);
    CHECK_EQ_INT(bl_hist_pct(&h, 50), 500);
    CHECK_EQ_INT(bl_hist_pct(&h, 99), 990);
    CHECK_EQ_INT(bl_hist_pct(&h, 99.9), 999);
    CHECK_EQ_INT(bl_hist_pct(&h, 100), 1000);
    CHECK_EQ_INT(bl_hist_pct(&h, 0.01), 1);
    CHECK_EQ_INT(h.max_ns, 1000500);
    /* nearest rank rounds up: 3 samples, p50 is the 2nd */
    bl_hist_reset(&h);
    bl_hist_add(&h, 10000);
    bl_hist_add(&h, 20000);
    bl_hist_add(&h, 30000);
    CHECK_EQ_INT(bl_hist_pct(&h, 50), 20);
    CHECK_EQ_INT(bl_hist_pct(&h, 99), 30);
    /* above 1 s: millisecond buckets */
    bl_hist_add(&h, 5000000000ull);
    CHECK_EQ_INT(bl_hist_pct(&h, 100), 5000000);
    bl_hist_add(&h, 2345678901ull);
    bl_hist_add(&h, 2345999999ull); /* the same millisecond */
    CHECK_EQ_INT(bl_hist_pct(&h, 60), 2345000);
    /* beyond the range: the last bucket (60 s); max stays exact */
    bl_hist_add(&h, 3600000000000ull);
    CHECK_EQ_INT(bl_hist_pct(&h, 100), BL_HIST_MAX_US);
    CHECK_EQ_INT(BL_HIST_MAX_US, 60000000);
    CHECK_EQ_INT(h.max_ns, 3600000000000ull);
    bl_hist_free(&h);
}

static void urls(void)
{
    bl_url u;
    CHECK_EQ_INT(bl_parse_url("ws://127.0.0.1:8080/ws", &u), 0);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_EQ_INT(u.port, 8080);
    CHECK_STR(u.path, "/ws");
    CHECK_EQ_INT(bl_parse_url("ws://h", &u), 0);
    CHECK_EQ_INT(u.port, 80);
    CHECK_STR(u.path, "/");
    CHECK_EQ_INT(u.tls, 0);
    CHECK_EQ_INT(bl_parse_url("wss://h/ws", &u), 0);
    CHECK_EQ_INT(u.tls, 1);
    CHECK_EQ_INT(u.port, 443);
    CHECK_EQ_INT(bl_parse_url("wss://127.0.0.1:8443", &u), 0);
    CHECK_EQ_INT(u.port, 8443);
    CHECK_EQ_INT(bl_parse_url("wsss://h/ws", &u), -1);
    CHECK_EQ_INT(bl_parse_url("http://h/ws", &u), -1);
    CHECK_EQ_INT(bl_parse_url("ws://h:0/ws", &u), -1);
    CHECK_EQ_INT(bl_parse_url("ws://:80/ws", &u), -1);
}

static void token_minting(void)
{
    /* what parley-bench does for user bench-<i> */
    const char *secret = "bench-secret";
    char tok[512], sub[PL_JWT_SUB_MAX + 1];
    int64_t now = (int64_t)time(NULL);
    int n = pl_jwt_sign(secret, strlen(secret), "bench-17", now + 86400, tok, sizeof tok);
    CHECK(n > 0);
    CHECK_EQ_INT((size_t)n, strlen(tok));
    CHECK_EQ_INT(pl_jwt_verify(secret, strlen(secret), tok, (size_t)n, now, sub), 0);
    CHECK_STR(sub, "bench-17");
    CHECK(pl_jwt_verify("other", 5, tok, (size_t)n, now, sub) < 0);
    /* URL-safe: goes into ?token= unescaped */
    CHECK(strcspn(tok, "+/=&? ") == (size_t)n);
    CHECK_EQ_INT(pl_jwt_sign(secret, strlen(secret), "bench-17", now, tok, 8), PL_JWT_ENOSPC);
}

int main(void)
{
    RUN(frame_roundtrip_masked);
    RUN(frame_lengths);
    RUN(frame_bad);
    RUN(frame_types);
    RUN(stamps_and_fields);
    RUN(percentiles);
    RUN(urls);
    RUN(token_minting);
    UNIT_EXIT();
}
