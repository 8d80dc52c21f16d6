/*
 * api: the HTTP endpoints (health, status, token minting, history,
 * memberships, online users) and the checks of a WebSocket upgrade
 * (path, token). Answers go out through the connection's output queue like
 * any other bytes; those that need the database or Redis come back later
 * (PL_CONN_REQ_ASYNC).
 */
#ifndef PARLEY_APP_API_H
#define PARLEY_APP_API_H

#include "parley/proto/conn.h"

/** Answer the plain HTTP request in c->http (pl_conn_app_t.on_request). */
int pl_api_request(pl_conn_t *c);

/** A WebSocket handshake in c->http (pl_conn_app_t.on_upgrade): accept it, authenticating from
 *  the token if one came with it, or refuse it with an HTTP error. */
void pl_api_upgrade(pl_conn_t *c);

/**
 * The token a WebSocket upgrade request carries: "Authorization: Bearer <t>", else the query
 * parameter `token`. NULL if it carries none; an empty one counts as none. Points into `h`,
 * not NUL-terminated at *len. Pure: reads `h` only.
 */
const char *pl_api_upgrade_token(const pl_http_t *h, size_t *len);

#endif
