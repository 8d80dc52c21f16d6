/* static: the web root's files; see the header. */
#include "parley/app/static.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "parley/base/log.h"
#include "parley/net/sock.h"

/* Longest decoded path served, bytes. */
#define PATH_MAX_LEN 1024

struct pl_static {
    int dirfd;       /**< the root, opened once (O_PATH) */
    char *real_root; /**< its canonical path, for kernels without openat2 */
};

pl_static_t *pl_static_new(const char *root, char *err, size_t err_size)
{
    int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_size, "PARLEY_WEB_ROOT: cannot open directory %s: %s", root,
                 strerror(errno));
        return NULL;
    }
    pl_static_t *st = calloc(1, sizeof *st);
    char *real = realpath(root, NULL);
    if (!st || !real) {
        snprintf(err, err_size, "PARLEY_WEB_ROOT: %s: %s", root,
                 st ? strerror(errno) : "no memory");
        free(st);
        free(real);
        close(fd);
        return NULL;
    }
    st->dirfd = fd;
    st->real_root = real;
    return st;
}

void pl_static_free(pl_static_t *st)
{
    if (!st) return;
    close(st->dirfd);
    free(st->real_root);
    free(st);
}

const char *pl_static_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".webmanifest", "application/manifest+json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".woff2", "font/woff2"},
        {".woff", "font/woff"},
        {".wasm", "application/wasm"},
        {".txt", "text/plain; charset=utf-8"},
        {".md", "text/plain; charset=utf-8"},
        {".ts", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    const char *slash = strrchr(name, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
    return "application/octet-stream";
}

/*
 * The URL path as a path relative to the root, into out (PATH_MAX_LEN + 1): percent-decoded,
 * "/" -> "index.html", a trailing "/" -> ".../index.html". -1 for anything that could step
 * outside the root or name something hidden: NUL, "." and ".." segments, names starting with
 * ".", a bad escape.
 */
static int relative_path(const char *p, size_t n, char *out)
{
    if (!n || p[0] != '/') return -1;
    size_t o = 0;
    for (size_t i = 1; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '%') {
            unsigned v;
            if (i + 2 >= n) return -1; /* a truncated escape */
            char hex[3] = {p[i + 1], p[i + 2], 0};
            if (!isxdigit((unsigned char)hex[0]) || !isxdigit((unsigned char)hex[1])) return -1;
            v = (unsigned)strtoul(hex, NULL, 16);
            if (v == 0) return -1;
            ch = (unsigned char)v;
            i += 2;
        }
        if (ch == 0 || o >= PATH_MAX_LEN) return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    /* Segments: collapse empty ones ("//"), refuse "." / ".." / hidden names. */
    char *w = out;
    for (char *seg = out; *seg;) {
        char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0) { /* an empty segment */
            seg = end + 1;
            continue;
        }
        if (seg[0] == '.') return -1;
        if (w != out) *w++ = '/';
        memmove(w, seg, len);
        w += len;
        if (!end) break;
        seg = end + 1;
        if (!*seg) { /* a trailing slash: the directory's index */
            *w++ = '/';
            break;
        }
    }
    *w = '\0';
    size_t wl = (size_t)(w - out);
    if (wl == 0 || out[wl - 1] == '/') {
        if (wl + sizeof "index.html" > PATH_MAX_LEN + 1) return -1;
        memcpy(out + wl, "index.html", sizeof "index.html");
    }
    return 0;
}

/* Open rel beneath the root: openat2(RESOLVE_BENEATH) refuses ".." and symlinks that leave it.
 * Kernels before 5.6 (or sandboxes that hide openat2) get the same rule from realpath. */
static int open_beneath(const pl_static_t *st, const char *rel)
{
    struct open_how how = {
        .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, st->dirfd, rel, &how, sizeof how);
    if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return (int)fd;
    char full[PATH_MAX];
    if (snprintf(full, sizeof full, "%s/%s", st->real_root, rel) >= (int)sizeof full) return -1;
    char *real = realpath(full, NULL);
    if (!real) return -1;
    size_t rl = strlen(st->real_root);
    int inside = strncmp(real, st->real_root, rl) == 0 && real[rl] == '/';
    int f = inside ? open(real, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;
    free(real);
    if (!inside) errno = EXDEV;
    return f;
}

static void http_date(time_t t, char out[40])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* 1 if the client's copy (If-None-Match, else If-Modified-Since) is the current one. */
static int not_modified(const pl_http_t *h, const char *etag, time_t mtime)
{
    const char *inm = pl_http_header(h, PL_H_IF_NONE_MATCH);
    if (inm) {
        /* A list of tags, weak or strong; "*" matches any. */
        if (strstr(inm, etag + 2 /* past W/ */) || strcmp(inm, "*") == 0) return 1;
        return 0;
    }
    const char *ims = pl_http_header(h, PL_H_IF_MODIFIED_SINCE);
    if (ims) {
        struct tm tm = {0};
        const char *end = strptime(ims, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (end && !*end) return timegm(&tm) >= mtime;
    }
    return 0;
}

/* Send a whole response: the head, then (unless HEAD or 304) the body. */
static void send_response(pl_conn_t *c, int status, const char *type, const char *extra,
                          const char *body, size_t len, int with_body, int keep)
{
    pl_buf_t out = {0};
    pl_http_head(&out, status, type, len, extra, keep);
    if (with_body) pl_buf_add(&out, body, len);
    if (!out.data) {
        pl_conn_abort(c, "out of memory");
        return;
    }
    pl_sock_send_bytes(&c->sock, out.data, out.len);
    pl_buf_free(&out);
}

static int not_found(pl_conn_t *c, int keep)
{
    pl_conn_http_error(c, 404, "not_found", "no such file", keep);
    return keep ? PL_CONN_REQ_KEEP : PL_CONN_REQ_CLOSE;
}

int pl_static_serve(const pl_static_t *st, pl_conn_t *c, int method, const char *path, size_t len,
                    int keep)
{
    if (method != HTTP_GET && method != HTTP_HEAD) {
        pl_buf_t b = {0};
        pl_buf_adds(&b, "{\"error\":\"method_not_allowed\",\"message\":\"static files: GET or "
                        "HEAD\"}");
        send_response(c, 405, "application/json", "Allow: GET, HEAD\r\nCache-Control: no-store\r\n",
                      b.data, b.len, 1, keep);
        pl_buf_free(&b);
        return keep ? PL_CONN_REQ_KEEP : PL_CONN_REQ_CLOSE;
    }
    char rel[PATH_MAX_LEN + sizeof "index.html"];
    if (relative_path(path, len, rel) != 0) return not_found(c, keep);
    int fd = open_beneath(st, rel);
    if (fd < 0) {
        /* Missing, outside the root, or unreadable: the same answer for each, so probing
         * learns nothing; only what is not plain absence is worth a debug line. */
        if (errno != ENOENT && errno != ENOTDIR)
            pl_debug("static: %s: %s", rel,
                     errno == EXDEV ? "outside the web root" : strerror(errno));
        return not_found(c, keep);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return not_found(c, keep);
    }
    if ((size_t)sb.st_size > PL_STATIC_MAX_FILE) {
        close(fd);
        pl_warn("static: %s is %lld bytes, more than the %u served here; serve the web root from "
                "nginx",
                rel, (long long)sb.st_size, PL_STATIC_MAX_FILE);
        pl_conn_http_error(c, 500, "internal", "file too large for the built-in server", keep);
        return keep ? PL_CONN_REQ_KEEP : PL_CONN_REQ_CLOSE;
    }
    /* Weak: the tag comes from size and modification time, not the bytes. */
    char etag[64], date[40], extra[512];
    snprintf(etag, sizeof etag, "W/\"%llx-%llx\"", (unsigned long long)sb.st_size,
             (unsigned long long)sb.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)sb.st_mtim.tv_nsec);
    http_date(sb.st_mtim.tv_sec, date);
    const char *type = pl_static_type(rel);
    /* The page talks to this server only (its API and WebSocket); nothing inline, no frames. */
    int html = strncmp(type, "text/html", 9) == 0;
    snprintf(extra, sizeof extra,
             "ETag: %s\r\nLast-Modified: %s\r\nCache-Control: no-cache\r\n"
             "X-Content-Type-Options: nosniff\r\n%s",
             etag, date,
             html ? "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; "
                    "img-src 'self' data:; frame-ancestors 'none'\r\n"
                  : "");
    if (not_modified(c->http, etag, sb.st_mtim.tv_sec)) {
        close(fd);
        pl_buf_t out = {0};
        /* 304: no body and no Content-Length promise about one */
        pl_buf_printf(&out, "HTTP/1.1 304 Not Modified\r\n%sConnection: %s\r\n\r\n", extra,
                      keep ? "keep-alive" : "close");
        pl_sock_send_bytes(&c->sock, out.data, out.len);
        pl_buf_free(&out);
        return keep ? PL_CONN_REQ_KEEP : PL_CONN_REQ_CLOSE;
    }
    size_t size = (size_t)sb.st_size;
    char *body = NULL;
    if (method == HTTP_GET && size) {
        body = malloc(size);
        size_t got = 0;
        while (body && got < size) {
            ssize_t r = read(fd, body + got, size - got);
            if (r > 0)
                got += (size_t)r;
            else if (r < 0 && errno == EINTR)
                continue;
            else
                break;
        }
        if (!body || got != size) {
            pl_warn("static: reading %s: %s", rel, body ? "short read" : "no memory");
            free(body);
            close(fd);
            pl_conn_http_error(c, 500, "internal", "could not read the file", keep);
            return keep ? PL_CONN_REQ_KEEP : PL_CONN_REQ_CLOSE;
        }
    }
    close(fd);
    send_response(c, 200, type, extra, body, size, method == HTTP_GET, keep);
    free(body);
    return keep ? PL_CONN_REQ_KEEP : PL_CONN_REQ_CLOSE;
}
