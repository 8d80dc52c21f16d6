/* http: llhttp callbacks that keep only what Parley needs; see the header. */
#include "parley/proto/http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const kept_names[PL_H_COUNT] = {
    [PL_H_AUTHORIZATION] = "authorization",
    [PL_H_HOST] = "host",
    [PL_H_UPGRADE] = "upgrade",
    [PL_H_SEC_WEBSOCKET_KEY] = "sec-websocket-key",
    [PL_H_SEC_WEBSOCKET_VERSION] = "sec-websocket-version",
    [PL_H_X_FORWARDED_PROTO] = "x-forwarded-proto",
    [PL_H_X_FORWARDED_HOST] = "x-forwarded-host",
    [PL_H_X_FORWARDED_FOR] = "x-forwarded-for",
    [PL_H_IF_NONE_MATCH] = "if-none-match",
    [PL_H_IF_MODIFIED_SINCE] = "if-modified-since",
    [PL_H_ORIGIN] = "origin",
};

static pl_http_t *of(llhttp_t *p)
{
    return p->data;
}

static int count_head(pl_http_t *h, size_t n)
{
    h->head_bytes += n;
    if (h->head_bytes > h->max_head) {
        h->too_large = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    of(p)->in_request = 1;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    pl_http_t *h = of(p);
    if (count_head(h, n)) return -1;
    pl_buf_add(&h->url, at, n);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    pl_http_t *h = of(p);
    if (count_head(h, n)) return -1;
    pl_buf_add(&h->field, at, n);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    pl_http_t *h = of(p);
    /* ": " and CRLF count too: many short headers are as large a head as one long one. */
    if (count_head(h, 4)) return -1;
    h->cur_hdr = -1;
    for (int i = 0; i < PL_H_COUNT; i++)
        if (strcasecmp(h->field.data ? h->field.data : "", kept_names[i]) == 0) {
            h->cur_hdr = i;
            /* A repeated header: the last one wins. */
            h->hdr[i] = (int)h->strs.len;
            pl_buf_add(&h->strs, "", 0);
            break;
        }
    pl_buf_reset(&h->field);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    pl_http_t *h = of(p);
    if (count_head(h, n)) return -1;
    if (h->cur_hdr >= 0) pl_buf_add(&h->strs, at, n);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    pl_http_t *h = of(p);
    if (h->cur_hdr >= 0) {
        /* Values are NUL-separated in strs; pl_buf keeps a NUL after len. */
        h->strs.len++;
        pl_buf_reserve(&h->strs, 0);
        h->strs.data[h->strs.len] = '\0';
    }
    h->cur_hdr = -1;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    pl_http_t *h = of(p);
    if (h->body.len + n > h->max_body) {
        h->too_large = 413;
        return -1;
    }
    pl_buf_add(&h->body, at, n);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    of(p)->complete = 1;
    return HPE_PAUSED; /* answer this request before parsing the next */
}

/* Fixed at compile time: shared read-only by every shard thread. */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

pl_http_t *pl_http_new(void)
{
    pl_http_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    llhttp_init(&h->parser, HTTP_REQUEST, &settings);
    h->parser.data = h;
    h->max_head = PL_HTTP_MAX_HEAD;
    h->max_body = PL_HTTP_MAX_BODY;
    pl_http_next(h);
    return h;
}

void pl_http_free(pl_http_t *h)
{
    if (!h) return;
    pl_buf_free(&h->url);
    pl_buf_free(&h->body);
    pl_buf_free(&h->strs);
    pl_buf_free(&h->field);
    pl_buf_free(&h->stash);
    free(h);
}

void pl_http_next(pl_http_t *h)
{
    pl_buf_reset(&h->url);
    pl_buf_reset(&h->body);
    pl_buf_reset(&h->strs);
    pl_buf_reset(&h->field);
    for (int i = 0; i < PL_H_COUNT; i++)
        h->hdr[i] = -1;
    h->cur_hdr = -1;
    h->head_bytes = 0;
    h->complete = 0;
    h->in_request = 0;
    h->too_large = 0;
    if (llhttp_get_errno(&h->parser) == HPE_PAUSED) llhttp_resume(&h->parser);
}

pl_http_result_t pl_http_feed(pl_http_t *h, const char *p, size_t len, size_t *used, int *status)
{
    llhttp_errno_t e = llhttp_execute(&h->parser, p, len);
    if (e == HPE_OK) {
        *used = len;
        return PL_HTTP_MORE;
    }
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        *used = (size_t)(llhttp_get_error_pos(&h->parser) - p);
        if (h->complete && h->parser.upgrade) return PL_HTTP_UPGRADE;
        if (h->complete) return PL_HTTP_REQUEST;
    }
    *used = len;
    *status = h->too_large ? h->too_large : 400;
    return PL_HTTP_ERROR;
}

const char *pl_http_header(const pl_http_t *h, int which)
{
    return h->hdr[which] < 0 ? NULL : h->strs.data + h->hdr[which];
}

int pl_http_method(const pl_http_t *h)
{
    return h->parser.method;
}

int pl_http_keep_alive(const pl_http_t *h)
{
    return llhttp_should_keep_alive(&h->parser);
}

void pl_http_path(const pl_http_t *h, const char **path, size_t *path_len)
{
    const char *u = h->url.data ? h->url.data : "";
    const char *q = strchr(u, '?');
    *path = u;
    *path_len = q ? (size_t)(q - u) : strlen(u);
}

const char *pl_http_query(const pl_http_t *h, const char *key, size_t *len)
{
    const char *q = h->url.data ? strchr(h->url.data, '?') : NULL;
    size_t klen = strlen(key);
    while (q) {
        q++;
        const char *end = strchr(q, '&');
        size_t n = end ? (size_t)(end - q) : strlen(q);
        if (n > klen && strncmp(q, key, klen) == 0 && q[klen] == '=') {
            *len = n - klen - 1;
            return q + klen + 1;
        }
        q = end;
    }
    return NULL;
}

const char *pl_http_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

void pl_http_head(pl_buf_t *out, int status, const char *content_type, size_t body_len,
                  const char *extra, int keep_alive)
{
    pl_buf_printf(out, "HTTP/1.1 %d %s\r\n", status, pl_http_reason(status));
    if (content_type) pl_buf_printf(out, "Content-Type: %s\r\n", content_type);
    pl_buf_printf(out, "Content-Length: %zu\r\n%sConnection: %s\r\n\r\n", body_len,
                  extra ? extra : "", keep_alive ? "keep-alive" : "close");
}

void pl_http_respond(pl_buf_t *out, int status, const char *content_type, const char *body,
                     size_t body_len, int keep_alive)
{
    pl_http_head(out, status, content_type, body_len, "Cache-Control: no-store\r\n", keep_alive);
    pl_buf_add(out, body, body_len);
}
