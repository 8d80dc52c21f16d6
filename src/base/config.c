/*
 * config: one table drives flags, environment variables, --help and
 * validation, so a new setting is one row: where it goes in pl_config_t, its
 * kind and range, or a parser of its own. Defaults that depend on another
 * setting are derived after every row is applied (derive()).
 */
#include "parley/base/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "parley/base/buf.h"
#include "parley/base/log.h"

#ifndef PL_VERSION
#define PL_VERSION "0.0.0-dev"
#endif

typedef enum { T_STR, T_INT, T_SIZE, T_BOOL, T_SPECIAL } kind_t;

typedef int (*parse_fn)(pl_config_t *c, const char *v, char *err, size_t n);

typedef struct {
    const char *flag;
    const char *env;
    kind_t kind;
    size_t off; /**< where the value goes: char * (T_STR), int (T_INT, T_BOOL), size_t (T_SIZE) */
    const char *def; /**< NULL: unset, or derived from another setting (derive()) */
    long long min, max;
    parse_fn parse; /**< T_SPECIAL */
    const char *help;
} opt_t;

static int parse_listen(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_tls_listen(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_metrics_listen(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_redis(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_server_id(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_log_level(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_subscribe(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_prefix(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_database_url(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_public_url(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_proxies(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_jwt_secrets(pl_config_t *c, const char *v, char *err, size_t n);
static int parse_origins(pl_config_t *c, const char *v, char *err, size_t n);

#define AT(field) offsetof(pl_config_t, field)

static const opt_t opts[] = {
    {"listen", "PARLEY_LISTEN", T_SPECIAL, 0, "0.0.0.0:8080", 0, 0, parse_listen,
     "host:port to listen on (HTTP and WebSocket), or none (TLS only)"},
    {"tls-listen", "PARLEY_TLS_LISTEN", T_SPECIAL, 0, NULL, 0, 0, parse_tls_listen,
     "host:port to listen on with TLS (HTTPS and WSS) beside or instead of PARLEY_LISTEN"},
    {"metrics-listen", "PARLEY_METRICS_LISTEN", T_SPECIAL, 0, NULL, 0, 0, parse_metrics_listen,
     "host:port of a plain-HTTP listener serving only /metrics and /health (unset: /metrics is "
     "served on PARLEY_LISTEN and PARLEY_TLS_LISTEN)"},
    {"tls-cert", "PARLEY_TLS_CERT", T_STR, AT(tls_cert), NULL, 0, 0, NULL,
     "PEM certificate chain for PARLEY_TLS_LISTEN (reloaded on SIGHUP)"},
    {"tls-key", "PARLEY_TLS_KEY", T_STR, AT(tls_key), NULL, 0, 0, NULL,
     "PEM private key for PARLEY_TLS_LISTEN (reloaded on SIGHUP)"},
    {"tls-handshake-timeout", "PARLEY_TLS_HANDSHAKE_TIMEOUT", T_INT, AT(tls_handshake_timeout),
     "10", 1, 600, NULL, "seconds a TLS client has to finish its handshake"},
    {"tls-ticket-lifetime", "PARLEY_TLS_TICKET_LIFETIME", T_INT, AT(tls_ticket_lifetime), "3600", 0,
     86400, NULL,
     "seconds a TLS session ticket can resume a session, and how often its key changes (0: no "
     "tickets, every reconnect pays a full handshake)"},
    {"shards", "PARLEY_SHARDS", T_INT, AT(shards), NULL, 1, 64, NULL,
     "event loops, each with its own SO_REUSEPORT socket (default: online CPUs)"},
    {"server-id", "PARLEY_SERVER_ID", T_SPECIAL, 0, NULL, 0, 0, parse_server_id,
     "this instance's id, 1-64 of [A-Za-z0-9_.:-] (default: hostname-pid)"},
    {"redis-url", "PARLEY_REDIS_URL", T_SPECIAL, 0, "redis://127.0.0.1:6379/0", 0, 0, parse_redis,
     "Redis for fan-out and state, redis://[[user]:password@]host:port/db; for a Redis Cluster "
     "(PARLEY_REDIS_CLUSTER=1) one or more seed nodes, redis://[[user]:password@]h1:p1,h2:p2"},
    {"redis-wait-replicas", "PARLEY_REDIS_WAIT_REPLICAS", T_INT, AT(redis_wait_replicas), "1", 0,
     16, NULL,
     "cluster mode: replicas a message must reach (WAIT) before it is delivered, stored and "
     "acked, so that a failover cannot hand its seq out again; 0: none (faster, not "
     "failover-safe)"},
    {"redis-cluster", "PARLEY_REDIS_CLUSTER", T_BOOL, AT(redis_cluster), "0", 0, 1, NULL,
     "1: PARLEY_REDIS_URL names seed nodes of a Redis Cluster (sharded Pub/Sub, keys with hash "
     "tags, work across slots in single-slot steps: docs/redis.md)"},
    {"jwt-secret", "PARLEY_JWT_SECRET", T_STR, AT(jwt_secret), NULL, 0, 0, NULL,
     "HS256 secret for client tokens (this or PARLEY_JWT_SECRETS is required)"},
    {"jwt-secrets", "PARLEY_JWT_SECRETS", T_SPECIAL, 0, NULL, 0, 0, parse_jwt_secrets,
     "kid1:secret1,kid2:secret2: several HS256 secrets accepted at once (key rotation), chosen "
     "by a token's kid; the first signs minted tokens. Instead of PARLEY_JWT_SECRET"},
    {"jwt-issuer", "PARLEY_JWT_ISSUER", T_STR, AT(jwt_issuer), NULL, 0, 0, NULL,
     "if set, tokens must carry this iss (minted ones do)"},
    {"jwt-audience", "PARLEY_JWT_AUDIENCE", T_STR, AT(jwt_audience), NULL, 0, 0, NULL,
     "if set, tokens' aud must name this audience (minted ones do)"},
    {"jwt-leeway", "PARLEY_JWT_LEEWAY", T_INT, AT(jwt_leeway), "0", 0, 300, NULL,
     "seconds of clock skew allowed on a token's exp and nbf"},
    {"token-ttl", "PARLEY_TOKEN_TTL", T_INT, AT(token_ttl), NULL, 1, 31536000, NULL,
     "lifetime in seconds of a token minted by POST /api/websocket/token that asks for none "
     "(default: 3600, or PARLEY_TOKEN_MAX_TTL if lower)"},
    {"token-max-ttl", "PARLEY_TOKEN_MAX_TTL", T_INT, AT(token_max_ttl), "86400", 1, 31536000, NULL,
     "longest lifetime in seconds a token request may ask for (expires_in)"},
    {"api-key", "PARLEY_API_KEY", T_STR, AT(api_key), NULL, 0, 0, NULL,
     "key for POST /api/websocket/token (required)"},
    {"max-frame", "PARLEY_MAX_FRAME", T_SIZE, AT(max_frame), "65536", 1024, 16 << 20, NULL,
     "largest client message, bytes; larger closes with 1009"},
    {"max-text", "PARLEY_MAX_TEXT", T_SIZE, AT(max_text), NULL, 1, 16 << 20, NULL,
     "largest message text, bytes; larger gets error too_large (default: 16384, or what fits "
     "in PARLEY_MAX_FRAME with 512 bytes of envelope)"},
    {"max-rooms", "PARLEY_MAX_ROOMS", T_SIZE, AT(max_rooms), "1024", 1, 1 << 20, NULL,
     "rooms one connection may hold"},
    {"max-outbuf", "PARLEY_MAX_OUTBUF", T_SIZE, AT(max_outbuf), "16777216", 65536, 1LL << 30, NULL,
     "unread bytes queued to one client at which it is cut off at once (close 4008)"},
    {"max-outbuf-soft", "PARLEY_MAX_OUTBUF_SOFT", T_SIZE, AT(outbuf_soft), NULL, 4096, 1LL << 30,
     NULL,
     "unread bytes a client may keep queued for at most PARLEY_MAX_OUTBUF_SOFT_SECONDS "
     "(default: a quarter of PARLEY_MAX_OUTBUF)"},
    {"max-outbuf-soft-seconds", "PARLEY_MAX_OUTBUF_SOFT_SECONDS", T_INT, AT(outbuf_soft_s), "30", 1,
     3600, NULL, "seconds a client may stay above PARLEY_MAX_OUTBUF_SOFT"},
    {"auth-timeout", "PARLEY_AUTH_TIMEOUT", T_INT, AT(auth_timeout), "10", 1, 3600, NULL,
     "seconds a client has to authenticate"},
    {"ping-interval", "PARLEY_PING_INTERVAL", T_INT, AT(ping_interval), NULL, 1, 3600, NULL,
     "seconds of client silence before the server pings (default: 30, or 2/5 of "
     "PARLEY_IDLE_TIMEOUT if that is set lower)"},
    {"idle-timeout", "PARLEY_IDLE_TIMEOUT", T_INT, AT(idle_timeout), NULL, 2, 86400, NULL,
     "seconds of client silence before the server drops it (default: 75, or 5/2 of "
     "PARLEY_PING_INTERVAL if that is set higher)"},
    {"http-idle-timeout", "PARLEY_HTTP_IDLE_TIMEOUT", T_INT, AT(http_idle_timeout), "120", 1, 86400,
     NULL,
     "seconds an idle keep-alive HTTP connection is kept (keep it above a proxy's "
     "upstream keepalive_timeout)"},
    {"http-request-timeout", "PARLEY_HTTP_REQUEST_TIMEOUT", T_INT, AT(http_request_timeout), "10",
     1, 3600, NULL,
     "seconds a client has to send a whole HTTP request (also a new connection's first)"},
    {"drain-seconds", "PARLEY_DRAIN_SECONDS", T_INT, AT(drain_seconds), "10", 0, 3600, NULL,
     "on SIGTERM or POST /api/admin/drain, clients are closed (told to reconnect) spread over "
     "this many seconds before the process exits; 0: all at once"},
    {"log-level", "PARLEY_LOG_LEVEL", T_SPECIAL, 0, "info", 0, 0, parse_log_level,
     "error, warn, info or debug"},
    {"subscribe", "PARLEY_SUBSCRIBE", T_SPECIAL, 0, "pattern", 0, 0, parse_subscribe,
     "pattern: PSUBSCRIBE room:* (every message of every room reaches this instance); rooms: "
     "SUBSCRIBE to each room held here, for as long as it is (docs/scaling.md)"},
    {"database-url", "PARLEY_DATABASE_URL", T_SPECIAL, 0, NULL, 0, 0, parse_database_url,
     "PostgreSQL (libpq string or postgresql:// URL); unset: messages are not stored"},
    {"db-workers", "PARLEY_DB_WORKERS", T_INT, AT(db_workers), "2", 1, 64, NULL,
     "database worker threads, one connection each"},
    {"db-queue", "PARLEY_DB_QUEUE", T_SIZE, AT(db_queue), "100000", 1, 100000000, NULL,
     "messages waiting to be stored; when full, sends get error unavailable"},
    {"db-required", "PARLEY_DB_REQUIRED", T_BOOL, AT(db_required), "1", 0, 1, NULL,
     "refuse to start while the database is unreachable (0: start, acks wait for it)"},
    {"open-rooms", "PARLEY_OPEN_ROOMS", T_BOOL, AT(open_rooms), "0", 0, 1, NULL,
     "anyone may join any room, becoming a member (dev mode)"},
    {"dev", "PARLEY_DEV", T_BOOL, AT(dev), "0", 0, 1, NULL,
     "development mode: POST /api/dev/token mints a token for any user without the API key "
     "(never on a public server)"},
    {"web-root", "PARLEY_WEB_ROOT", T_STR, AT(web_root), NULL, 0, 0, NULL,
     "directory of static files served at / (GET and HEAD; the web app in web/); unset: none"},
    {"stream-len", "PARLEY_STREAM_LEN", T_SIZE, AT(stream_len), "1000", 10, 10000000, NULL,
     "recent messages per room kept in Redis for recovery"},
    {"recover-max", "PARLEY_RECOVER_MAX", T_SIZE, AT(recover_max), "10000", 1, 1000000, NULL,
     "most missed messages replayed per room on resubscribe"},
    {"redis-prefix", "PARLEY_REDIS_PREFIX", T_SPECIAL, 0, "ws:", 0, 0, parse_prefix,
     "prefix of the presence/typing/read/offline keys in Redis (docs/redis.md)"},
    {"offline-max", "PARLEY_OFFLINE_MAX", T_SIZE, AT(offline_max), "1000", 1, 1000000, NULL,
     "direct messages kept per offline user; older ones are dropped from the queue"},
    {"public-url", "PARLEY_PUBLIC_URL", T_SPECIAL, 0, NULL, 0, 0, parse_public_url,
     "how clients reach this service, http(s)://host[:port][/prefix]; names the WebSocket URL "
     "in token responses (default: from the request)"},
    {"trusted-proxies", "PARLEY_TRUSTED_PROXIES", T_SPECIAL, 0, "", 0, 0, parse_proxies,
     "addresses or networks (a.b.c.d/n, comma-separated) whose X-Forwarded-* headers are "
     "believed"},
    {"rate-limit", "PARLEY_RATE_LIMIT", T_INT, AT(rate_limit), "20", 0, 1000000, NULL,
     "frames per second one connection may send: room and direct messages, typing, reads "
     "(a token bucket); past it error rate_limited; 0: no limit"},
    {"rate-burst", "PARLEY_RATE_BURST", T_INT, AT(rate_burst), NULL, 1, 1000000, NULL,
     "frames one connection may send at once above PARLEY_RATE_LIMIT (default: twice it)"},
    {"subscribe-rate", "PARLEY_SUBSCRIBE_RATE", T_INT, AT(subscribe_rate), "10", 0, 1000000, NULL,
     "rooms per second one connection may subscribe to or leave, after a first "
     "PARLEY_MAX_ROOMS at once; past it error rate_limited; 0: no limit"},
    {"max-conns-per-ip", "PARLEY_MAX_CONNS_PER_IP", T_INT, AT(max_conns_per_ip), "500", 0, 1000000,
     NULL,
     "WebSockets one client address may hold on this instance (the X-Forwarded-For address "
     "from PARLEY_TRUSTED_PROXIES; an IPv6 address by its /64); past it HTTP 503; 0: no limit"},
    {"max-conns", "PARLEY_MAX_CONNS", T_INT, AT(max_conns), NULL, 1, 100000000, NULL,
     "WebSockets this instance holds; past it HTTP 503 (default: the open-files limit less 100)"},
    {"allowed-origins", "PARLEY_ALLOWED_ORIGINS", T_SPECIAL, 0, NULL, 0, 0, parse_origins,
     "browser origins (scheme://host[:port], comma-separated, or *) allowed to open a WebSocket; "
     "another Origin gets 403, none (not a browser) is allowed; unset: any"},
    {"http-max-header", "PARLEY_HTTP_MAX_HEADER", T_SIZE, AT(http_max_header), "8192", 1024,
     1 << 20, NULL, "bytes of an HTTP request line and headers; more gets 431"},
    {"http-max-body", "PARLEY_HTTP_MAX_BODY", T_SIZE, AT(http_max_body), "8192", 0, 1 << 24, NULL,
     "bytes of an HTTP request body; more gets 413"},
    {"migrate", "PARLEY_MIGRATE", T_BOOL, AT(migrate), "0", 0, 1, NULL,
     "apply the database schema to PARLEY_DATABASE_URL and exit"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static int failf(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

const char *pl_config_version(void)
{
    return "parleyd " PL_VERSION;
}

static void usage(void)
{
    printf("usage: parleyd [--flag value]...\n\n"
           "Parley: a horizontally scalable WebSocket chat gateway.\n"
           "Every flag has an environment variable; the flag wins.\n\n");
    for (size_t i = 0; i < NOPTS; i++)
        printf("  --%-24s %-31s %s%s%s%s\n", opts[i].flag, opts[i].env, opts[i].help,
               opts[i].def && *opts[i].def ? " [" : "", opts[i].def ? opts[i].def : "",
               opts[i].def && *opts[i].def ? "]" : "");
    printf("  --%-24s %-31s %s\n", "help", "", "print this and exit");
    printf("  --%-24s %-31s %s\n", "version", "", "print the version and exit");
}

static int parse_num(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* host:port into *host (allocated) and *port; "none" or "" turns the listener off. */
static int host_port(const char *v, const char *env, char **host, int *port, char *err, size_t n)
{
    free(*host);
    *host = NULL;
    if (!*v || strcmp(v, "none") == 0) return 0;
    const char *colon = strrchr(v, ':');
    long long num;
    if (!colon || colon == v || parse_num(colon + 1, 1, 65535, &num) != 0)
        return failf(err, n, "%s: expected host:port or none, got '%.60s'", env, v);
    /* [::1]:8080: an IPv6 literal in brackets. */
    if (v[0] == '[' && colon[-1] == ']' && colon - v == 2)
        return failf(err, n, "%s: expected host:port or none, got '%.60s'", env, v);
    if (v[0] == '[' && colon[-1] == ']')
        *host = strndup(v + 1, (size_t)(colon - v - 2));
    else
        *host = strndup(v, (size_t)(colon - v));
    *port = (int)num;
    return 0;
}

static int parse_listen(pl_config_t *c, const char *v, char *err, size_t n)
{
    return host_port(v, "PARLEY_LISTEN", &c->listen_host, &c->listen_port, err, n);
}

static int parse_tls_listen(pl_config_t *c, const char *v, char *err, size_t n)
{
    return host_port(v, "PARLEY_TLS_LISTEN", &c->tls_listen_host, &c->tls_listen_port, err, n);
}

static int parse_metrics_listen(pl_config_t *c, const char *v, char *err, size_t n)
{
    return host_port(v, "PARLEY_METRICS_LISTEN", &c->metrics_listen_host, &c->metrics_listen_port,
                     err, n);
}

/* Decode %XX escapes of a URL's userinfo part into a new string; NULL if malformed. */
static char *pct_decode(const char *p, size_t len)
{
    char *out = malloc(len + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '%') {
            *o++ = p[i];
            continue;
        }
        if (i + 2 >= len || !isxdigit((unsigned char)p[i + 1]) ||
            !isxdigit((unsigned char)p[i + 2])) {
            free(out);
            return NULL;
        }
        char hex[3] = {p[i + 1], p[i + 2], 0};
        unsigned long v = strtoul(hex, NULL, 16);
        if (v == 0) { /* a NUL would cut the string short */
            free(out);
            return NULL;
        }
        *o++ = (char)v;
        i += 2;
    }
    *o = '\0';
    return out;
}

/* The URL as it may be shown: with any password replaced by "***". */
static void redacted(const char *v, char *out, size_t n)
{
    const char *p = strncmp(v, "redis://", 8) == 0 ? v + 8 : v;
    const char *at = strchr(p, '@');
    const char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
    if (!colon)
        snprintf(out, n, "%.200s", v);
    else
        snprintf(out, n, "%.*s:***%.200s", (int)(colon - v), v, at);
}

static int parse_redis(pl_config_t *c, const char *v, char *err, size_t n)
{
    char shown[256];
    redacted(v, shown, sizeof shown);
    const char *p = v;
    if (strncmp(p, "redis://", 8) != 0)
        return failf(err, n,
                     "PARLEY_REDIS_URL: expected redis://[[user]:password@]host:port/db, got '%s'",
                     shown);
    p += 8;
    const char *slash0 = strchr(p, '/');
    const char *at = memchr(p, '@', slash0 ? (size_t)(slash0 - p) : strlen(p));
    free(c->redis_user);
    free(c->redis_password);
    c->redis_user = c->redis_password = NULL;
    if (at) {
        /* user:password@ (Redis 6 ACL user) or :password@ (requirepass); a bare "x@" is taken
         * as a password, as redis-cli does. */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if (colon && colon > p && !(c->redis_user = pct_decode(p, (size_t)(colon - p))))
            return failf(err, n, "PARLEY_REDIS_URL: bad escape in the user name of '%s'", shown);
        if (!(c->redis_password = pct_decode(pw, (size_t)(at - pw))) || !*c->redis_password)
            return failf(err, n, "PARLEY_REDIS_URL: empty or badly escaped password in '%s'",
                         shown);
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    long long db = 0;
    if (slash && slash[1] && parse_num(slash + 1, 0, 1000, &db) != 0)
        return failf(err, n, "PARLEY_REDIS_URL: bad database number in '%s'", shown);
    for (int i = 0; i < c->redis_nhosts; i++)
        free(c->redis_hosts[i]);
    c->redis_nhosts = 0;
    /* host:port, or several separated by commas: a Redis Cluster's seed nodes. */
    for (const char *h = p;;) {
        const char *comma = memchr(h, ',', (size_t)(end - h));
        const char *h_end = comma ? comma : end;
        const char *colon = memchr(h, ':', (size_t)(h_end - h));
        const char *host_end = colon ? colon : h_end;
        long long port = 6379;
        if (host_end == h) return failf(err, n, "PARLEY_REDIS_URL: no host in '%s'", shown);
        if (colon) {
            char tmp[16];
            size_t len = (size_t)(h_end - colon - 1);
            if (len == 0 || len >= sizeof tmp)
                return failf(err, n, "PARLEY_REDIS_URL: bad port in '%s'", shown);
            memcpy(tmp, colon + 1, len);
            tmp[len] = '\0';
            if (parse_num(tmp, 1, 65535, &port) != 0)
                return failf(err, n, "PARLEY_REDIS_URL: bad port in '%s'", shown);
        }
        if (c->redis_nhosts == PL_CONFIG_REDIS_HOSTS_MAX)
            return failf(err, n, "PARLEY_REDIS_URL: more than %d hosts in '%s'",
                         PL_CONFIG_REDIS_HOSTS_MAX, shown);
        c->redis_hosts[c->redis_nhosts] = strndup(h, (size_t)(host_end - h));
        c->redis_ports[c->redis_nhosts++] = (int)port;
        if (!comma) break;
        h = comma + 1;
    }
    free(c->redis_host);
    c->redis_host = strdup(c->redis_hosts[0]);
    c->redis_port = c->redis_ports[0];
    c->redis_db = (int)db;
    return 0;
}

static int parse_server_id(pl_config_t *c, const char *v, char *err, size_t n)
{
    size_t len = strlen(v);
    if (len < 1 || len > 64)
        return failf(err, n, "PARLEY_SERVER_ID: must be 1-64 bytes, got %zu", len);
    /* It names Redis keys and a channel, and appears in logs: keep it plain. */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == ':' || ch == '-'))
            return failf(err, n, "PARLEY_SERVER_ID: only [A-Za-z0-9_.:-] allowed, got '%.64s'", v);
    }
    free(c->server_id);
    c->server_id = strdup(v);
    return 0;
}

static int parse_log_level(pl_config_t *c, const char *v, char *err, size_t n)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v, names[i]) == 0) {
            c->log_level = i; /* the order of pl_log_level_t */
            return 0;
        }
    if (strcmp(v, "warning") == 0) {
        c->log_level = PL_LOG_WARN;
        return 0;
    }
    return failf(err, n, "PARLEY_LOG_LEVEL: expected error, warn, info or debug, got '%.40s'", v);
}

static int parse_subscribe(pl_config_t *c, const char *v, char *err, size_t n)
{
    if (strcmp(v, "pattern") == 0 || strcmp(v, "rooms") == 0) {
        c->subscribe_rooms = v[0] == 'r';
        return 0;
    }
    return failf(err, n, "PARLEY_SUBSCRIBE: expected pattern or rooms, got '%.40s'", v);
}

static int parse_prefix(pl_config_t *c, const char *v, char *err, size_t n)
{
    if (strlen(v) > 32) return failf(err, n, "PARLEY_REDIS_PREFIX: at most 32 bytes");
    free(c->redis_prefix);
    c->redis_prefix = strdup(v);
    return 0;
}

static int parse_jwt_secrets(pl_config_t *c, const char *v, char *err, size_t n)
{
    pl_jwt_keyset_free(&c->jwt);
    return *v ? pl_jwt_keyset_parse(&c->jwt, v, err, n) : 0;
}

/* The key set tokens are checked and minted with: PARLEY_JWT_SECRETS, or the one
 * PARLEY_JWT_SECRET (no kid), with the issuer, audience and leeway. */
static int jwt_keys(pl_config_t *c, char *err, size_t n)
{
    int one = c->jwt_secret && *c->jwt_secret;
    if (one && c->jwt.nkeys)
        return failf(err, n,
                     "PARLEY_JWT_SECRET and PARLEY_JWT_SECRETS are both set: use one (a single "
                     "secret, or kid:secret pairs for rotation)");
    if (!one && !c->jwt.nkeys)
        return failf(err, n,
                     "PARLEY_JWT_SECRET (or PARLEY_JWT_SECRETS) is required (the HS256 secret "
                     "clients' tokens are signed with)");
    if (one && pl_jwt_keyset_add(&c->jwt, "", c->jwt_secret, strlen(c->jwt_secret)) != 0)
        return failf(err, n, "out of memory");
    if (c->jwt_issuer && *c->jwt_issuer) c->jwt.issuer = strdup(c->jwt_issuer);
    if (c->jwt_audience && *c->jwt_audience) c->jwt.audience = strdup(c->jwt_audience);
    c->jwt.leeway = c->jwt_leeway;
    if (!c->token_ttl) c->token_ttl = c->token_max_ttl < 3600 ? c->token_max_ttl : 3600;
    if (c->token_ttl > c->token_max_ttl)
        return failf(err, n,
                     "PARLEY_TOKEN_TTL (%d) must not exceed PARLEY_TOKEN_MAX_TTL (%d): use "
                     "PARLEY_TOKEN_TTL=%d or less, or PARLEY_TOKEN_MAX_TTL=%d or more",
                     c->token_ttl, c->token_max_ttl, c->token_max_ttl, c->token_ttl);
    return 0;
}

static int parse_database_url(pl_config_t *c, const char *v, char *err, size_t n)
{
    free(c->database_url);
    c->database_url = *v ? strdup(v) : NULL;
    return 0;
}

static int parse_public_url(pl_config_t *c, const char *v, char *err, size_t n)
{
    free(c->public_url);
    free(c->public_ws_url);
    c->public_url = c->public_ws_url = NULL;
    if (!*v) return 0;
    int tls = strncmp(v, "https://", 8) == 0;
    if (!tls && strncmp(v, "http://", 7) != 0)
        return failf(err, n,
                     "PARLEY_PUBLIC_URL: expected http(s)://host[:port][/prefix], got '%.100s'", v);
    const char *rest = v + (tls ? 8 : 7);
    size_t len = strlen(rest);
    while (len && rest[len - 1] == '/')
        len--;
    if (!len || rest[0] == '/' || strpbrk(rest, "?#@ ") != NULL)
        return failf(err, n,
                     "PARLEY_PUBLIC_URL: expected http(s)://host[:port][/prefix], got '%.100s'", v);
    size_t sz = len + 16;
    c->public_url = strdup(v);
    c->public_ws_url = malloc(sz);
    if (!c->public_url || !c->public_ws_url) return failf(err, n, "out of memory");
    snprintf(c->public_ws_url, sz, "%s://%.*s/ws", tls ? "wss" : "ws", (int)len, rest);
    return 0;
}

static int parse_proxies(pl_config_t *c, const char *v, char *err, size_t n)
{
    char why[160];
    if (pl_cidr_parse(&c->trusted_proxies, v, why, sizeof why) != 0)
        return failf(err, n, "PARLEY_TRUSTED_PROXIES: %s", why);
    free(c->trusted_proxies_s);
    c->trusted_proxies_s = strdup(v);
    return 0;
}

/* Exact origins as browsers send them (scheme://host[:port], no path), or "*" for any. Kept
 * trimmed, without a trailing slash, joined by commas, to be compared case-insensitively at the
 * upgrade (app/api.c); "*" anywhere leaves the list unset: any origin. */
static int parse_origins(pl_config_t *c, const char *v, char *err, size_t n)
{
    pl_buf_t out = {0};
    int any = 0;
    for (const char *p = v; *p;) {
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;
        while (s < e && *s == ' ')
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '/'))
            e--;
        size_t l = (size_t)(e - s);
        const char *host = NULL;
        if (l >= 8 && strncasecmp(s, "https://", 8) == 0)
            host = s + 8;
        else if (l >= 7 && strncasecmp(s, "http://", 7) == 0)
            host = s + 7;
        int star = l == 1 && *s == '*';
        if (!star &&
            (!host || host == e || memchr(host, '/', (size_t)(e - host)) || memchr(s, ' ', l))) {
            pl_buf_free(&out);
            return failf(err, n,
                         "PARLEY_ALLOWED_ORIGINS: expected origins like https://chat.example.com "
                         "or http://127.0.0.1:8080 (no path), or *, got '%.*s'",
                         (int)(l > 100 ? 100 : l), s);
        }
        any |= star;
        if (out.len) pl_buf_add(&out, ",", 1);
        pl_buf_add(&out, s, l);
        p += len + (p[len] == ',');
    }
    free(c->allowed_origins);
    c->allowed_origins = NULL;
    int oom = !any && out.len && !(c->allowed_origins = strndup(out.data, out.len));
    pl_buf_free(&out);
    return oom ? failf(err, n, "out of memory") : 0;
}

static int apply(pl_config_t *c, const opt_t *o, const char *v, char *err, size_t n)
{
    long long num = 0;
    char *at = (char *)c + o->off;
    switch (o->kind) {
    case T_SPECIAL:
        return o->parse(c, v, err, n);
    case T_STR:
        free(*(char **)at);
        *(char **)at = strdup(v);
        return 0;
    case T_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
            num = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
            num = 0;
        else
            return failf(err, n, "%s: expected 1/0, true/false, yes/no or on/off, got '%.40s'",
                         o->env, v);
        *(int *)at = (int)num;
        return 0;
    case T_INT:
    case T_SIZE:
        if (parse_num(v, o->min, o->max, &num) != 0)
            return failf(err, n, "%s: '%.40s' is not an integer in [%lld, %lld]", o->env, v, o->min,
                         o->max);
        if (o->kind == T_INT)
            *(int *)at = (int)num;
        else
            *(size_t *)at = (size_t)num;
        return 0;
    }
    return 0;
}

/* 1 if the setting named `env` was given (flag or variable) rather than defaulted. */
static int given(const char *const *val, const char *env)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].env, env) == 0) return val[i] && val[i] != opts[i].def;
    return 0;
}

/* Defaults that follow another setting, and the limits settings put on each other. `val`: what
 * each row was set from (its own default pointer when not given). */
static int derive(pl_config_t *c, const char *const *val, char *err, size_t n)
{
    size_t fits = c->max_frame - PL_CONFIG_ENVELOPE;
    if (!given(val, "PARLEY_MAX_TEXT"))
        c->max_text = fits < 16384 ? fits : 16384;
    else if (c->max_text > fits)
        return failf(err, n,
                     "PARLEY_MAX_TEXT (%zu) does not fit in PARLEY_MAX_FRAME (%zu) with its JSON "
                     "envelope (%d bytes): use PARLEY_MAX_TEXT=%zu or less, or "
                     "PARLEY_MAX_FRAME=%zu or more",
                     c->max_text, c->max_frame, PL_CONFIG_ENVELOPE, fits,
                     c->max_text + PL_CONFIG_ENVELOPE);

    int ping = given(val, "PARLEY_PING_INTERVAL"), idle = given(val, "PARLEY_IDLE_TIMEOUT");
    if (!ping && !idle) {
        c->ping_interval = 30;
        c->idle_timeout = 75;
    } else if (!ping) {
        int p = c->idle_timeout * 2 / 5;
        c->ping_interval = p < 1 ? 1 : p > 30 ? 30 : p;
    } else if (!idle) {
        long long i = (long long)c->ping_interval * 5 / 2;
        c->idle_timeout = i < 75 ? 75 : i > 86400 ? 86400 : (int)i;
    }
    if (c->ping_interval >= c->idle_timeout)
        return failf(err, n,
                     "PARLEY_PING_INTERVAL (%d) must be below PARLEY_IDLE_TIMEOUT (%d): use "
                     "PARLEY_PING_INTERVAL=%d or less, or PARLEY_IDLE_TIMEOUT=%d or more",
                     c->ping_interval, c->idle_timeout, c->idle_timeout - 1, c->ping_interval + 1);

    if (!given(val, "PARLEY_RATE_BURST"))
        c->rate_burst = c->rate_limit ? (c->rate_limit > 500000 ? 1000000 : 2 * c->rate_limit) : 1;

    if (!given(val, "PARLEY_MAX_OUTBUF_SOFT"))
        c->outbuf_soft = c->max_outbuf / 4;
    else if (c->outbuf_soft > c->max_outbuf)
        return failf(err, n,
                     "PARLEY_MAX_OUTBUF_SOFT (%zu) must not exceed PARLEY_MAX_OUTBUF (%zu): use "
                     "PARLEY_MAX_OUTBUF_SOFT=%zu or less, or PARLEY_MAX_OUTBUF=%zu or more",
                     c->outbuf_soft, c->max_outbuf, c->max_outbuf, c->outbuf_soft);
    return 0;
}

static int load(pl_config_t *c, int argc, char **argv, char *err, size_t n)
{
    memset(c, 0, sizeof *c);
    const char *val[NOPTS];
    for (size_t i = 0; i < NOPTS; i++) {
        const char *e = getenv(opts[i].env);
        val[i] = e ? e : opts[i].def;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage();
            return PL_CONFIG_HELP;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            printf("%s\n", pl_config_version());
            return PL_CONFIG_VERSION;
        }
        if (strncmp(arg, "--", 2) != 0)
            return failf(err, n, "unexpected argument '%.60s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        size_t i;
        for (i = 0; i < NOPTS; i++)
            if (strlen(opts[i].flag) == nlen && strncmp(opts[i].flag, name, nlen) == 0) break;
        if (i == NOPTS)
            return failf(err, n, "unknown flag '%.*s' (see --help)", (int)nlen + 2, arg);
        if (eq)
            val[i] = eq + 1;
        else if (opts[i].kind == T_BOOL)
            val[i] = "1"; /* --open-rooms alone means on */
        else if (a + 1 < argc)
            val[i] = argv[++a];
        else
            return failf(err, n, "flag '%.60s' needs a value", arg);
    }
    c->log_level = PL_LOG_INFO;
    for (size_t i = 0; i < NOPTS; i++) {
        if (val[i] && apply(c, &opts[i], val[i], err, n) != 0) return -1;
    }

    if (c->migrate) {
        if (!c->database_url)
            return failf(err, n, "--migrate needs PARLEY_DATABASE_URL (or --database-url)");
        return 0;
    }
    if (jwt_keys(c, err, n) != 0) return -1;
    if (c->redis_nhosts > 1 && !c->redis_cluster)
        return failf(err, n,
                     "PARLEY_REDIS_URL names %d hosts: several hosts are the seed nodes of a Redis "
                     "Cluster, which needs PARLEY_REDIS_CLUSTER=1",
                     c->redis_nhosts);
    if (c->redis_cluster && c->redis_db != 0)
        return failf(err, n, "PARLEY_REDIS_URL: a Redis Cluster has database 0 only, got /%d",
                     c->redis_db);
    /* Sharded Pub/Sub has no pattern form: a cluster is always subscribed to per room. */
    if (c->redis_cluster) c->subscribe_rooms = 1;
    if (!c->api_key || !*c->api_key)
        return failf(err, n, "PARLEY_API_KEY is required (the key for POST /api/websocket/token)");
    if (derive(c, val, err, n) != 0) return -1;
    if (!c->listen_host && !c->tls_listen_host)
        return failf(err, n,
                     "PARLEY_LISTEN is none and PARLEY_TLS_LISTEN is not set: nothing to "
                     "listen on");
    if (c->tls_listen_host && (!c->tls_cert || !c->tls_key))
        return failf(err, n,
                     "PARLEY_TLS_LISTEN needs PARLEY_TLS_CERT and PARLEY_TLS_KEY (PEM "
                     "files)");
    if (!c->shards) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        c->shards = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
    }
    if (!c->server_id) {
        char host[256] = "parley";
        gethostname(host, sizeof host - 1);
        /* Only the characters a server id may hold (parse_server_id). */
        for (char *h = host; *h; h++)
            if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
                  (*h >= '0' && *h <= '9') || *h == '.' || *h == '-'))
                *h = '-';
        char id[320];
        snprintf(id, sizeof id, "%.48s-%d", host, (int)getpid());
        c->server_id = strdup(id);
    }
    return 0;
}

int pl_config_load(pl_config_t *c, int argc, char **argv, char *err, size_t n)
{
    int rc = load(c, argc, argv, err, n);
    /* A refusal keeps nothing: the strings of the settings parsed before the bad one were left
     * behind (LeakSanitizer, test/checked.sh asan, on every "refuses to start" test). */
    if (rc < 0) pl_config_free(c);
    return rc;
}

void pl_config_free(pl_config_t *c)
{
    free(c->listen_host);
    free(c->tls_listen_host);
    free(c->metrics_listen_host);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->web_root);
    free(c->server_id);
    free(c->redis_host);
    for (int i = 0; i < c->redis_nhosts; i++)
        free(c->redis_hosts[i]);
    free(c->redis_user);
    free(c->redis_password);
    free(c->jwt_secret);
    free(c->jwt_issuer);
    free(c->jwt_audience);
    pl_jwt_keyset_free(&c->jwt);
    free(c->api_key);
    free(c->database_url);
    free(c->redis_prefix);
    free(c->public_url);
    free(c->public_ws_url);
    free(c->allowed_origins);
    free(c->trusted_proxies_s);
    memset(c, 0, sizeof *c);
}
