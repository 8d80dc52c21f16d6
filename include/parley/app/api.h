/*
 * api: the HTTP endpoints (health, status, token minting) and the checks of
 * a WebSocket upgrade request. Answers go out through the connection's
 * output queue like any other bytes.
 */
#ifndef PARLEY_API_H
#define PARLEY_API_H

#include "parley/app/conn.h"

/** pl_api_handle's answer when the response will come later (pl_conn_http_wait was called). */
#define PL_API_ASYNC 2

/**
 * Answer the plain HTTP request parsed in c->http. Returns 1 to keep the
 * connection, 0 to close it, or PL_API_ASYNC when the answer needs the
 * database: the caller then hands the unread rest to pl_conn_http_wait.
 */
int pl_api_handle(pl_conn_t *c);

/**
 * The request in c->http asks for an upgrade: check it, answer 101 and
 * authenticate from the token if one came with it. Returns 0 if the
 * connection is now a WebSocket, -1 if an error response was queued (the
 * caller closes).
 */
int pl_api_upgrade(pl_conn_t *c);

/** Queue a JSON error response {"error":code,"message":msg}. */
void pl_api_error(pl_conn_t *c, int status, const char *code, const char *msg, int keep_alive);

#endif
