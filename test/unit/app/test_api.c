/* Unit tests for src/app/api.c through the loopback transport (harness.h): HTTP routes answered
 * without a socket. */
#include "harness.h"
#include "parley/app/api.h"

static void token_route(void)
{
    pl_sock_t *s = cl_http("POST /api/websocket/token HTTP/1.1\r\nHost: chat.example:8443\r\n"
                           "Authorization: Bearer unit-key\r\nContent-Length: 19\r\n\r\n"
                           "{\"user_id\":\"alice\"}");
    turn();
    const char *out = cl_output(s);
    CHECK(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    const char *body = strstr(out, "\r\n\r\n");
    cJSON *j = body ? cJSON_Parse(body + 4) : NULL;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(j, "websocket_url");
    CHECK(cJSON_IsString(tok) && cJSON_IsString(url));
    if (cJSON_IsString(tok)) {
        char sub[PL_JWT_SUB_MAX + 1];
        CHECK_EQ_INT(pl_jwt_verify("unit-secret", 11, tok->valuestring, strlen(tok->valuestring),
                                   pl_now_ms() / 1000, sub),
                     0);
        CHECK_STR(sub, "alice");
    }
    if (cJSON_IsString(url)) CHECK_STR(url->valuestring, "ws://chat.example:8443/ws");
    cJSON_Delete(j);
    /* The same connection, a wrong key: 401, still kept alive. */
    char wrong[] = "POST /api/websocket/token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                   "Content-Length: 2\r\n\r\n{}";
    pl_sock_feed(s, wrong, strlen(wrong));
    turn();
    CHECK(strstr(cl_output(s), "HTTP/1.1 401 ") != NULL);
    CHECK(pl_sock_open(s));
}

static void health_route(void)
{
    pl_sock_t *s = cl_http("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    turn();
    const char *out = cl_output(s);
    CHECK(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    CHECK(strstr(out, "\"status\":\"healthy\"") && strstr(out, "\"server_id\":\"unit-1\"") &&
          strstr(out, "\"database\":\"none\""));
    /* Redis down: 503 unhealthy. */
    atomic_store(&shard->redis.connected, 0);
    pl_sock_t *t = cl_http("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    turn();
    CHECK(strncmp(cl_output(t), "HTTP/1.1 503 ", 13) == 0);
    atomic_store(&shard->redis.connected, 1);
}

/* The token an upgrade carries, as pl_api_upgrade looks for it; it points into up_http. */
static pl_http_t *up_http;
static const char *up_token(const char *head, size_t *len)
{
    pl_http_free(up_http);
    pl_http_t *h = up_http = pl_http_new();
    size_t used;
    int status;
    CHECK_EQ_INT(pl_http_feed(h, head, strlen(head), &used, &status), PL_HTTP_UPGRADE);
    return pl_api_upgrade_token(h, len);
}

static void upgrade_token(void)
{
    size_t n = 0;
    const char *t = up_token("GET /ws?token=abc HTTP/1.1\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\n\r\n",
                             &n);
    CHECK(t && n == 3 && memcmp(t, "abc", 3) == 0);
    /* The header wins over the query. */
    t = up_token("GET /ws?token=abc HTTP/1.1\r\nAuthorization: Bearer  xyz \r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                 &n);
    CHECK(t && n == 3 && memcmp(t, "xyz", 3) == 0);
    /* An empty token is none: the upgrade then proceeds unauthenticated, as without one (it
     * skipped the check but its debug log read the unset user). */
    CHECK(up_token("GET /ws?token= HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                   &n) == NULL);
    CHECK(up_token("GET /ws?token=&x=1 HTTP/1.1\r\nAuthorization: Bearer \r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                   &n) == NULL);
    CHECK(up_token("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", &n) ==
          NULL);
    pl_http_free(up_http);
    up_http = NULL;
}

int main(void)
{
    gw_init(0);
    RUN(token_route);
    RUN(health_route);
    RUN(upgrade_token);
    UNIT_EXIT();
}
