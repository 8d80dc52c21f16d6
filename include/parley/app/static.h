/*
 * static: the files of PARLEY_WEB_ROOT (the web app, web/) served at `/`.
 *
 * GET and HEAD only (anything else: 405); content types by extension;
 * `ETag` and `Last-Modified`, answered with 304 when the client's copy is
 * current; `Cache-Control: no-cache`, so browsers revalidate and an updated
 * app is picked up at once. A path never leads outside the root: it is
 * percent-decoded, refused if it holds a NUL, a `.` or `..` segment or a
 * hidden name, and the file is opened beneath the root's directory with
 * openat2(RESOLVE_BENEATH), so no symlink leads out either; all of these are
 * 404, like a missing file.
 *
 * Files are read on the loop's thread with plain read(2): they are meant to
 * be the app's few small files (at most PL_STATIC_MAX_FILE). A cluster
 * serves web/ from nginx instead (deploy/nginx.conf).
 *
 * Ownership: the server creates one pl_static_t at start-up (before the
 * loops run) and frees it after they have stopped; loops only read it.
 */
#ifndef PARLEY_APP_STATIC_H
#define PARLEY_APP_STATIC_H

#include <stddef.h>

#include "parley/proto/conn.h"

/** Largest file served, bytes. */
#define PL_STATIC_MAX_FILE (8u << 20)

/** The web root. */
typedef struct pl_static pl_static_t;

/** Open `root` (a directory). NULL with a message in `err` if it cannot be used. */
pl_static_t *pl_static_new(const char *root, char *err, size_t err_size);

/** Close it. NULL is fine. */
void pl_static_free(pl_static_t *st);

/**
 * Answer the request on `c` for `path[0..len)` (the URL's path, undecoded) with `method`
 * (llhttp_method_t). Returns PL_CONN_REQ_KEEP or PL_CONN_REQ_CLOSE, as `keep` and the outcome
 * allow.
 */
int pl_static_serve(const pl_static_t *st, pl_conn_t *c, int method, const char *path, size_t len,
                    int keep);

/** The content type served for a file name (by its extension). */
const char *pl_static_type(const char *name);

#endif
