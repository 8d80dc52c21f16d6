/* Unit tests for src/http.c: request parsing through llhttp (whole, split,
 * pipelined, upgrade, errors and limits), query lookup, and responses. */
#include "parley/proto/http.h"
#include "unit.h"

#include <stdlib.h>

static const char GET[] = "GET /ws?room=1&token=abc.def-ghi&x=2 HTTP/1.1\r\n"
                          "Host: example.com:8080\r\n"
                          "Authorization: Bearer t0k3n\r\n"
                          "X-Other: ignored\r\n"
                          "Accept: */*\r\n"
                          "\r\n";

static const char *hdr(const pl_http_t *h, int which)
{
    const char *v = pl_http_header(h, which);
    return v ? v : "(null)";
}

/* Everything we know about GET[] after it is parsed. */
static void check_get(const pl_http_t *h)
{
    CHECK_EQ_INT(pl_http_method(h), HTTP_GET);
    const char *path;
    size_t plen;
    pl_http_path(h, &path, &plen);
    CHECK(plen == 3 && memcmp(path, "/ws", 3) == 0);
    CHECK_STR(hdr(h, PL_H_HOST), "example.com:8080");
    CHECK_STR(hdr(h, PL_H_AUTHORIZATION), "Bearer t0k3n");
    CHECK(pl_http_header(h, PL_H_UPGRADE) == NULL);
    CHECK(pl_http_header(h, PL_H_SEC_WEBSOCKET_KEY) == NULL);
    CHECK(pl_http_header(h, PL_H_SEC_WEBSOCKET_VERSION) == NULL);
    size_t n = 99;
    const char *v = pl_http_query(h, "token", &n);
    CHECK(v && n == 11 && memcmp(v, "abc.def-ghi", 11) == 0);
    CHECK(pl_http_keep_alive(h));
}

static void get_one_chunk(void)
{
    pl_http_t *h = pl_http_new();
    size_t used = 0;
    int status = 0;
    CHECK_EQ_INT(pl_http_feed(h, GET, strlen(GET), &used, &status), PL_HTTP_REQUEST);
    CHECK_EQ_INT(used, strlen(GET));
    check_get(h);
    pl_http_free(h);
}

static void get_byte_by_byte(void)
{
    pl_http_t *h = pl_http_new();
    size_t n = strlen(GET);
    int more = 0;
    for (size_t i = 0; i < n; i++) {
        size_t used = 0;
        int status = 0;
        pl_http_result_t r = pl_http_feed(h, GET + i, 1, &used, &status);
        if (i + 1 < n) {
            more += r == PL_HTTP_MORE && used == 1;
        } else {
            CHECK_EQ_INT(r, PL_HTTP_REQUEST);
            CHECK_EQ_INT(used, 1);
        }
    }
    CHECK_EQ_INT(more, n - 1);
    check_get(h);
    pl_http_free(h);

    /* and split at every point into two reads */
    for (size_t k = 0; k <= n; k++) {
        h = pl_http_new();
        size_t used = 0;
        int status = 0;
        pl_http_result_t r = pl_http_feed(h, GET, k, &used, &status);
        if (k < n) {
            CHECK(r == PL_HTTP_MORE && used == k);
            r = pl_http_feed(h, GET + k, n - k, &used, &status);
            CHECK_EQ_INT(used, n - k);
        }
        CHECK_EQ_INT(r, PL_HTTP_REQUEST);
        check_get(h);
        pl_http_free(h);
    }
}

static void headers_case_insensitive(void)
{
    const char *req = "GET /health HTTP/1.1\r\n"
                      "HOST: h1\r\n"
                      "aUtHoRiZaTiOn: Bearer x\r\n"
                      "sec-websocket-version: 13\r\n"
                      "SEC-WEBSOCKET-KEY: k==\r\n"
                      "\r\n";
    pl_http_t *h = pl_http_new();
    size_t used;
    int status;
    CHECK_EQ_INT(pl_http_feed(h, req, strlen(req), &used, &status), PL_HTTP_REQUEST);
    CHECK_STR(hdr(h, PL_H_HOST), "h1");
    CHECK_STR(hdr(h, PL_H_AUTHORIZATION), "Bearer x");
    CHECK_STR(hdr(h, PL_H_SEC_WEBSOCKET_VERSION), "13");
    CHECK_STR(hdr(h, PL_H_SEC_WEBSOCKET_KEY), "k==");
    pl_http_free(h);

    /* a header name that merely starts like a kept one is not it */
    req = "GET / HTTP/1.1\r\nHostname: nope\r\nX-Authorization: nope\r\n\r\n";
    h = pl_http_new();
    CHECK_EQ_INT(pl_http_feed(h, req, strlen(req), &used, &status), PL_HTTP_REQUEST);
    CHECK(pl_http_header(h, PL_H_HOST) == NULL);
    CHECK(pl_http_header(h, PL_H_AUTHORIZATION) == NULL);
    pl_http_free(h);

    /* a repeated header: the last one wins; an empty value is "" */
    req = "GET / HTTP/1.1\r\nHost: first\r\nhost: second\r\nAuthorization:\r\n\r\n";
    h = pl_http_new();
    CHECK_EQ_INT(pl_http_feed(h, req, strlen(req), &used, &status), PL_HTTP_REQUEST);
    CHECK_STR(hdr(h, PL_H_HOST), "second");
    CHECK_STR(hdr(h, PL_H_AUTHORIZATION), "");
    pl_http_free(h);
}

static pl_http_t *parse_url(const char *url)
{
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", url);
    pl_http_t *h = pl_http_new();
    size_t used;
    int status;
    CHECK_EQ_INT(pl_http_feed(h, req, strlen(req), &used, &status), PL_HTTP_REQUEST);
    return h;
}

static int query_is(const pl_http_t *h, const char *key, const char *want)
{
    size_t n = 12345;
    const char *v = pl_http_query(h, key, &n);
    if (!want) return v == NULL;
    return v && n == strlen(want) && memcmp(v, want, n) == 0;
}

static void query(void)
{
    pl_http_t *h = parse_url("/ws?token=abc");
    CHECK(query_is(h, "token", "abc"));
    CHECK(query_is(h, "tok", NULL));
    CHECK(query_is(h, "tokens", NULL));
    CHECK(query_is(h, "oken", NULL));
    pl_http_free(h);

    h = parse_url("/ws?xtoken=bad&token=good&tokenx=bad2");
    CHECK(query_is(h, "token", "good"));
    CHECK(query_is(h, "xtoken", "bad"));
    CHECK(query_is(h, "tokenx", "bad2"));
    pl_http_free(h);

    h = parse_url("/ws?xtoken=only");
    CHECK(query_is(h, "token", NULL)); /* a key prefix is not the key */
    pl_http_free(h);

    h = parse_url("/ws?a=1&token=&b=2");
    CHECK(query_is(h, "token", ""));
    CHECK(query_is(h, "a", "1"));
    CHECK(query_is(h, "b", "2"));
    pl_http_free(h);

    h = parse_url("/ws");
    CHECK(query_is(h, "token", NULL));
    const char *path;
    size_t plen;
    pl_http_path(h, &path, &plen);
    CHECK(plen == 3 && memcmp(path, "/ws", 3) == 0);
    pl_http_free(h);

    h = parse_url("/ws?");
    CHECK(query_is(h, "token", NULL));
    pl_http_path(h, &path, &plen);
    CHECK_EQ_INT(plen, 3);
    pl_http_free(h);

    h = parse_url("/ws?token");
    CHECK(query_is(h, "token", NULL)); /* no '=' */
    pl_http_free(h);

    h = parse_url("/api/websocket/token?token=a.b.c");
    pl_http_path(h, &path, &plen);
    CHECK(plen == 20 && memcmp(path, "/api/websocket/token", 20) == 0);
    CHECK(query_is(h, "token", "a.b.c"));
    pl_http_free(h);
}

static void post_with_body(void)
{
    const char *req = "POST /api/websocket/token HTTP/1.1\r\n"
                      "Host: h\r\n"
                      "Authorization: Bearer key\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: 19\r\n"
                      "\r\n"
                      "{\"user_id\":\"alice\"}";
    size_t n = strlen(req);
    for (size_t k = 0; k <= n; k += (k < n - 30 ? 7 : 1)) { /* a few split points */
        pl_http_t *h = pl_http_new();
        size_t used = 0, total = 0;
        int status;
        pl_http_result_t r = pl_http_feed(h, req, k, &used, &status);
        total += used;
        if (k < n) {
            CHECK_EQ_INT(r, PL_HTTP_MORE);
            r = pl_http_feed(h, req + k, n - k, &used, &status);
            total += used;
        }
        CHECK_EQ_INT(r, PL_HTTP_REQUEST);
        CHECK_EQ_INT(total, n);
        CHECK_EQ_INT(pl_http_method(h), HTTP_POST);
        CHECK(h->body.len == 19 && memcmp(h->body.data, "{\"user_id\":\"alice\"}", 19) == 0);
        CHECK_STR(hdr(h, PL_H_AUTHORIZATION), "Bearer key");
        pl_http_free(h);
    }
    /* chunked body */
    req = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    pl_http_t *h = pl_http_new();
    size_t used;
    int status;
    CHECK_EQ_INT(pl_http_feed(h, req, strlen(req), &used, &status), PL_HTTP_REQUEST);
    CHECK(h->body.len == 5 && memcmp(h->body.data, "abcde", 5) == 0);
    pl_http_free(h);
}

static void body_too_large(void)
{
    char head[128];
    size_t blen = PL_HTTP_MAX_BODY + 1;
    int hl = snprintf(head, sizeof head, "POST /x HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", blen);
    char *req = malloc((size_t)hl + blen);
    memcpy(req, head, (size_t)hl);
    memset(req + hl, 'b', blen);
    pl_http_t *h = pl_http_new();
    size_t used;
    int status = 0;
    CHECK_EQ_INT(pl_http_feed(h, req, (size_t)hl + blen, &used, &status), PL_HTTP_ERROR);
    CHECK_EQ_INT(status, 413);
    pl_http_free(h);
    /* exactly the limit is fine */
    snprintf(head, sizeof head, "POST /x HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", blen - 1);
    hl = (int)strlen(head);
    memcpy(req, head, (size_t)hl);
    memset(req + hl, 'b', blen - 1);
    h = pl_http_new();
    CHECK_EQ_INT(pl_http_feed(h, req, (size_t)hl + blen - 1, &used, &status), PL_HTTP_REQUEST);
    CHECK_EQ_INT(h->body.len, blen - 1);
    pl_http_free(h);
    free(req);
}

static const char UPGRADE[] = "GET /ws?token=t HTTP/1.1\r\n"
                              "Host: localhost\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "\r\n";

static void upgrade(void)
{
    /* the head, then the first WebSocket frame in the same read */
    const char frame[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    size_t hl = strlen(UPGRADE);
    char buf[512];
    memcpy(buf, UPGRADE, hl);
    memcpy(buf + hl, frame, sizeof frame - 1);
    char copy[512];
    memcpy(copy, buf, hl + sizeof frame - 1);

    pl_http_t *h = pl_http_new();
    size_t used = 0;
    int status;
    CHECK_EQ_INT(pl_http_feed(h, buf, hl + sizeof frame - 1, &used, &status), PL_HTTP_UPGRADE);
    CHECK_EQ_INT(used, hl);
    CHECK(memcmp(buf, copy, hl + sizeof frame - 1) == 0); /* input untouched */
    CHECK_STR(hdr(h, PL_H_UPGRADE), "websocket");
    CHECK_STR(hdr(h, PL_H_SEC_WEBSOCKET_KEY), "dGhlIHNhbXBsZSBub25jZQ==");
    CHECK_STR(hdr(h, PL_H_SEC_WEBSOCKET_VERSION), "13");
    CHECK(query_is(h, "token", "t"));
    pl_http_free(h);

    /* exactly the head */
    h = pl_http_new();
    CHECK_EQ_INT(pl_http_feed(h, UPGRADE, hl, &used, &status), PL_HTTP_UPGRADE);
    CHECK_EQ_INT(used, hl);
    pl_http_free(h);

    /* byte by byte: MORE until the last byte of the head */
    h = pl_http_new();
    int bad = 0;
    for (size_t i = 0; i < hl; i++) {
        pl_http_result_t r = pl_http_feed(h, buf + i, 1, &used, &status);
        bad += i + 1 < hl ? r != PL_HTTP_MORE : r != PL_HTTP_UPGRADE || used != 1;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_STR(hdr(h, PL_H_SEC_WEBSOCKET_KEY), "dGhlIHNhbXBsZSBub25jZQ==");
    pl_http_free(h);
}

static void pipelined(void)
{
    const char *r1 = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *r2 = "POST /api/websocket/token HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}";
    const char *r3 = "GET /three?token=3 HTTP/1.1\r\nHost: c\r\n\r\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s%s", r1, r2, r3);
    size_t n = strlen(buf), off = 0, used;
    int status;
    pl_http_t *h = pl_http_new();

    CHECK_EQ_INT(pl_http_feed(h, buf, n, &used, &status), PL_HTTP_REQUEST);
    CHECK_EQ_INT(used, strlen(r1));
    const char *path;
    size_t plen;
    pl_http_path(h, &path, &plen);
    CHECK(plen == 7 && memcmp(path, "/health", 7) == 0);
    CHECK_STR(hdr(h, PL_H_HOST), "a");
    CHECK_EQ_INT(pl_http_method(h), HTTP_GET);
    off += used;

    pl_http_next(h);
    CHECK(pl_http_header(h, PL_H_HOST) == NULL); /* reset */
    CHECK_EQ_INT(pl_http_feed(h, buf + off, n - off, &used, &status), PL_HTTP_REQUEST);
    CHECK_EQ_INT(used, strlen(r2));
    pl_http_path(h, &path, &plen);
    CHECK(plen == 20 && memcmp(path, "/api/websocket/token", 20) == 0);
    CHECK_STR(hdr(h, PL_H_HOST), "b");
    CHECK_EQ_INT(pl_http_method(h), HTTP_POST);
    CHECK(h->body.len == 2 && memcmp(h->body.data, "{}", 2) == 0);
    off += used;

    pl_http_next(h);
    CHECK_EQ_INT(pl_http_feed(h, buf + off, n - off, &used, &status), PL_HTTP_REQUEST);
    CHECK_EQ_INT(used, strlen(r3));
    CHECK(query_is(h, "token", "3"));
    CHECK_STR(hdr(h, PL_H_HOST), "c");
    CHECK_EQ_INT(h->body.len, 0);
    off += used;
    CHECK_EQ_INT(off, n);

    /* a fourth arriving later in two pieces */
    pl_http_next(h);
    CHECK_EQ_INT(pl_http_feed(h, "GET /four HT", 12, &used, &status), PL_HTTP_MORE);
    CHECK_EQ_INT(pl_http_feed(h, "TP/1.1\r\n\r\n", 10, &used, &status), PL_HTTP_REQUEST);
    pl_http_path(h, &path, &plen);
    CHECK(plen == 5 && memcmp(path, "/four", 5) == 0);
    pl_http_free(h);
}

static void keep_alive(void)
{
    pl_http_t *h = pl_http_new();
    size_t used;
    int status;
    const char *r = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    CHECK_EQ_INT(pl_http_feed(h, r, strlen(r), &used, &status), PL_HTTP_REQUEST);
    CHECK(!pl_http_keep_alive(h));
    pl_http_free(h);
    h = pl_http_new();
    r = "GET / HTTP/1.0\r\n\r\n";
    CHECK_EQ_INT(pl_http_feed(h, r, strlen(r), &used, &status), PL_HTTP_REQUEST);
    CHECK(!pl_http_keep_alive(h));
    pl_http_free(h);
}

static void garbage(void)
{
    const char *bad[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
        "HELLO\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pl_http_t *h = pl_http_new();
        size_t used = 0;
        int status = 0;
        pl_http_result_t r = pl_http_feed(h, bad[i], strlen(bad[i]), &used, &status);
        if (r != PL_HTTP_ERROR || status != 400)
            printf("  case %zu: r %d status %d\n", i, r, status);
        CHECK_EQ_INT(r, PL_HTTP_ERROR);
        CHECK_EQ_INT(status, 400);
        pl_http_free(h);
    }
    /* garbage after a good pipelined request */
    const char *two = "GET / HTTP/1.1\r\n\r\nXYZ\x01\r\n\r\n";
    pl_http_t *h = pl_http_new();
    size_t used;
    int status = 0;
    CHECK_EQ_INT(pl_http_feed(h, two, strlen(two), &used, &status), PL_HTTP_REQUEST);
    pl_http_next(h);
    CHECK_EQ_INT(pl_http_feed(h, two + used, strlen(two) - used, &used, &status), PL_HTTP_ERROR);
    CHECK_EQ_INT(status, 400);
    pl_http_free(h);
}

/* Feed `req` whole and expect ERROR 431. */
static int expect_431(const char *req, size_t n)
{
    pl_http_t *h = pl_http_new();
    size_t used = 0;
    int status = 0;
    pl_http_result_t r = pl_http_feed(h, req, n, &used, &status);
    if (r != PL_HTTP_ERROR || status != 431)
        printf("  head of %zu bytes: result %d status %d\n", n, r, status);
    pl_http_free(h);
    return r == PL_HTTP_ERROR && status == 431;
}

static void head_too_large(void)
{
    char *req = malloc(4 * PL_HTTP_MAX_HEAD);
    size_t n;
    /* one huge header value */
    n = (size_t)sprintf(req, "GET / HTTP/1.1\r\nCookie: ");
    memset(req + n, 'c', PL_HTTP_MAX_HEAD);
    n += PL_HTTP_MAX_HEAD;
    n += (size_t)sprintf(req + n, "\r\n\r\n");
    CHECK(expect_431(req, n));
    /* a huge URL */
    n = (size_t)sprintf(req, "GET /");
    memset(req + n, 'u', PL_HTTP_MAX_HEAD);
    n += PL_HTTP_MAX_HEAD;
    n += (size_t)sprintf(req + n, " HTTP/1.1\r\n\r\n");
    CHECK(expect_431(req, n));
    /* too large even when it arrives byte by byte, before the head ends */
    {
        pl_http_t *h = pl_http_new();
        size_t used;
        int status = 0;
        pl_http_result_t r = PL_HTTP_MORE;
        size_t i;
        for (i = 0; i < n && r == PL_HTTP_MORE; i++)
            r = pl_http_feed(h, req + i, 1, &used, &status);
        CHECK_EQ_INT(r, PL_HTTP_ERROR);
        CHECK_EQ_INT(status, 431);
        CHECK(i <= PL_HTTP_MAX_HEAD + 16); /* refused about when the limit is crossed */
        pl_http_free(h);
    }
    /* a head just under the limit is fine */
    n = (size_t)sprintf(req, "GET / HTTP/1.1\r\nCookie: ");
    memset(req + n, 'c', PL_HTTP_MAX_HEAD - 200);
    n += PL_HTTP_MAX_HEAD - 200;
    n += (size_t)sprintf(req + n, "\r\n\r\n");
    {
        pl_http_t *h = pl_http_new();
        size_t used;
        int status;
        CHECK_EQ_INT(pl_http_feed(h, req, n, &used, &status), PL_HTTP_REQUEST);
        pl_http_free(h);
    }
    free(req);
}

/* PL_HTTP_MAX_HEAD is "the longest request head (request line and headers)".
 * A head of many short headers is over it just as much as one long header. */
static void head_of_many_short_headers_too_large(void)
{
    char *req = malloc(4 * PL_HTTP_MAX_HEAD);
    size_t n = (size_t)sprintf(req, "GET / HTTP/1.1\r\n");
    while (n < 2 * PL_HTTP_MAX_HEAD)
        n += (size_t)sprintf(req + n, "a: b\r\n");
    n += (size_t)sprintf(req + n, "\r\n");
    CHECK(expect_431(req, n)); /* 16 KiB of head */
    free(req);
}

static void respond(void)
{
    pl_buf_t b = {0};
    pl_http_respond(&b, 200, "application/json", "{\"ok\":1}", 8, 1);
    CHECK_STR(b.data, "HTTP/1.1 200 OK\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: 8\r\n"
                      "Cache-Control: no-store\r\n"
                      "Connection: keep-alive\r\n"
                      "\r\n"
                      "{\"ok\":1}");
    CHECK_EQ_INT(b.len, strlen(b.data));
    pl_buf_reset(&b);
    pl_http_respond(&b, 404, "application/json", "{\"error\":\"not_found\"}xx", 21, 0);
    CHECK_STR(b.data, "HTTP/1.1 404 Not Found\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: 21\r\n"
                      "Cache-Control: no-store\r\n"
                      "Connection: close\r\n"
                      "\r\n"
                      "{\"error\":\"not_found\"}");
    pl_buf_reset(&b);
    pl_http_respond(&b, 503, "text/plain", "", 0, 0);
    CHECK(strncmp(b.data, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    CHECK(strstr(b.data, "\r\nContent-Length: 0\r\n") != NULL);
    CHECK(b.len >= 4 && memcmp(b.data + b.len - 4, "\r\n\r\n", 4) == 0);
    /* appends after what is there; binary-safe body */
    pl_buf_reset(&b);
    pl_buf_adds(&b, "PREV");
    pl_http_respond(&b, 400, "application/octet-stream", "a\0b", 3, 1);
    CHECK(strncmp(b.data, "PREVHTTP/1.1 400 Bad Request\r\n", 30) == 0);
    CHECK(b.len >= 3 && memcmp(b.data + b.len - 3, "a\0b", 3) == 0);
    pl_buf_free(&b);

    CHECK_STR(pl_http_reason(101), "Switching Protocols");
    CHECK_STR(pl_http_reason(401), "Unauthorized");
    CHECK_STR(pl_http_reason(413), "Payload Too Large");
    CHECK_STR(pl_http_reason(431), "Request Header Fields Too Large");
}

/* Parse with llhttp the bytes we produce, as a client would. */
static size_t client_body;
static int client_done;
static int on_client_body(llhttp_t *p, const char *at, size_t n)
{
    client_body += n;
    return 0;
}
static int on_client_done(llhttp_t *p)
{
    client_done++;
    return 0;
}

static void respond_parses(void)
{
    pl_buf_t b = {0};
    pl_http_respond(&b, 401, "application/json", "{\"error\":\"unauthorized\"}", 24, 1);
    llhttp_t p;
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_body = on_client_body;
    s.on_message_complete = on_client_done;
    llhttp_init(&p, HTTP_RESPONSE, &s);
    CHECK_EQ_INT(llhttp_execute(&p, b.data, b.len), HPE_OK);
    CHECK_EQ_INT(p.status_code, 401);
    CHECK_EQ_INT(client_done, 1); /* complete without waiting for EOF */
    CHECK_EQ_INT(client_body, 24);
    pl_buf_free(&b);
}

int main(void)
{
    RUN(get_one_chunk);
    RUN(get_byte_by_byte);
    RUN(headers_case_insensitive);
    RUN(query);
    RUN(post_with_body);
    RUN(body_too_large);
    RUN(upgrade);
    RUN(pipelined);
    RUN(keep_alive);
    RUN(garbage);
    RUN(head_too_large);
    RUN(head_of_many_short_headers_too_large);
    RUN(respond);
    RUN(respond_parses);
    UNIT_EXIT();
}
