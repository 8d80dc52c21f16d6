/* api: HTTP endpoints and upgrade checks; see the header. */
#include "parley/app/kv.h"
#include "parley/app/api.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parley/app/chat.h"
#include "parley/app/metrics.h"
#include "parley/app/server.h"
#include "parley/app/session.h"
#include "parley/app/shard.h"
#include "parley/app/static.h"
#include "parley/base/clock.h"
#include "parley/base/jwt.h"
#include "parley/base/log.h"
#include "parley/proto/ws.h"
#include "parley/svc/db.h"
#include "parley/svc/script.h"

static void respond(pl_conn_t *c, int status, const pl_buf_t *body, int keep_alive)
{
    pl_conn_respond(c, status, "application/json", body->data, body->len, keep_alive);
}

#define api_error pl_conn_http_error

static int path_is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

/* The credential of "Authorization: Bearer <x>", or NULL. */
static const char *bearer(const pl_http_t *h, size_t *len)
{
    const char *a = pl_http_header(h, PL_H_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7) != 0) return NULL;
    a += 7;
    while (*a == ' ')
        a++;
    *len = strlen(a);
    while (*len && a[*len - 1] == ' ')
        (*len)--;
    return *len ? a : NULL;
}

/* Constant-time comparison, so the API key cannot be guessed byte by byte. */
static int secret_eq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char d = alen != blen;
    for (size_t i = 0; i < alen; i++)
        d |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
    return d == 0;
}

/* The database's part of /health and the status: "database":"up"|"down"|"none" and the queue of
 * messages waiting to be stored. */
static const char *db_state(pl_server_t *srv)
{
    return !srv->db ? "none" : pl_db_up(srv->db) ? "up" : "down";
}

static void db_json(pl_buf_t *b, pl_server_t *srv)
{
    pl_buf_printf(b, ",\"database\":\"%s\",\"db_queue\":%zu", db_state(srv),
                  srv->db ? pl_db_store_pending(srv->db) : 0);
}

/*
 * 503 only while this instance cannot deliver (a Redis connection is down): that is when a load
 * balancer should send clients elsewhere. PostgreSQL down is "degraded" with 200: messages are
 * still delivered, their acks wait, and every instance shares the same database anyway.
 */
static void health(pl_conn_t *c, int keep)
{
    pl_server_t *srv = pl_shard_of_conn(c)->srv;
    int draining = pl_server_state(srv) != PL_SERVER_RUNNING;
    int ok = pl_server_redis_ok(srv);
    int degraded = ok && srv->db && !pl_db_up(srv->db);
    pl_buf_t b = {0};
    pl_buf_printf(&b, "{\"status\":\"%s\",\"server_id\":",
                  draining   ? "draining"
                  : !ok      ? "unhealthy"
                  : degraded ? "degraded"
                             : "healthy");
    pl_buf_json_str(&b, srv->cfg.server_id, strlen(srv->cfg.server_id));
    pl_buf_printf(&b, ",\"timestamp\":%lld,\"redis\":\"%s\"", (long long)pl_now_ms(),
                  ok ? "up" : "down");
    db_json(&b, srv);
    if (draining)
        pl_buf_adds(&b,
                    ",\"reason\":\"shutting down: clients are being moved to other instances\"");
    else if (!ok)
        pl_buf_adds(&b, ",\"reason\":\"redis unreachable\"");
    else if (degraded)
        pl_buf_adds(&b, ",\"reason\":\"database unreachable: messages are delivered, acks wait\"");
    pl_buf_adds(&b, "}");
    respond(c, ok && !draining ? 200 : 503, &b, keep);
    pl_buf_free(&b);
}

static const char *state_name(pl_server_t *srv)
{
    switch (pl_server_state(srv)) {
    case PL_SERVER_RUNNING:
        return "running";
    case PL_SERVER_DRAINING:
        return "draining";
    default:
        return "stopping";
    }
}

static void status(pl_conn_t *c, int keep)
{
    pl_server_t *srv = pl_shard_of_conn(c)->srv;
    long total = 0, rooms = 0, sessions = 0;
    unsigned long delivered = 0;
    int pubs_up = 0;
    pl_buf_t per = {0};
    pl_buf_adds(&per, "[");
    for (int i = 0; i < srv->nshards; i++) {
        pl_shard_t *s = pl_server_shard(srv, i);
        long n = atomic_load_explicit(&s->conns->sock->nsocks, memory_order_relaxed);
        long r = atomic_load_explicit(&s->nrooms, memory_order_relaxed);
        int up = pl_kv_up(s);
        total += n;
        rooms += r;
        pubs_up += up;
        delivered += pl_counter_get(&s->stats.delivered);
        sessions += (long)pl_counter_get(&s->stats.sessions);
        pl_buf_printf(&per, "%s{\"shard\":%d,\"connections\":%ld,\"rooms\":%ld,\"redis\":%s}",
                      i ? "," : "", i, n, r, up ? "true" : "false");
    }
    pl_buf_adds(&per, "]");
    pl_buf_t b = {0};
    pl_buf_adds(&b, "{\"server_id\":");
    pl_buf_json_str(&b, srv->cfg.server_id, strlen(srv->cfg.server_id));
    pl_buf_printf(&b, ",\"state\":\"%s\",\"drain_seconds\":%d", state_name(srv),
                  srv->cfg.drain_seconds);
    long long since = atomic_load(&srv->drain_started_ms);
    if (since) pl_buf_printf(&b, ",\"draining_since\":%lld", since);
    pl_buf_printf(&b,
                  ",\"uptime_s\":%lld,\"shards\":%d,\"connections\":{\"total\":%ld,\"per_shard\":[",
                  (long long)(pl_now_ms() - srv->started_ms) / 1000, srv->nshards, total);
    for (int i = 0; i < srv->nshards; i++)
        pl_buf_printf(&b, "%s%ld", i ? "," : "",
                      atomic_load_explicit(&pl_server_shard(srv, i)->conns->sock->nsocks,
                                           memory_order_relaxed));
    pl_buf_printf(&b,
                  "]},\"sessions\":%ld,\"local_rooms\":%ld,\"delivered\":%lu,"
                  "\"redis\":{\"healthy\":%s,\"subscriber\":%s,\"publishers_up\":%d}",
                  sessions, rooms, delivered, pl_server_redis_ok(srv) ? "true" : "false",
                  atomic_load(&srv->sub.connected) ? "true" : "false", pubs_up);
    db_json(&b, srv);
    pl_buf_printf(&b, ",\"per_shard\":%s}", per.data);
    respond(c, 200, &b, keep);
    pl_buf_free(&b);
    pl_buf_free(&per);
}

/* The first element of a header that may list several ("https, http"), trimmed, into out. */
static int first_of(const char *v, char *out, size_t n)
{
    if (!v) return 0;
    while (*v == ' ')
        v++;
    size_t len = strcspn(v, ", ");
    if (!len || len >= n) return 0;
    memcpy(out, v, len);
    out[len] = '\0';
    return 1;
}

/* A host[:port] from a header, if it is one (no path, no spaces, no quotes: it goes into JSON
 * and into a URL). */
static int plain_host(const char *h)
{
    if (!*h) return 0;
    for (; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') ||
              *h == '.' || *h == '-' || *h == ':' || *h == '[' || *h == ']' || *h == '_'))
            return 0;
    return 1;
}

/*
 * Where clients connect: PARLEY_PUBLIC_URL if set; else the scheme and host a trusted proxy
 * saw (X-Forwarded-Proto, X-Forwarded-Host; from anyone else they are ignored), falling back
 * to the scheme of this connection (wss:// over TLS) and the Host header (the shipped nginx
 * config passes the client's Host, port included).
 */
static void websocket_url(pl_conn_t *c, pl_buf_t *url)
{
    const pl_config_t *cfg = &pl_shard_of_conn(c)->srv->cfg;
    if (cfg->public_ws_url) {
        pl_buf_adds(url, cfg->public_ws_url);
        return;
    }
    char proto[16] = "", fhost[256] = "";
    struct sockaddr_storage peer;
    if (cfg->trusted_proxies.n && pl_sock_peer(&c->sock, &peer) == 0 &&
        pl_cidr_match(&cfg->trusted_proxies, (struct sockaddr *)&peer)) {
        first_of(pl_http_header(c->http, PL_H_X_FORWARDED_PROTO), proto, sizeof proto);
        if (!first_of(pl_http_header(c->http, PL_H_X_FORWARDED_HOST), fhost, sizeof fhost) ||
            !plain_host(fhost))
            fhost[0] = '\0';
    }
    const char *host = *fhost ? fhost : pl_http_header(c->http, PL_H_HOST);
    if (!host || !plain_host(host)) host = "127.0.0.1";
    int tls = *proto ? strcasecmp(proto, "https") == 0 || strcasecmp(proto, "wss") == 0
                     : pl_sock_secure(&c->sock);
    pl_buf_printf(url, "%s://%s/ws", tls ? "wss" : "ws", host);
}

/* One address of a list, trimmed, parsed into `sa`: 1, or 0 if it is not one. */
static int parse_addr(const char *p, size_t n, struct sockaddr_storage *sa)
{
    while (n && *p == ' ')
        p++, n--;
    while (n && p[n - 1] == ' ')
        n--;
    char s[INET6_ADDRSTRLEN];
    if (!n || n >= sizeof s) return 0;
    memcpy(s, p, n);
    s[n] = '\0';
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, s, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        return 1;
    }
    return 0;
}

/*
 * The client's address, for logs (and per-address limits): the peer's; or, when the peer is one
 * of PARLEY_TRUSTED_PROXIES, X-Forwarded-For read from the right, past the hops that are trusted
 * proxies too, up to the first that is not (anything left of it the client could have written).
 */
static int client_sockaddr(pl_conn_t *c, struct sockaddr_storage *out)
{
    const pl_config_t *cfg = &pl_shard_of_conn(c)->srv->cfg;
    struct sockaddr_storage who;
    if (pl_sock_peer(&c->sock, &who) != 0) return -1;
    const pl_http_t *h = pl_conn_http(c);
    const char *xff = h ? pl_http_header(h, PL_H_X_FORWARDED_FOR) : NULL;
    if (xff && cfg->trusted_proxies.n &&
        pl_cidr_match(&cfg->trusted_proxies, (struct sockaddr *)&who)) {
        size_t end = strlen(xff);
        while (end) {
            size_t start = end;
            while (start && xff[start - 1] != ',')
                start--;
            struct sockaddr_storage hop;
            if (!parse_addr(xff + start, end - start, &hop))
                break; /* garbage: keep the last good */
            who = hop;
            if (!pl_cidr_match(&cfg->trusted_proxies, (struct sockaddr *)&hop)) break;
            end = start ? start - 1 : 0;
        }
    }
    *out = who;
    return 0;
}

static const char *client_addr(pl_conn_t *c, char *out, size_t n)
{
    struct sockaddr_storage who;
    if (client_sockaddr(c, &who) != 0) return snprintf(out, n, "?"), out;
    const void *a = who.ss_family == AF_INET6
                        ? (const void *)&((struct sockaddr_in6 *)&who)->sin6_addr
                        : (const void *)&((struct sockaddr_in *)&who)->sin_addr;
    if (!inet_ntop(who.ss_family, a, out, (socklen_t)n)) snprintf(out, n, "?");
    return out;
}

/* POST /api/websocket/token (dev: POST /api/dev/token, which needs no key): a token for the
 * body's user_id. */
static void token(pl_conn_t *c, int keep, int dev)
{
    const pl_config_t *cfg = &pl_shard_of_conn(c)->srv->cfg;
    size_t klen;
    const char *key = bearer(c->http, &klen);
    if (!dev && (!key || !secret_eq(key, klen, cfg->api_key))) {
        api_error(c, 401, "unauthorized", "Authorization: Bearer <PARLEY_API_KEY> required", keep);
        return;
    }
    const pl_buf_t *body = &c->http->body;
    cJSON *j = cJSON_ParseWithLength(body->data ? body->data : "", body->len);
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(j, "user_id");
    /* A lifetime may be asked for (expires_in, seconds), up to PARLEY_TOKEN_MAX_TTL. */
    const cJSON *ask = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
    int ttl = cfg->token_ttl;
    if (ask && (!cJSON_IsNumber(ask) || ask->valuedouble != (double)(long long)ask->valuedouble ||
                ask->valuedouble < 1 || ask->valuedouble > cfg->token_max_ttl)) {
        cJSON_Delete(j);
        char msg[96];
        snprintf(msg, sizeof msg, "expires_in must be an integer number of seconds, 1..%d",
                 cfg->token_max_ttl);
        api_error(c, 400, "bad_request", msg, keep);
        return;
    }
    if (ask) ttl = (int)ask->valuedouble;
    char tok[1024];
    int64_t now = pl_now_ms() / 1000;
    int n = cJSON_IsString(user)
                ? pl_jwt_mint(&cfg->jwt, user->valuestring, now, now + ttl, tok, sizeof tok)
                : PL_JWT_ESUB;
    if (n < 0) {
        cJSON_Delete(j);
        api_error(c, 400, "bad_request",
                  "body must be {\"user_id\":\"<1-128 bytes, no control characters>\"}", keep);
        return;
    }
    pl_buf_t b = {0};
    pl_buf_adds(&b, "{\"token\":");
    pl_buf_json_str(&b, tok, (size_t)n);
    pl_buf_t url = {0};
    websocket_url(c, &url);
    pl_buf_adds(&b, ",\"websocket_url\":");
    pl_buf_json_str(&b, url.data, url.len);
    pl_buf_printf(&b, ",\"expires_in\":%d,\"user_id\":", ttl);
    pl_buf_json_str(&b, user->valuestring, strlen(user->valuestring));
    pl_buf_adds(&b, "}");
    respond(c, 200, &b, keep);
    pl_buf_free(&b);
    pl_buf_free(&url);
    cJSON_Delete(j);
}

/* ---- /api/admin: drain and rebalance (the API key) ---- */

/* Connections of this instance (WebSocket and HTTP), for the answers. */
static long connections(pl_server_t *srv)
{
    long n = 0;
    for (int i = 0; i < srv->nshards; i++)
        n += atomic_load_explicit(&pl_server_shard(srv, i)->conns->sock->nsocks,
                                  memory_order_relaxed);
    return n;
}

/* POST /api/admin/rebalance {"share":0.5,"seconds":10}: both optional (the defaults: half, and
 * PARLEY_DRAIN_SECONDS). */
static void rebalance(pl_conn_t *c, pl_server_t *srv, int keep)
{
    const pl_buf_t *body = &c->http->body;
    double share = 0.5;
    double seconds = srv->cfg.drain_seconds;
    if (body->len) {
        cJSON *j = cJSON_ParseWithLength(body->data, body->len);
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "share");
        const cJSON *se = cJSON_GetObjectItemCaseSensitive(j, "seconds");
        int bad = !cJSON_IsObject(j) || (sh && !cJSON_IsNumber(sh)) || (se && !cJSON_IsNumber(se));
        if (!bad && sh) share = sh->valuedouble;
        if (!bad && se) seconds = se->valuedouble;
        cJSON_Delete(j);
        if (bad || !(share > 0 && share <= 1) || !(seconds >= 0 && seconds <= 3600)) {
            api_error(c, 400, "bad_request",
                      "body must be {\"share\": 0 < share <= 1, \"seconds\": 0..3600}", keep);
            return;
        }
    }
    if (pl_server_state(srv) != PL_SERVER_RUNNING) {
        api_error(c, 409, "conflict", "this instance is draining", keep);
        return;
    }
    unsigned permille = (unsigned)(share * 1000 + 0.5);
    pl_server_rebalance(srv, permille ? permille : 1, (unsigned)(seconds * 1000));
    char addr[INET6_ADDRSTRLEN];
    pl_info("rebalance asked over the API by %s: %.3f of the clients over %.1f s",
            client_addr(c, addr, sizeof addr), share, seconds);
    pl_buf_t b = {0};
    pl_buf_printf(&b,
                  "{\"status\":\"rebalancing\",\"share\":%.3f,\"seconds\":%.1f,"
                  "\"connections\":%ld}",
                  share, seconds, connections(srv));
    respond(c, 202, &b, keep);
    pl_buf_free(&b);
}

/* Returns whether the connection stays open. */
static int admin(pl_conn_t *c, const char *path, size_t len, int method, int keep)
{
    pl_server_t *srv = pl_shard_of_conn(c)->srv;
    int drain = path_is(path, len, "/api/admin/drain");
    if (!drain && !path_is(path, len, "/api/admin/rebalance")) {
        api_error(c, 404, "not_found", "no such endpoint", keep);
        return keep;
    }
    if (method != HTTP_POST) {
        api_error(c, 405, "method_not_allowed", "method not allowed on this endpoint", keep);
        return keep;
    }
    size_t klen;
    const char *key = bearer(c->http, &klen);
    if (!key || !secret_eq(key, klen, srv->cfg.api_key)) {
        api_error(c, 401, "unauthorized", "Authorization: Bearer <PARLEY_API_KEY> required", keep);
        return keep;
    }
    if (!drain) {
        rebalance(c, srv, keep);
        return keep;
    }
    char addr[INET6_ADDRSTRLEN];
    if (pl_server_drain(srv))
        pl_info("drain asked over the API by %s", client_addr(c, addr, sizeof addr));
    pl_buf_t b = {0};
    pl_buf_printf(&b, "{\"status\":\"%s\",\"drain_seconds\":%d,\"connections\":%ld}",
                  state_name(srv), srv->cfg.drain_seconds, connections(srv));
    /* The asker's connection closes with this answer: a draining instance keeps none. */
    respond(c, 202, &b, 0);
    pl_buf_free(&b);
    return 0;
}

/* ---- /api/rooms: history and memberships, answered by the database pool ---- */

/* A history or membership request on its way to the database. */
typedef struct {
    union {
        pl_db_job_t h;
        pl_db_history_t history;
        pl_db_member_t member;
        pl_db_rooms_t rooms;
    } job;
    pl_conn_t *conn; /**< held by proto/conn while the answer is prepared */
    int keep;
    int self; /**< a user changing their own membership (a removal is "left", not "removed") */
} http_job_t;

/* The database's rows as the history API's JSON (message frames, newest first). */
static void history_body(pl_buf_t *b, const pl_db_history_t *j)
{
    pl_buf_adds(b, "{\"room\":");
    pl_buf_json_str(b, j->room, strlen(j->room));
    pl_buf_adds(b, ",\"messages\":[");
    for (size_t i = 0; i < j->rows.n; i++) {
        const pl_db_row_t *r = &j->rows.row[i];
        if (i) pl_buf_add(b, ",", 1);
        pl_wire_message_head(b, r->seq);
        pl_wire_message_tail(b, j->room, strlen(j->room), r->id, r->user, r->body, r->body_len,
                             r->ts_ms, r->cid, r->cid ? strlen(r->cid) : 0);
    }
    pl_buf_printf(b, "],\"has_more\":%s", j->has_more ? "true" : "false");
    if (j->has_more && j->rows.n)
        pl_buf_printf(b, ",\"next_before\":%lld", (long long)j->rows.row[j->rows.n - 1].seq);
    pl_buf_adds(b, "}");
}

/* GET /api/users/me/rooms: each room with its seq, the user's read position and what is unread;
 * a direct conversation names the other user ("with"). */
static void rooms_body(pl_buf_t *b, const pl_db_rooms_t *j)
{
    pl_buf_adds(b, "{\"user\":");
    pl_buf_json_str(b, j->user, strlen(j->user));
    pl_buf_adds(b, ",\"rooms\":[");
    for (size_t i = 0; i < j->rows.n; i++) {
        const pl_db_row_t *r = &j->rows.row[i];
        long long seq = r->seq, read = r->aux < r->seq ? r->aux : r->seq;
        pl_buf_adds(b, i ? ",{\"room\":" : "{\"room\":");
        pl_buf_json_str(b, r->room, strlen(r->room));
        pl_buf_printf(b, ",\"seq\":%lld,\"read\":%lld,\"unread\":%lld", seq, read, seq - read);
        if (r->user) {
            pl_buf_adds(b, ",\"with\":");
            pl_buf_json_str(b, r->user, strlen(r->user));
        }
        pl_buf_adds(b, "}");
    }
    pl_buf_printf(b, "],\"truncated\":%s}", j->rows.n >= PL_DB_ROOMS_MAX ? "true" : "false");
}

static void member_body(pl_buf_t *b, const pl_db_member_t *j)
{
    pl_buf_adds(b, "{\"room\":");
    pl_buf_json_str(b, j->room, strlen(j->room));
    pl_buf_adds(b, ",\"user\":");
    pl_buf_json_str(b, j->user, strlen(j->user));
    pl_buf_printf(b, ",\"member\":%s,\"changed\":%s}", j->op == PL_DB_MEMBER_ADD ? "true" : "false",
                  j->changed ? "true" : "false");
}

/* Respond to a finished job and let the connection go on. */
static void http_job_respond(http_job_t *x)
{
    pl_db_job_t *job = &x->job.h;
    pl_conn_t *c = x->conn;
    if (pl_conn_open(c)) {
        pl_buf_t b = {0};
        if (job->status == PL_DB_EUNAVAILABLE) {
            api_error(c, 503, "unavailable", "the database is unreachable; retry later", x->keep);
        } else if (job->status != PL_DB_OK) {
            api_error(c, 500, "internal", "the database could not answer", x->keep);
        } else if (job->kind == PL_DB_HISTORY && !x->job.history.member) {
            api_error(c, 403, "forbidden", "not a member of this room", x->keep);
        } else {
            if (job->kind == PL_DB_HISTORY)
                history_body(&b, &x->job.history);
            else if (job->kind == PL_DB_ROOMS)
                rooms_body(&b, &x->job.rooms);
            else
                member_body(&b, &x->job.member);
            respond(c, 200, &b, x->keep);
        }
        pl_buf_free(&b);
    }
    if (job->kind == PL_DB_HISTORY) pl_db_rows_free(&x->job.history.rows);
    if (job->kind == PL_DB_ROOMS) pl_db_rows_free(&x->job.rooms.rows);
    int keep = x->keep;
    free(x);
    pl_conn_http_resume(c, keep);
}

static void member_mirrored_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac, (void)reply;
    http_job_respond(privdata);
}

/* A job's answer is ready. A membership change is answered once the Redis mirror holds it too,
 * so the caller's next request, on any instance, sees it (read-your-writes). While Redis is
 * down the database alone has it; the mirror is rebuilt from there. */
static void http_job_done(pl_db_job_t *job)
{
    http_job_t *x = (http_job_t *)job;
    if (job->status == PL_DB_OK && job->kind == PL_DB_MEMBER &&
        pl_chat_member(pl_shard_of_conn(x->conn), x->job.member.room, x->job.member.user,
                       x->job.member.op == PL_DB_MEMBER_ADD, x->self ? "left" : "removed",
                       member_mirrored_cb, x) == 0)
        return;
    http_job_respond(x);
}

/* Decode %XX in a path segment into out (size PL_JWT_SUB_MAX + 1). Returns -1 if bad or too long.
 */
static int path_segment(const char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '%') {
            unsigned v;
            if (i + 2 >= n) return -1; /* truncated escape */
            char hex[3] = {p[i + 1], p[i + 2], 0};
            if (sscanf(hex, "%2x", &v) != 1 || v == 0) return -1;
            ch = (unsigned char)v;
            i += 2;
        }
        if (o >= PL_JWT_SUB_MAX || ch < 0x20) return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return o ? 0 : -1;
}

/* An integer query parameter in [min, max]; `def` if absent; -1 on a bad value. */
static long long query_int(const pl_http_t *h, const char *key, long long def, long long min,
                           long long max)
{
    size_t n;
    const char *v = pl_http_query(h, key, &n);
    if (!v) return def;
    char tmp[24];
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    char *end;
    long long x = strtoll(tmp, &end, 10);
    return *end || x < min || x > max ? -1 : x;
}

/* Who a request speaks for: the API key (a server-side caller) or a user's token. */
enum { CRED_NONE, CRED_KEY, CRED_USER };

static int credential(pl_conn_t *c, char user[PL_JWT_SUB_MAX + 1])
{
    const pl_config_t *cfg = &pl_shard_of_conn(c)->srv->cfg;
    size_t n;
    const char *tok = bearer(c->http, &n);
    user[0] = '\0';
    if (!tok) return CRED_NONE;
    if (secret_eq(tok, n, cfg->api_key)) return CRED_KEY;
    pl_jwt_claims_t cl;
    if (pl_jwt_check(&cfg->jwt, tok, n, pl_now_ms() / 1000, &cl) != 0) return CRED_NONE;
    memcpy(user, cl.sub, sizeof cl.sub);
    return CRED_USER;
}

/* ---- /api/rooms/{room}/members: the membership mirror in Redis ---- */

typedef struct {
    pl_conn_t *conn;
    int keep;
    char room[PL_JWT_SUB_MAX + 1];
} members_ctx_t;

static void members_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    members_ctx_t *x = privdata;
    pl_conn_t *c = x->conn;
    redisReply *r = reply;
    if (pl_conn_open(c)) {
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer < 0) {
            api_error(c, 403, "forbidden", "not a member of this room", x->keep);
        } else if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
                   r->element[0]->type != REDIS_REPLY_INTEGER) {
            api_error(c, 503, "unavailable", "redis is unreachable; retry later", x->keep);
        } else {
            pl_buf_t b = {0};
            pl_buf_adds(&b, "{\"room\":");
            pl_buf_json_str(&b, x->room, strlen(x->room));
            pl_buf_printf(&b, ",\"count\":%lld,\"members\":[", r->element[0]->integer);
            for (size_t i = 1; i + 1 < r->elements; i += 2) {
                const redisReply *u = r->element[i], *on = r->element[i + 1];
                if (u->type != REDIS_REPLY_STRING) continue;
                pl_buf_adds(&b, i > 1 ? ",{\"user\":" : "{\"user\":");
                pl_buf_json_str(&b, u->str, u->len);
                pl_buf_printf(&b, ",\"online\":%s}",
                              on->type == REDIS_REPLY_INTEGER && on->integer ? "true" : "false");
            }
            pl_buf_adds(&b, "]}");
            respond(c, 200, &b, x->keep);
            pl_buf_free(&b);
        }
    }
    int keep = x->keep;
    free(x);
    pl_conn_http_resume(c, keep);
}

static int members_list(pl_conn_t *c, const char *room, const char *asker, int keep)
{
    long long limit = query_int(c->http, "limit", 1000, 1, 1000);
    if (limit < 0) {
        api_error(c, 400, "bad_request", "limit must be 1..1000", keep);
        return keep;
    }
    members_ctx_t *x = calloc(1, sizeof *x);
    if (!x) {
        api_error(c, 503, "unavailable", "out of memory", 0);
        return 0;
    }
    x->conn = c;
    x->keep = keep;
    snprintf(x->room, sizeof x->room, "%s", room);
    if (pl_chat_members(pl_shard_of_conn(c), room, asker, (int)limit, members_cb, x) != 0) {
        free(x);
        api_error(c, 503, "unavailable", "redis is unreachable; retry later", keep);
        return keep;
    }
    return PL_CONN_REQ_ASYNC;
}

static int rooms_api(pl_conn_t *c, const char *path, size_t len, int method, int keep)
{
    pl_server_t *srv = pl_shard_of_conn(c)->srv;
    const pl_config_t *cfg = &srv->cfg;
    const char *p = path + 11, *end = path + len; /* after "/api/rooms/" */
    const char *slash = memchr(p, '/', (size_t)(end - p));
    /* Room ids may arrive percent-encoded ("dm%3A..."): decode, then validate. */
    char room[PL_JWT_SUB_MAX + 1];
    if (!slash || path_segment(p, (size_t)(slash - p), room) != 0 ||
        !pl_room_id_valid(room, strlen(room))) {
        api_error(c, slash ? 400 : 404, slash ? "bad_request" : "not_found",
                  slash ? "bad room id" : "no such endpoint", keep);
        return keep;
    }
    const char *rest = slash;
    size_t rest_len = (size_t)(end - rest);
    http_job_t *x = NULL;

    if (rest_len == 9 && memcmp(rest, "/messages", 9) == 0) {
        if (method != HTTP_GET) goto not_allowed;
        /* A member's own token (history is for members), or the API key: a server-side caller
         * (the application's backend) reads any room's. */
        char user[PL_JWT_SUB_MAX + 1];
        if (credential(c, user) == CRED_NONE) {
            api_error(c, 401, "unauthorized",
                      "Authorization: Bearer <a member's token, or PARLEY_API_KEY> required", keep);
            return keep;
        }
        long long before = query_int(c->http, "before", 0, 1, INT64_MAX);
        long long limit = query_int(c->http, "limit", 50, 1, 100);
        if (before < 0 || limit < 0) {
            api_error(c, 400, "bad_request", "before must be a seq >= 1 and limit 1..100", keep);
            return keep;
        }
        if (!srv->db) goto no_db;
        if (!(x = calloc(1, sizeof *x))) goto oom;
        pl_db_history_t *j = &x->job.history;
        pl_db_job_init(&j->h, PL_DB_HISTORY, pl_shard_of_conn(c)->loop, PL_EV_DB, http_job_done);
        snprintf(j->room, sizeof j->room, "%s", room);
        snprintf(j->user, sizeof j->user, "%s", user);
        j->before = before;
        j->limit = (int)limit;
    } else if (rest_len == 8 && memcmp(rest, "/members", 8) == 0) {
        /* The members and who of them is online: for members, or the API key. */
        if (method != HTTP_GET) goto not_allowed;
        char asker[PL_JWT_SUB_MAX + 1];
        if (credential(c, asker) == CRED_NONE) {
            api_error(c, 401, "unauthorized",
                      "Authorization: Bearer <a member's token, or PARLEY_API_KEY> required", keep);
            return keep;
        }
        return members_list(c, room, asker, keep);
    } else if (rest_len > 9 && memcmp(rest, "/members/", 9) == 0) {
        /* The API key manages any membership; a user may leave a room, and join one when rooms
         * are open (as subscribing would make them a member anyway). */
        if (method != HTTP_PUT && method != HTTP_DELETE) goto not_allowed;
        char asker[PL_JWT_SUB_MAX + 1], user[PL_JWT_SUB_MAX + 1];
        int cred = credential(c, asker);
        if (cred == CRED_NONE) {
            api_error(c, 401, "unauthorized",
                      "Authorization: Bearer <PARLEY_API_KEY, or the user's own token> required",
                      keep);
            return keep;
        }
        if (path_segment(rest + 9, rest_len - 9, user) != 0) {
            api_error(c, 400, "bad_request", "bad user id", keep);
            return keep;
        }
        if (cred == CRED_USER &&
            (strcmp(asker, user) != 0 || (method == HTTP_PUT && !cfg->open_rooms))) {
            api_error(c, 403, "forbidden",
                      method == HTTP_PUT && !strcmp(asker, user)
                          ? "rooms are closed: memberships are made with PARLEY_API_KEY"
                          : "a user token may change only its own membership",
                      keep);
            return keep;
        }
        if (strncmp(room, "dm:", 3) == 0 && cred == CRED_USER) {
            api_error(c, 403, "forbidden", "direct conversations cannot be joined or left", keep);
            return keep;
        }
        if (!srv->db) goto no_db;
        if (!(x = calloc(1, sizeof *x))) goto oom;
        pl_db_member_t *j = &x->job.member;
        pl_db_job_init(&j->h, PL_DB_MEMBER, pl_shard_of_conn(c)->loop, PL_EV_DB, http_job_done);
        j->op = method == HTTP_PUT ? PL_DB_MEMBER_ADD : PL_DB_MEMBER_DEL;
        x->self = cred == CRED_USER;
        snprintf(j->room, sizeof j->room, "%s", room);
        snprintf(j->user, sizeof j->user, "%s", user);
    } else {
        api_error(c, 404, "not_found", "no such endpoint", keep);
        return keep;
    }
    x->conn = c;
    x->keep = keep;
    pl_db_submit(srv->db, &x->job.h);
    return PL_CONN_REQ_ASYNC;
not_allowed:
    api_error(c, 405, "method_not_allowed", "method not allowed on this endpoint", keep);
    return keep;
no_db:
    api_error(c, 503, "unavailable", "this server runs without a database", keep);
    return keep;
oom:
    api_error(c, 503, "unavailable", "out of memory", 0);
    return 0;
}

/* ---- /api/websocket/users: presence, answered by Redis ---- */

typedef struct {
    pl_conn_t *conn;
    int keep;
    long long count, offset, limit;
    char user[PL_JWT_SUB_MAX + 1];
    /* A cluster's list: the buckets not yet answered, whether one failed, and the users so
     * far (copied: each reply goes when its callback returns). */
    int buckets_left, bucket_failed;
    char **names;
    size_t n, cap;
} online_ctx_t;

static void online_finish(online_ctx_t *x, int status, pl_buf_t *body)
{
    pl_conn_t *c = x->conn;
    if (pl_conn_open(c)) {
        if (status == 200)
            respond(c, 200, body, x->keep);
        else
            api_error(c, 503, "unavailable", "redis is unreachable; retry later", x->keep);
    }
    int keep = x->keep;
    free(x);
    pl_conn_http_resume(c, keep);
}

static void online_count_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    online_ctx_t *x = privdata;
    redisReply *r = reply;
    x->count = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
}

static void online_list_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    online_ctx_t *x = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || x->count < 0) {
        online_finish(x, 503, NULL);
        return;
    }
    pl_buf_t b = {0};
    pl_buf_printf(&b, "{\"count\":%lld,\"users\":[", x->count);
    for (size_t i = 0; i < r->elements; i++) {
        if (i) pl_buf_add(&b, ",", 1);
        pl_buf_json_str(&b, r->element[i]->str, r->element[i]->len);
    }
    pl_buf_printf(&b, "],\"offset\":%lld,\"limit\":%lld}", x->offset, x->limit);
    online_finish(x, 200, &b);
    pl_buf_free(&b);
}

static void online_one_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    online_ctx_t *x = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        online_finish(x, 503, NULL);
        return;
    }
    pl_buf_t b = {0};
    pl_buf_adds(&b, "{\"user\":");
    pl_buf_json_str(&b, x->user, strlen(x->user));
    pl_buf_printf(&b, ",\"online\":%s}", r->integer ? "true" : "false");
    online_finish(x, 200, &b);
    pl_buf_free(&b);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A cluster: one bucket of the online set less to wait for. The last sorts the union and answers
 * the page, as SORT ALPHA LIMIT does on one Redis. */
static void online_bucket_done(online_ctx_t *x)
{
    if (--x->buckets_left > 0) return;
    pl_buf_t b = {0};
    if (!x->bucket_failed) {
        qsort(x->names, x->n, sizeof *x->names, cmp_name);
        pl_buf_printf(&b, "{\"count\":%zu,\"users\":[", x->n);
        for (long long i = x->offset; i < (long long)x->n && i < x->offset + x->limit; i++) {
            if (i > x->offset) pl_buf_add(&b, ",", 1);
            pl_buf_json_str(&b, x->names[i], strlen(x->names[i]));
        }
        pl_buf_printf(&b, "],\"offset\":%lld,\"limit\":%lld}", x->offset, x->limit);
    }
    for (size_t i = 0; i < x->n; i++)
        free(x->names[i]);
    free(x->names);
    online_finish(x, x->bucket_failed ? 503 : 200, &b);
    pl_buf_free(&b);
}

/* One bucket answered (SMEMBERS): its users join the others. */
static void online_bucket_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    online_ctx_t *x = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) x->bucket_failed = 1;
    for (size_t i = 0; !x->bucket_failed && i < r->elements; i++) {
        if (x->n == x->cap) {
            size_t cap = x->cap ? 2 * x->cap : 256;
            char **p = realloc(x->names, cap * sizeof *p);
            if (!p) {
                x->bucket_failed = 1;
                break;
            }
            x->names = p;
            x->cap = cap;
        }
        if (!(x->names[x->n] = strdup(r->element[i]->str)))
            x->bucket_failed = 1;
        else
            x->n++;
    }
    online_bucket_done(x);
}

/* A cluster: every bucket of the online set, asked at once. 0, or -1 if none could be asked
 * (x not used); once one is, the last callback answers. */
static int online_list_cluster(pl_shard_t *s, online_ctx_t *x)
{
    pl_buf_t *k = &s->kbuf[0];
    x->buckets_left = PL_KEY_ONLINE_BUCKETS + 1; /* held until every bucket is asked */
    int asked = 0;
    for (int i = 0; i < PL_KEY_ONLINE_BUCKETS; i++) {
        pl_buf_reset(k);
        pl_buf_adds(k, s->srv->cfg.redis_prefix);
        pl_buf_printf(k, "{o:%d}:online", i);
        const char *a[2] = {"SMEMBERS", k->data};
        size_t l[2] = {8, k->len};
        if (pl_kv_command(s, k->data, k->len, online_bucket_cb, x, 2, a, l) == 0) {
            asked++;
        } else {
            x->bucket_failed = 1;
            x->buckets_left--;
        }
    }
    if (!asked) return -1;
    online_bucket_done(x); /* the hold */
    return 0;
}

static int users_api(pl_conn_t *c, const char *path, size_t len, int method, int keep,
                     const char *rest, size_t rest_len)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    const char *pfx = s->srv->cfg.redis_prefix;
    if (method != HTTP_GET) {
        api_error(c, 405, "method_not_allowed", "method not allowed on this endpoint", keep);
        return keep;
    }
    char asker[PL_JWT_SUB_MAX + 1];
    if (credential(c, asker) == CRED_NONE) {
        api_error(c, 401, "unauthorized",
                  "Authorization: Bearer <PARLEY_API_KEY or a user token> required", keep);
        return keep;
    }
    online_ctx_t *x = calloc(1, sizeof *x);
    if (!x) {
        api_error(c, 503, "unavailable", "out of memory", 0);
        return 0;
    }
    x->conn = c;
    x->keep = keep;
    char key[64];
    snprintf(key, sizeof key, "%sonline_users", pfx);
    int rc;
    if (rest_len == 7 && memcmp(rest, "/online", 7) == 0) {
        x->offset = query_int(c->http, "offset", 0, 0, INT32_MAX);
        x->limit = query_int(c->http, "limit", 100, 1, 1000);
        if (x->offset < 0 || x->limit < 0) {
            free(x);
            api_error(c, 400, "bad_request", "offset must be >= 0 and limit 1..1000", keep);
            return keep;
        }
        char off[24], lim[24];
        snprintf(off, sizeof off, "%lld", x->offset);
        snprintf(lim, sizeof lim, "%lld", x->limit);
        const char *a1[2] = {"SCARD", key};
        size_t l1[2] = {5, strlen(key)};
        const char *a2[6] = {"SORT", key, "ALPHA", "LIMIT", off, lim};
        size_t l2[6] = {4, strlen(key), 5, 5, strlen(off), strlen(lim)};
        /* Both or neither: a command is refused only while disconnected, which cannot change
         * between these two calls. */
        if (pl_kv_cluster(s)) {
            rc = online_list_cluster(s, x);
        } else {
            rc = pl_kv_command(s, key, strlen(key), online_count_cb, x, 2, a1, l1);
            if (rc == 0) pl_kv_command(s, key, strlen(key), online_list_cb, x, 6, a2, l2);
        }
    } else {
        /* /api/websocket/users/{id}/online */
        const char *id = path + 21, *end = path + len - 7;
        if (len < 21 + 7 + 1 || memcmp(end, "/online", 7) != 0 ||
            path_segment(id, (size_t)(end - id), x->user) != 0) {
            free(x);
            api_error(c, 404, "not_found", "no such endpoint", keep);
            return keep;
        }
        /* A cluster keeps the online set in buckets: the user's own. */
        pl_buf_t *k = &s->kbuf[0];
        if (pl_kv_cluster(s))
            pl_key_online(k, pfx, x->user);
        else {
            pl_buf_reset(k);
            pl_buf_adds(k, key);
        }
        const char *a[3] = {"SISMEMBER", k->data, x->user};
        size_t l[3] = {9, k->len, strlen(x->user)};
        rc = pl_kv_command(s, k->data, k->len, online_one_cb, x, 3, a, l);
    }
    if (rc != 0) {
        free(x);
        api_error(c, 503, "unavailable", "redis is unreachable; retry later", keep);
        return keep;
    }
    return PL_CONN_REQ_ASYNC;
}

/* GET /api/users/me/rooms: the rooms of the token's user, from the database. */
static int my_rooms(pl_conn_t *c, int keep)
{
    pl_server_t *srv = pl_shard_of_conn(c)->srv;
    char user[PL_JWT_SUB_MAX + 1];
    if (credential(c, user) != CRED_USER) {
        api_error(c, 401, "unauthorized", "Authorization: Bearer <the user's token> required",
                  keep);
        return keep;
    }
    if (!srv->db) {
        api_error(c, 503, "unavailable", "this server runs without a database", keep);
        return keep;
    }
    http_job_t *x = calloc(1, sizeof *x);
    if (!x) {
        api_error(c, 503, "unavailable", "out of memory", 0);
        return 0;
    }
    pl_db_rooms_t *j = &x->job.rooms;
    pl_db_job_init(&j->h, PL_DB_ROOMS, pl_shard_of_conn(c)->loop, PL_EV_DB, http_job_done);
    snprintf(j->user, sizeof j->user, "%s", user);
    x->conn = c;
    x->keep = keep;
    pl_db_submit(srv->db, &j->h);
    return PL_CONN_REQ_ASYNC;
}

/* ---- /api/users/{id}/disconnect: a ban or a password change (the API key) ---- */

/* A disconnect in flight. Allocated by user_disconnect, freed by kick_cb. */
typedef struct {
    pl_conn_t *conn;
    int keep, revoke;
    char user[PL_JWT_SUB_MAX + 1];
} kick_ctx_t;

static void kick_cb(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    kick_ctx_t *x = privdata;
    pl_conn_t *c = x->conn;
    redisReply *r = reply;
    if (pl_conn_open(c)) {
        if (!r || r->type != REDIS_REPLY_INTEGER) {
            api_error(c, 503, "unavailable", "redis is unreachable; retry later", x->keep);
        } else {
            pl_buf_t b = {0};
            pl_buf_adds(&b, "{\"user\":");
            pl_buf_json_str(&b, x->user, strlen(x->user));
            pl_buf_printf(&b, ",\"disconnected\":true,\"revoked\":%s,\"instances\":%lld}",
                          x->revoke ? "true" : "false", r->integer);
            respond(c, 200, &b, x->keep);
            pl_buf_free(&b);
        }
    }
    int keep = x->keep;
    free(x);
    pl_conn_http_resume(c, keep);
}

/* A reason for the notice: 1-100 bytes of UTF-8 without control characters. */
static int reason_ok(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > 100 || !pl_utf8_valid((const uint8_t *)r, n)) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] < 0x20 || r[i] == 0x7f) return 0;
    return 1;
}

/*
 * POST /api/users/{id}/disconnect, body optional {"reason":"..","revoke":bool}: every connection
 * of the user on every instance gets server_notice "disconnected" (the reason as its message)
 * and close 4003; unless revoke is false, the user's tokens issued before now are refused from
 * now on (a ban, a password change: an old token must not simply reconnect). Answered once
 * Redis has it: {"user":..,"disconnected":true,"revoked":bool,"instances":n}.
 */
static int user_disconnect(pl_conn_t *c, const char *path, size_t len, int method, int keep)
{
    static const char tail[] = "/disconnect";
    const size_t tlen = sizeof tail - 1;
    const char *id = path + 11; /* after "/api/users/" */
    size_t idlen = len > 11 + tlen ? len - 11 - tlen : 0;
    kick_ctx_t *x = NULL;
    char user[PL_JWT_SUB_MAX + 1], asker[PL_JWT_SUB_MAX + 1];
    if (!idlen || memcmp(path + len - tlen, tail, tlen) != 0 || memchr(id, '/', idlen)) {
        api_error(c, 404, "not_found", "no such endpoint", keep);
        return keep;
    }
    if (method != HTTP_POST) {
        api_error(c, 405, "method_not_allowed", "method not allowed on this endpoint", keep);
        return keep;
    }
    int cred = credential(c, asker);
    if (cred != CRED_KEY) {
        api_error(c, cred == CRED_USER ? 403 : 401,
                  cred == CRED_USER ? "forbidden" : "unauthorized",
                  "Authorization: Bearer <PARLEY_API_KEY> required", keep);
        return keep;
    }
    if (path_segment(id, idlen, user) != 0) {
        api_error(c, 400, "bad_request", "bad user id", keep);
        return keep;
    }
    const pl_buf_t *body = &c->http->body;
    const char *reason = "disconnected by the server";
    int revoke = 1;
    cJSON *j = NULL;
    if (body->len) {
        j = cJSON_ParseWithLength(body->data, body->len);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "reason");
        const cJSON *rv = cJSON_GetObjectItemCaseSensitive(j, "revoke");
        if (!cJSON_IsObject(j) || (r && (!cJSON_IsString(r) || !reason_ok(r->valuestring))) ||
            (rv && !cJSON_IsBool(rv))) {
            cJSON_Delete(j);
            api_error(c, 400, "bad_request",
                      "body must be {} or {\"reason\":\"<1-100 bytes, no control characters>\","
                      "\"revoke\":true|false}",
                      keep);
            return keep;
        }
        if (r) reason = r->valuestring;
        if (rv) revoke = cJSON_IsTrue(rv);
    }
    if (!(x = calloc(1, sizeof *x))) {
        cJSON_Delete(j);
        api_error(c, 503, "unavailable", "out of memory", 0);
        return 0;
    }
    x->conn = c;
    x->keep = keep;
    memcpy(x->user, user, sizeof user);
    x->revoke = revoke;
    int rc = pl_chat_disconnect(pl_shard_of_conn(c), user, reason, revoke, kick_cb, x);
    cJSON_Delete(j);
    if (rc != 0) {
        free(x);
        api_error(c, 503, "unavailable", "redis is unreachable; retry later", keep);
        return keep;
    }
    char addr[INET6_ADDRSTRLEN];
    pl_info("disconnect of user %s%s asked over the API by %s", user,
            revoke ? " (tokens revoked)" : "", client_addr(c, addr, sizeof addr));
    return PL_CONN_REQ_ASYNC;
}

int pl_api_request(pl_conn_t *c)
{
    pl_server_t *srv = pl_shard_of_conn(c)->srv;
    /* A draining instance keeps no connection open past its answer. */
    int keep = pl_http_keep_alive(c->http) && pl_server_state(srv) == PL_SERVER_RUNNING;
    int method = pl_http_method(c->http);
    const char *path;
    size_t len;
    pl_http_path(c->http, &path, &len);
    /* /metrics: on PARLEY_METRICS_LISTEN's listener only when it is set, else here. */
    int metrics_here = pl_metrics_only(c) || !srv->cfg.metrics_listen_host;

    if (path_is(path, len, "/health")) {
        if (method != HTTP_GET && method != HTTP_HEAD) goto not_allowed;
        health(c, keep);
    } else if (path_is(path, len, "/metrics") && metrics_here) {
        if (method != HTTP_GET) goto not_allowed;
        return pl_metrics_serve(c, keep);
    } else if (pl_metrics_only(c)) {
        api_error(c, 404, "not_found", "this listener serves /metrics and /health only", keep);
    } else if (path_is(path, len, "/api/websocket/status")) {
        if (method != HTTP_GET) goto not_allowed;
        status(c, keep);
    } else if (path_is(path, len, "/api/websocket/token")) {
        if (method != HTTP_POST) goto not_allowed;
        token(c, keep, 0);
    } else if (path_is(path, len, "/api/dev/token") && srv->cfg.dev) {
        if (method != HTTP_POST) goto not_allowed;
        token(c, keep, 1);
    } else if (path_is(path, len, "/api/users/me/rooms")) {
        if (method != HTTP_GET) goto not_allowed;
        return my_rooms(c, keep);
    } else if (len > 11 && memcmp(path, "/api/users/", 11) == 0) {
        return user_disconnect(c, path, len, method, keep);
    } else if (len > 20 && memcmp(path, "/api/websocket/users", 20) == 0) {
        return users_api(c, path, len, method, keep, path + 20, len - 20);
    } else if (len > 11 && memcmp(path, "/api/admin/", 11) == 0) {
        return admin(c, path, len, method, keep);
    } else if (len > 11 && memcmp(path, "/api/rooms/", 11) == 0) {
        return rooms_api(c, path, len, method, keep);
    } else if (path_is(path, len, "/ws")) {
        api_error(c, 400, "bad_request", "expected a WebSocket upgrade", keep);
    } else if (srv->web && !(len >= 5 && memcmp(path, "/api/", 5) == 0)) {
        return pl_static_serve(srv->web, c, method, path, len, keep);
    } else {
        api_error(c, 404, "not_found", "no such endpoint", keep);
    }
    return keep;
not_allowed:
    api_error(c, 405, "method_not_allowed", "method not allowed on this endpoint", keep);
    return keep;
}

/* 1 if the upgrade's Origin may open a WebSocket: none (not a browser), or one of
 * PARLEY_ALLOWED_ORIGINS (config.c keeps them trimmed and comma-joined), compared
 * case-insensitively as schemes and hosts are. */
static int origin_allowed(const pl_config_t *cfg, const char *origin)
{
    if (!origin || !cfg->allowed_origins) return 1;
    size_t olen = strlen(origin);
    for (const char *p = cfg->allowed_origins; *p;) {
        size_t len = strcspn(p, ",");
        if (len == olen && strncasecmp(p, origin, olen) == 0) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Refuse an upgrade before it happens (it costs an HTTP answer, nothing else), counted. */
static void refuse(pl_conn_t *c, pl_limits_reason_t why, int status, const char *code,
                   const char *msg)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    pl_counter_add(&s->stats.refused[why], 1);
    if (pl_log_enabled(PL_LOG_DEBUG)) {
        char addr[INET6_ADDRSTRLEN];
        pl_debug("upgrade from %s refused: %s", client_addr(c, addr, sizeof addr), msg);
    }
    api_error(c, status, code, msg, 0);
}

/* Count the WebSocket against PARLEY_MAX_CONNS_PER_IP and PARLEY_MAX_CONNS (limits.h); on
 * success the session remembers where, and releases it when the connection closes. 0, or -1
 * after refusing it with 503. */
static int count_conn(pl_conn_t *c)
{
    pl_shard_t *s = pl_shard_of_conn(c);
    struct sockaddr_storage who;
    if (client_sockaddr(c, &who) != 0) who.ss_family = AF_UNSPEC; /* counted in all only */
    pl_limits_reason_t r =
        pl_limits_conn_acquire(s->srv->conns, (struct sockaddr *)&who, &pl_session_of(c)->slot);
    if (r == PL_LIMITS_OK) return 0;
    if (r == PL_LIMITS_PER_ADDR)
        refuse(c, r, 503, "too_many_connections",
               "too many connections from this address (PARLEY_MAX_CONNS_PER_IP)");
    else
        refuse(c, r, 503, "unavailable",
               "this instance is full (PARLEY_MAX_CONNS): connect to another");
    return -1;
}

const char *pl_api_upgrade_token(const pl_http_t *h, size_t *len)
{
    const char *tok = bearer(h, len);
    if (!tok) tok = pl_http_query(h, "token", len);
    /* "?token=" is no token: before this, it skipped the check but logged `user` unset. */
    return tok && *len ? tok : NULL;
}

void pl_api_upgrade(pl_conn_t *c)
{
    const pl_http_t *h = c->http;
    const pl_config_t *cfg = &pl_shard_of_conn(c)->srv->cfg;
    const char *path;
    size_t len;
    pl_http_path(h, &path, &len);
    if (!path_is(path, len, "/ws") || pl_metrics_only(c)) {
        api_error(c, 404, "not_found", "WebSocket endpoint is /ws", 0);
        return;
    }
    if (pl_server_state(pl_shard_of_conn(c)->srv) != PL_SERVER_RUNNING) {
        api_error(c, 503, "unavailable", "this instance is shutting down: connect to another", 0);
        return;
    }
    if (!origin_allowed(cfg, pl_http_header(h, PL_H_ORIGIN))) {
        refuse(c, PL_LIMITS_ORIGIN, 403, "forbidden_origin",
               "this page's origin may not connect (PARLEY_ALLOWED_ORIGINS)");
        return;
    }
    /* A token on the upgrade is checked before switching protocols. */
    size_t tlen = 0;
    const char *tok = pl_api_upgrade_token(h, &tlen);
    pl_jwt_claims_t cl = {.exp = 0};
    const char *user = cl.sub;
    if (tok) {
        int rc = pl_jwt_check(&cfg->jwt, tok, tlen, pl_now_ms() / 1000, &cl);
        if (rc != 0) {
            if (pl_log_enabled(PL_LOG_DEBUG)) {
                char addr[INET6_ADDRSTRLEN];
                pl_debug("upgrade from %s refused: %s", client_addr(c, addr, sizeof addr),
                         pl_jwt_strerror(rc));
            }
            pl_session_auth_failed(c, rc);
            api_error(c, 401, "unauthorized", pl_jwt_strerror(rc), 0);
            return;
        }
    }
    if (pl_log_enabled(PL_LOG_DEBUG)) {
        char addr[INET6_ADDRSTRLEN];
        pl_debug("websocket from %s%s%s", client_addr(c, addr, sizeof addr), tok ? " as " : "",
                 tok ? user : "");
    }
    if (count_conn(c) != 0) return;
    if (pl_conn_upgrade(c) != 0) {
        pl_limits_conn_release(pl_shard_of_conn(c)->srv->conns, &pl_session_of(c)->slot);
        return;
    }
    if (tok) pl_session_start(c, user, cl.exp, cl.iat);
}
