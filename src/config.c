/*
 * config: one table drives flags, environment variables, --help and
 * validation, so a new setting is one row.
 */
#include "parley/config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { T_STR, T_INT, T_SIZE, T_BOOL, T_SPECIAL } kind_t;

typedef struct {
    const char *flag;
    const char *env;
    kind_t kind;
    const char *def;
    long long min, max;
    const char *help;
} opt_t;

static const opt_t opts[] = {
    {"listen", "PARLEY_LISTEN", T_SPECIAL, "0.0.0.0:8080", 0, 0,
     "host:port to listen on (HTTP and WebSocket)"},
    {"shards", "PARLEY_SHARDS", T_INT, NULL, 1, 64,
     "event loops, each with its own SO_REUSEPORT socket (default: online CPUs)"},
    {"server-id", "PARLEY_SERVER_ID", T_STR, NULL, 0, 0,
     "this instance's id (default: hostname-pid)"},
    {"redis-url", "PARLEY_REDIS_URL", T_SPECIAL, "redis://127.0.0.1:6379/0", 0, 0,
     "Redis for fan-out and state, redis://host:port/db"},
    {"jwt-secret", "PARLEY_JWT_SECRET", T_STR, NULL, 0, 0,
     "HS256 secret for client tokens (required)"},
    {"api-key", "PARLEY_API_KEY", T_STR, NULL, 0, 0,
     "key for POST /api/websocket/token (required)"},
    {"max-frame", "PARLEY_MAX_FRAME", T_SIZE, "65536", 128, 16 << 20,
     "largest client message, bytes; larger closes with 1009"},
    {"max-text", "PARLEY_MAX_TEXT", T_SIZE, "16384", 1, 16 << 20,
     "largest message text, bytes; larger gets error too_large"},
    {"max-rooms", "PARLEY_MAX_ROOMS", T_SIZE, "1024", 1, 1 << 20, "rooms one connection may hold"},
    {"max-outbuf", "PARLEY_MAX_OUTBUF", T_SIZE, "16777216", 65536, 1LL << 34,
     "bytes queued to one client before it is cut off (close 4008)"},
    {"auth-timeout", "PARLEY_AUTH_TIMEOUT", T_INT, "10", 1, 3600,
     "seconds a client has to authenticate"},
    {"ping-interval", "PARLEY_PING_INTERVAL", T_INT, "30", 1, 3600,
     "seconds of client silence before the server pings"},
    {"idle-timeout", "PARLEY_IDLE_TIMEOUT", T_INT, "75", 2, 86400,
     "seconds of client silence before the server drops it"},
    {"log-level", "PARLEY_LOG_LEVEL", T_STR, "info", 0, 0, "debug or info"},
    {"database-url", "PARLEY_DATABASE_URL", T_STR, NULL, 0, 0,
     "PostgreSQL (libpq string or postgresql:// URL); unset: messages are not stored"},
    {"db-workers", "PARLEY_DB_WORKERS", T_INT, "2", 1, 64,
     "database worker threads, one connection each"},
    {"db-queue", "PARLEY_DB_QUEUE", T_SIZE, "100000", 1, 100000000,
     "messages waiting to be stored; when full, sends get error unavailable"},
    {"open-rooms", "PARLEY_OPEN_ROOMS", T_BOOL, "0", 0, 1,
     "anyone may join any room, becoming a member (dev mode)"},
    {"stream-len", "PARLEY_STREAM_LEN", T_SIZE, "1000", 10, 10000000,
     "recent messages per room kept in Redis for recovery"},
    {"recover-max", "PARLEY_RECOVER_MAX", T_SIZE, "10000", 1, 1000000,
     "most missed messages replayed per room on resubscribe"},
    {"redis-prefix", "PARLEY_REDIS_PREFIX", T_STR, "ws:", 0, 0,
     "prefix of the presence/typing/read/offline keys in Redis (docs/redis.md)"},
    {"offline-max", "PARLEY_OFFLINE_MAX", T_SIZE, "1000", 1, 1000000,
     "direct messages kept per offline user; older ones are dropped from the queue"},
    {"migrate", "PARLEY_MIGRATE", T_BOOL, "0", 0, 1,
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

static void usage(void)
{
    printf("usage: parleyd [--flag value]...\n\n"
           "Parley: a horizontally scalable WebSocket chat gateway.\n"
           "Every flag has an environment variable; the flag wins.\n\n");
    for (size_t i = 0; i < NOPTS; i++)
        printf("  --%-14s %-22s %s%s%s%s\n", opts[i].flag, opts[i].env, opts[i].help,
               opts[i].def ? " [" : "", opts[i].def ? opts[i].def : "", opts[i].def ? "]" : "");
    printf("  --%-14s %-22s %s\n", "help", "", "print this and exit");
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

static int parse_listen(pl_config_t *c, const char *v, char *err, size_t n)
{
    const char *colon = strrchr(v, ':');
    long long port;
    if (!colon || colon == v || parse_num(colon + 1, 1, 65535, &port) != 0)
        return failf(err, n, "PARLEY_LISTEN: expected host:port, got '%s'", v);
    /* [::1]:8080: an IPv6 literal in brackets. */
    if (v[0] == '[' && colon[-1] == ']' && colon - v == 2)
        return failf(err, n, "PARLEY_LISTEN: expected host:port, got '%s'", v);
    if (v[0] == '[' && colon[-1] == ']')
        c->listen_host = strndup(v + 1, (size_t)(colon - v - 2));
    else
        c->listen_host = strndup(v, (size_t)(colon - v));
    c->listen_port = (int)port;
    return 0;
}

static int parse_redis(pl_config_t *c, const char *v, char *err, size_t n)
{
    const char *p = v;
    if (strncmp(p, "redis://", 8) != 0)
        return failf(err, n, "PARLEY_REDIS_URL: expected redis://host:port/db, got '%s'", v);
    p += 8;
    const char *at = strchr(p, '@');
    if (at) return failf(err, n, "PARLEY_REDIS_URL: credentials are not supported, got '%s'", v);
    const char *slash = strchr(p, '/');
    const char *colon = memchr(p, ':', slash ? (size_t)(slash - p) : strlen(p));
    const char *host_end = colon ? colon : (slash ? slash : p + strlen(p));
    long long port = 6379, db = 0;
    if (host_end == p) return failf(err, n, "PARLEY_REDIS_URL: no host in '%s'", v);
    if (colon) {
        char tmp[16];
        size_t len = (size_t)((slash ? slash : p + strlen(p)) - colon - 1);
        if (len == 0 || len >= sizeof tmp)
            return failf(err, n, "PARLEY_REDIS_URL: bad port in '%s'", v);
        memcpy(tmp, colon + 1, len);
        tmp[len] = '\0';
        if (parse_num(tmp, 1, 65535, &port) != 0)
            return failf(err, n, "PARLEY_REDIS_URL: bad port in '%s'", v);
    }
    if (slash && slash[1] && parse_num(slash + 1, 0, 1000, &db) != 0)
        return failf(err, n, "PARLEY_REDIS_URL: bad database number in '%s'", v);
    c->redis_host = strndup(p, (size_t)(host_end - p));
    c->redis_port = (int)port;
    c->redis_db = (int)db;
    return 0;
}

static int apply(pl_config_t *c, const opt_t *o, const char *v, char *err, size_t n)
{
    long long num = 0;
    if (o->kind == T_BOOL) {
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
            num = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
            num = 0;
        else
            return failf(err, n, "%s: expected 1/0, true/false, yes/no or on/off, got '%s'", o->env,
                         v);
    }
    if (o->kind == T_INT || o->kind == T_SIZE) {
        if (parse_num(v, o->min, o->max, &num) != 0)
            return failf(err, n, "%s: '%s' is not an integer in [%lld, %lld]", o->env, v, o->min,
                         o->max);
    }
    if (strcmp(o->flag, "listen") == 0) return parse_listen(c, v, err, n);
    if (strcmp(o->flag, "redis-url") == 0) return parse_redis(c, v, err, n);
    if (strcmp(o->flag, "shards") == 0)
        c->shards = (int)num;
    else if (strcmp(o->flag, "server-id") == 0) {
        if (!*v || strlen(v) > 64) return failf(err, n, "%s: must be 1-64 bytes", o->env);
        c->server_id = strdup(v);
    } else if (strcmp(o->flag, "jwt-secret") == 0)
        c->jwt_secret = strdup(v);
    else if (strcmp(o->flag, "api-key") == 0)
        c->api_key = strdup(v);
    else if (strcmp(o->flag, "max-frame") == 0)
        c->max_frame = (size_t)num;
    else if (strcmp(o->flag, "max-text") == 0)
        c->max_text = (size_t)num;
    else if (strcmp(o->flag, "max-rooms") == 0)
        c->max_rooms = (size_t)num;
    else if (strcmp(o->flag, "max-outbuf") == 0)
        c->max_outbuf = (size_t)num;
    else if (strcmp(o->flag, "auth-timeout") == 0)
        c->auth_timeout = (int)num;
    else if (strcmp(o->flag, "ping-interval") == 0)
        c->ping_interval = (int)num;
    else if (strcmp(o->flag, "idle-timeout") == 0)
        c->idle_timeout = (int)num;
    else if (strcmp(o->flag, "database-url") == 0)
        c->database_url = *v ? strdup(v) : NULL;
    else if (strcmp(o->flag, "db-workers") == 0)
        c->db_workers = (int)num;
    else if (strcmp(o->flag, "db-queue") == 0)
        c->db_queue = (size_t)num;
    else if (strcmp(o->flag, "open-rooms") == 0)
        c->open_rooms = (int)num;
    else if (strcmp(o->flag, "stream-len") == 0)
        c->stream_len = (size_t)num;
    else if (strcmp(o->flag, "recover-max") == 0)
        c->recover_max = (size_t)num;
    else if (strcmp(o->flag, "migrate") == 0)
        c->migrate = (int)num;
    else if (strcmp(o->flag, "redis-prefix") == 0) {
        if (strlen(v) > 32) return failf(err, n, "%s: at most 32 bytes", o->env);
        c->redis_prefix = strdup(v);
    } else if (strcmp(o->flag, "offline-max") == 0)
        c->offline_max = (size_t)num;
    else if (strcmp(o->flag, "log-level") == 0) {
        if (strcmp(v, "debug") != 0 && strcmp(v, "info") != 0)
            return failf(err, n, "%s: expected debug or info, got '%s'", o->env, v);
        c->log_debug = strcmp(v, "debug") == 0;
    }
    return 0;
}

int pl_config_load(pl_config_t *c, int argc, char **argv, char *err, size_t n)
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
        if (strncmp(arg, "--", 2) != 0)
            return failf(err, n, "unexpected argument '%s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        size_t i;
        for (i = 0; i < NOPTS; i++)
            if (strlen(opts[i].flag) == nlen && strncmp(opts[i].flag, name, nlen) == 0) break;
        if (i == NOPTS) return failf(err, n, "unknown flag '%s' (see --help)", arg);
        if (eq)
            val[i] = eq + 1;
        else if (opts[i].kind == T_BOOL)
            val[i] = "1"; /* --open-rooms alone means on */
        else if (a + 1 < argc)
            val[i] = argv[++a];
        else
            return failf(err, n, "flag '%s' needs a value", arg);
    }
    for (size_t i = 0; i < NOPTS; i++)
        if (val[i] && apply(c, &opts[i], val[i], err, n) != 0) return -1;

    if (c->migrate) {
        if (!c->database_url)
            return failf(err, n, "--migrate needs PARLEY_DATABASE_URL (or --database-url)");
        return 0;
    }
    if (!c->jwt_secret || !*c->jwt_secret)
        return failf(
            err, n,
            "PARLEY_JWT_SECRET is required (the HS256 secret clients' tokens are signed with)");
    if (!c->api_key || !*c->api_key)
        return failf(err, n, "PARLEY_API_KEY is required (the key for POST /api/websocket/token)");
    if (c->ping_interval >= c->idle_timeout)
        return failf(err, n, "PARLEY_PING_INTERVAL (%d) must be below PARLEY_IDLE_TIMEOUT (%d)",
                     c->ping_interval, c->idle_timeout);
    if (c->max_text > c->max_frame)
        return failf(err, n, "PARLEY_MAX_TEXT (%zu) must not exceed PARLEY_MAX_FRAME (%zu)",
                     c->max_text, c->max_frame);
    if (!c->shards) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        c->shards = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
    }
    if (!c->server_id) {
        char host[256] = "parley";
        gethostname(host, sizeof host - 1);
        char id[320];
        snprintf(id, sizeof id, "%.48s-%d", host, (int)getpid());
        c->server_id = strdup(id);
    }
    return 0;
}

void pl_config_free(pl_config_t *c)
{
    free(c->listen_host);
    free(c->server_id);
    free(c->redis_host);
    free(c->jwt_secret);
    free(c->api_key);
    free(c->database_url);
    free(c->redis_prefix);
    memset(c, 0, sizeof *c);
}
