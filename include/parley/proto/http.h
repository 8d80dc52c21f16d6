/*
 * http: HTTP/1.1 request parsing (llhttp) for the plain HTTP endpoints and
 * the WebSocket upgrade, and response formatting.
 *
 * A pl_http_t exists only while a connection speaks HTTP: it is allocated at
 * accept and freed by the connection at upgrade or close. It keeps the one
 * request being parsed: the parser pauses after each request so the
 * connection answers it before parsing a pipelined next one.
 */
#ifndef PARLEY_PROTO_HTTP_H
#define PARLEY_PROTO_HTTP_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

#include "parley/base/buf.h"

/** Longest request head (request line and headers) accepted by default, bytes
 *  (PARLEY_HTTP_MAX_HEADER; pl_http_t.max_head). */
#define PL_HTTP_MAX_HEAD 8192
/** Longest request body accepted by default, bytes (PARLEY_HTTP_MAX_BODY; max_body). */
#define PL_HTTP_MAX_BODY 8192

/** The headers Parley looks at; each is an offset into `strs` (or -1 if absent). */
enum {
    PL_H_AUTHORIZATION,
    PL_H_HOST,
    PL_H_UPGRADE,
    PL_H_SEC_WEBSOCKET_KEY,
    PL_H_SEC_WEBSOCKET_VERSION,
    PL_H_X_FORWARDED_PROTO, /**< believed only from PARLEY_TRUSTED_PROXIES */
    PL_H_X_FORWARDED_HOST,  /**< likewise */
    PL_H_X_FORWARDED_FOR,   /**< likewise: the client's address behind a proxy */
    PL_H_IF_NONE_MATCH,     /**< static files: revalidation by ETag */
    PL_H_IF_MODIFIED_SINCE, /**< static files: revalidation by date */
    PL_H_ORIGIN,            /**< a browser's page origin, on a WebSocket upgrade */
    PL_H_COUNT
};

/** One connection's HTTP parsing state and its current request. */
typedef struct {
    llhttp_t parser;
    pl_buf_t url;
    pl_buf_t body;
    pl_buf_t strs;       /**< NUL-separated values of the headers we keep */
    pl_buf_t field;      /**< header name being parsed */
    int hdr[PL_H_COUNT]; /**< offsets into strs, -1 if absent */
    int cur_hdr;         /**< which kept header the value being parsed belongs to, or -1 */
    size_t head_bytes;
    int complete;     /**< a whole request has been parsed */
    int in_request;   /**< a request's first byte has been parsed (and it is not answered yet) */
    int served;       /**< requests answered on this connection (the connection counts them) */
    uint64_t mark_ms; /**< the connection's clock: since when it waits for the request, or idles */
    pl_buf_t stash;   /**< bytes read after a request whose answer is pending */
    int too_large;
    size_t max_head; /**< longer request heads get 431 (PL_HTTP_MAX_HEAD unless changed) */
    size_t max_body; /**< longer bodies get 413 (PL_HTTP_MAX_BODY unless changed) */
} pl_http_t;

/** Outcome of pl_http_feed. */
typedef enum {
    PL_HTTP_MORE,    /**< all bytes consumed, no whole request yet */
    PL_HTTP_REQUEST, /**< a request is ready; answer it, then pl_http_next */
    PL_HTTP_UPGRADE, /**< a request with Upgrade is ready; bytes after it are not HTTP */
    PL_HTTP_ERROR,   /**< malformed: answer 400 (or 413/431) and close */
} pl_http_result_t;

/** A new parser, or NULL. */
pl_http_t *pl_http_new(void);
/** Free it. */
void pl_http_free(pl_http_t *h);

/**
 * Parse `p[0..len)`. Sets *used to the bytes consumed; on PL_HTTP_REQUEST or
 * PL_HTTP_UPGRADE the rest has not been looked at. On PL_HTTP_ERROR, *status
 * is the status to answer with.
 */
pl_http_result_t pl_http_feed(pl_http_t *h, const char *p, size_t len, size_t *used, int *status);

/** After answering a request: reset for the next one on the same connection. */
void pl_http_next(pl_http_t *h);

/** A kept header's value, or NULL. */
const char *pl_http_header(const pl_http_t *h, int which);
/** The request method (llhttp_method_t). */
int pl_http_method(const pl_http_t *h);
/** 1 if the client asked to keep the connection open. */
int pl_http_keep_alive(const pl_http_t *h);
/**
 * The path (URL up to '?') into `path` and the value of query parameter
 * `key` into `val` (empty if absent; percent-decoding not needed for tokens).
 */
void pl_http_path(const pl_http_t *h, const char **path, size_t *path_len);
/** Query parameter `key` of the URL, or NULL; points into the URL (not NUL-terminated at its end).
 */
const char *pl_http_query(const pl_http_t *h, const char *key, size_t *len);

/** Append a complete response with a JSON (or any) body (Cache-Control: no-store). */
void pl_http_respond(pl_buf_t *out, int status, const char *content_type, const char *body,
                     size_t body_len, int keep_alive);
/**
 * Append a response head: status line, Content-Type (omitted if NULL), Content-Length
 * (`body_len`, the length of the body that follows or, answering HEAD, would follow), the
 * header lines in `extra` ("Name: value\r\n" each, may be NULL), Connection, blank line.
 */
void pl_http_head(pl_buf_t *out, int status, const char *content_type, size_t body_len,
                  const char *extra, int keep_alive);
/** The reason phrase of a status code. */
const char *pl_http_reason(int status);

#endif
