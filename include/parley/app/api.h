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

#endif
