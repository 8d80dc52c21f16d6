/* Unit tests for src/config.c: defaults, environment, flags (which win),
 * validation messages, listen and Redis URL parsing, --help. */
#include "parley/base/config.h"
#include "parley/base/log.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static const char *const VARS[] = {
    "PARLEY_LISTEN",
    "PARLEY_SHARDS",
    "PARLEY_SERVER_ID",
    "PARLEY_REDIS_URL",
    "PARLEY_JWT_SECRET",
    "PARLEY_API_KEY",
    "PARLEY_MAX_FRAME",
    "PARLEY_MAX_TEXT",
    "PARLEY_MAX_ROOMS",
    "PARLEY_MAX_OUTBUF",
    "PARLEY_AUTH_TIMEOUT",
    "PARLEY_PING_INTERVAL",
    "PARLEY_IDLE_TIMEOUT",
    "PARLEY_LOG_LEVEL",
    "PARLEY_SUBSCRIBE",
    "PARLEY_MAX_OUTBUF_SOFT",
    "PARLEY_MAX_OUTBUF_SOFT_SECONDS",
    "PARLEY_HTTP_IDLE_TIMEOUT",
    "PARLEY_HTTP_REQUEST_TIMEOUT",
    "PARLEY_PUBLIC_URL",
    "PARLEY_TRUSTED_PROXIES",
    "PARLEY_DB_REQUIRED",
    "PARLEY_JWT_SECRETS",
    "PARLEY_JWT_ISSUER",
    "PARLEY_JWT_AUDIENCE",
    "PARLEY_JWT_LEEWAY",
    "PARLEY_TOKEN_TTL",
    "PARLEY_TOKEN_MAX_TTL",
    "PARLEY_RATE_LIMIT",
    "PARLEY_RATE_BURST",
    "PARLEY_SUBSCRIBE_RATE",
    "PARLEY_MAX_CONNS_PER_IP",
    "PARLEY_MAX_CONNS",
    "PARLEY_ALLOWED_ORIGINS",
    "PARLEY_HTTP_MAX_HEADER",
    "PARLEY_HTTP_MAX_BODY",
};

/* A clean environment with only the two required settings. */
static void env_reset(void)
{
    for (size_t i = 0; i < sizeof VARS / sizeof *VARS; i++)
        unsetenv(VARS[i]);
    setenv("PARLEY_JWT_SECRET", "jwt-env", 1);
    setenv("PARLEY_API_KEY", "api-env", 1);
}

static char err[512];

/* Load with argv = {"parleyd", args..., NULL}. */
#define LOAD(c, ...)                                                                               \
    ({                                                                                             \
        char *argv_[] = {"parleyd", __VA_ARGS__, NULL};                                            \
        err[0] = '\0';                                                                             \
        pl_config_load((c), (int)(sizeof argv_ / sizeof *argv_) - 1, argv_, err, sizeof err);      \
    })
#define LOAD0(c)                                                                                   \
    ({                                                                                             \
        char *argv_[] = {"parleyd", NULL};                                                         \
        err[0] = '\0';                                                                             \
        pl_config_load((c), 1, argv_, err, sizeof err);                                            \
    })

/* -1 with a message that names `what`. */
static int fails_naming(int rc, const char *what)
{
    int ok = rc == -1 && strstr(err, what) != NULL;
    if (!ok) printf("  rc %d, err '%s' (want it to name %s)\n", rc, err, what);
    return ok;
}

static void defaults(void)
{
    env_reset();
    pl_config_t c;
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_STR(c.listen_host, "0.0.0.0");
    CHECK_EQ_INT(c.listen_port, 8080);
    CHECK_STR(c.redis_host, "127.0.0.1");
    CHECK_EQ_INT(c.redis_port, 6379);
    CHECK_EQ_INT(c.redis_db, 0);
    CHECK_STR(c.jwt_secret, "jwt-env");
    CHECK_STR(c.api_key, "api-env");
    CHECK_EQ_INT(c.max_frame, 65536);
    CHECK_EQ_INT(c.max_text, 16384);
    CHECK_EQ_INT(c.max_rooms, 1024);
    CHECK_EQ_INT(c.max_outbuf, 16777216);
    CHECK_EQ_INT(c.auth_timeout, 10);
    CHECK_EQ_INT(c.ping_interval, 30);
    CHECK_EQ_INT(c.idle_timeout, 75);
    CHECK_EQ_INT(c.log_level, PL_LOG_INFO);
    CHECK_EQ_INT(c.outbuf_soft, 16777216 / 4);
    CHECK_EQ_INT(c.outbuf_soft_s, 30);
    CHECK_EQ_INT(c.http_idle_timeout, 120);
    CHECK_EQ_INT(c.http_request_timeout, 10);
    CHECK_EQ_INT(c.db_required, 1);
    CHECK(c.redis_user == NULL && c.redis_password == NULL);
    CHECK(c.public_ws_url == NULL);
    CHECK_EQ_INT(c.trusted_proxies.n, 0);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK_EQ_INT(c.shards, cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    CHECK(c.server_id && *c.server_id);
    char pid[32];
    snprintf(pid, sizeof pid, "-%d", (int)getpid());
    CHECK(c.server_id && strstr(c.server_id, pid) != NULL); /* hostname-pid */
    pl_config_free(&c);
    CHECK(c.listen_host == NULL && c.jwt_secret == NULL);
    pl_config_free(&c); /* twice is harmless */
}

static void env_values(void)
{
    env_reset();
    setenv("PARLEY_LISTEN", "127.0.0.1:9000", 1);
    setenv("PARLEY_SHARDS", "3", 1);
    setenv("PARLEY_SERVER_ID", "node-a", 1);
    setenv("PARLEY_REDIS_URL", "redis://cache.local:6380/4", 1);
    setenv("PARLEY_MAX_FRAME", "2000", 1);
    setenv("PARLEY_MAX_TEXT", "1000", 1);
    setenv("PARLEY_MAX_ROOMS", "7", 1);
    setenv("PARLEY_MAX_OUTBUF", "65536", 1);
    setenv("PARLEY_AUTH_TIMEOUT", "5", 1);
    setenv("PARLEY_PING_INTERVAL", "1", 1);
    setenv("PARLEY_IDLE_TIMEOUT", "2", 1);
    setenv("PARLEY_LOG_LEVEL", "debug", 1);
    pl_config_t c;
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_STR(c.listen_host, "127.0.0.1");
    CHECK_EQ_INT(c.listen_port, 9000);
    CHECK_EQ_INT(c.shards, 3);
    CHECK_STR(c.server_id, "node-a");
    CHECK_STR(c.redis_host, "cache.local");
    CHECK_EQ_INT(c.redis_port, 6380);
    CHECK_EQ_INT(c.redis_db, 4);
    CHECK_EQ_INT(c.max_frame, 2000);
    CHECK_EQ_INT(c.max_text, 1000);
    CHECK_EQ_INT(c.max_rooms, 7);
    CHECK_EQ_INT(c.max_outbuf, 65536);
    CHECK_EQ_INT(c.auth_timeout, 5);
    CHECK_EQ_INT(c.ping_interval, 1);
    CHECK_EQ_INT(c.idle_timeout, 2);
    CHECK_EQ_INT(c.log_level, PL_LOG_DEBUG);
    pl_config_free(&c);
}

static void missing_required(void)
{
    pl_config_t c;
    env_reset();
    unsetenv("PARLEY_JWT_SECRET");
    CHECK(fails_naming(LOAD0(&c), "PARLEY_JWT_SECRET"));
    pl_config_free(&c);
    setenv("PARLEY_JWT_SECRET", "", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_JWT_SECRET"));
    pl_config_free(&c);
    /* given as a flag instead, it is fine */
    unsetenv("PARLEY_JWT_SECRET");
    CHECK_EQ_INT(LOAD(&c, "--jwt-secret", "flag-secret"), 0);
    CHECK_STR(c.jwt_secret, "flag-secret");
    pl_config_free(&c);

    env_reset();
    unsetenv("PARLEY_API_KEY");
    CHECK(fails_naming(LOAD0(&c), "PARLEY_API_KEY"));
    pl_config_free(&c);
    unsetenv("PARLEY_JWT_SECRET"); /* both missing: still a clear message */
    CHECK_EQ_INT(LOAD0(&c), -1);
    CHECK(strstr(err, "PARLEY_JWT_SECRET") || strstr(err, "PARLEY_API_KEY"));
    pl_config_free(&c);
}

static void bad_numbers(void)
{
    static const struct {
        const char *var, *val;
    } cases[] = {
        {"PARLEY_SHARDS", "abc"},
        {"PARLEY_SHARDS", ""},
        {"PARLEY_SHARDS", "4x"},
        {"PARLEY_SHARDS", "0"},
        {"PARLEY_SHARDS", "65"},
        {"PARLEY_SHARDS", "-1"},
        {"PARLEY_SHARDS", "99999999999999999999999"},
        {"PARLEY_SHARDS", "2.5"},
        {"PARLEY_MAX_FRAME", "1023"},
        {"PARLEY_MAX_FRAME", "16777217"},
        {"PARLEY_MAX_TEXT", "0"},
        {"PARLEY_MAX_ROOMS", "1048577"},
        {"PARLEY_MAX_OUTBUF", "65535"},
        {"PARLEY_AUTH_TIMEOUT", "0"},
        {"PARLEY_AUTH_TIMEOUT", "3601"},
        {"PARLEY_PING_INTERVAL", "ten"},
        {"PARLEY_IDLE_TIMEOUT", "1"},
        {"PARLEY_IDLE_TIMEOUT", "86401"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        env_reset();
        setenv(cases[i].var, cases[i].val, 1);
        pl_config_t c;
        int rc = LOAD0(&c);
        if (!fails_naming(rc, cases[i].var)) {
            printf("  case %s=%s\n", cases[i].var, cases[i].val);
            CHECK(0);
        }
        pl_config_free(&c);
    }
    /* the same through flags */
    env_reset();
    pl_config_t c;
    CHECK(fails_naming(LOAD(&c, "--shards", "abc"), "PARLEY_SHARDS"));
    pl_config_free(&c);
    CHECK(fails_naming(LOAD(&c, "--max-rooms=0"), "PARLEY_MAX_ROOMS"));
    pl_config_free(&c);
    /* range ends are accepted */
    env_reset();
    setenv("PARLEY_SHARDS", "64", 1);
    setenv("PARLEY_MAX_FRAME", "1024", 1);
    setenv("PARLEY_MAX_TEXT", "512", 1);
    setenv("PARLEY_MAX_OUTBUF", "1073741824",
           1); /* 1 << 30: a socket counts its queue in 32 bits */
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.shards, 64);
    CHECK_EQ_INT(c.max_frame, 1024);
    CHECK_EQ_INT(c.max_outbuf, 1073741824LL);
    pl_config_free(&c);
    setenv("PARLEY_MAX_OUTBUF", "1073741825", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_MAX_OUTBUF"));
    pl_config_free(&c);
}

static void flags_override_env(void)
{
    env_reset();
    setenv("PARLEY_SHARDS", "2", 1);
    setenv("PARLEY_LISTEN", "10.0.0.1:1111", 1);
    setenv("PARLEY_LOG_LEVEL", "debug", 1);
    pl_config_t c;
    CHECK_EQ_INT(LOAD(&c, "--shards", "3", "--jwt-secret", "jwt-flag", "--listen=1.2.3.4:2222",
                      "--log-level=info"),
                 0);
    CHECK_EQ_INT(c.shards, 3);
    CHECK_STR(c.jwt_secret, "jwt-flag");
    CHECK_STR(c.api_key, "api-env"); /* untouched by flags */
    CHECK_STR(c.listen_host, "1.2.3.4");
    CHECK_EQ_INT(c.listen_port, 2222);
    CHECK_EQ_INT(c.log_level, PL_LOG_INFO);
    pl_config_free(&c);

    /* --flag=value form for everything, a value containing '=' */
    env_reset();
    CHECK_EQ_INT(LOAD(&c, "--shards=5", "--api-key=a=b=c", "--redis-url=redis://r:7000/1",
                      "--max-text=100", "--max-frame=2000", "--ping-interval=10",
                      "--idle-timeout=20", "--auth-timeout=3", "--server-id=s1"),
                 0);
    CHECK_EQ_INT(c.shards, 5);
    CHECK_STR(c.api_key, "a=b=c");
    CHECK_STR(c.redis_host, "r");
    CHECK_EQ_INT(c.redis_port, 7000);
    CHECK_EQ_INT(c.redis_db, 1);
    CHECK_EQ_INT(c.max_text, 100);
    CHECK_EQ_INT(c.max_frame, 2000);
    CHECK_EQ_INT(c.ping_interval, 10);
    CHECK_EQ_INT(c.idle_timeout, 20);
    CHECK_EQ_INT(c.auth_timeout, 3);
    CHECK_STR(c.server_id, "s1");
    pl_config_free(&c);

    /* the last of a repeated flag wins */
    CHECK_EQ_INT(LOAD(&c, "--shards", "2", "--shards=4"), 0);
    CHECK_EQ_INT(c.shards, 4);
    pl_config_free(&c);
    /* a flag beats a bad env value without looking at it */
    setenv("PARLEY_SHARDS", "bogus", 1);
    CHECK_EQ_INT(LOAD(&c, "--shards", "6"), 0);
    CHECK_EQ_INT(c.shards, 6);
    pl_config_free(&c);
}

static void bad_args(void)
{
    env_reset();
    pl_config_t c;
    CHECK(fails_naming(LOAD(&c, "--no-such-flag", "1"), "no-such-flag"));
    pl_config_free(&c);
    CHECK(fails_naming(LOAD(&c, "--shards"), "shards")); /* no value */
    pl_config_free(&c);
    CHECK(fails_naming(LOAD(&c, "stray"), "stray"));
    pl_config_free(&c);
    CHECK_EQ_INT(LOAD(&c, "--shard", "2"), -1); /* a prefix is not a flag */
    pl_config_free(&c);
    CHECK(fails_naming(LOAD(&c, "--log-level", "verbose"), "PARLEY_LOG_LEVEL"));
    pl_config_free(&c);
    CHECK(fails_naming(LOAD(&c, "--subscribe", "room"), "PARLEY_SUBSCRIBE"));
    pl_config_free(&c);
    CHECK_EQ_INT(LOAD(&c, "--subscribe", "rooms"), 0);
    CHECK_EQ_INT(c.subscribe_rooms, 1);
    pl_config_free(&c);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.subscribe_rooms, 0); /* pattern, the design card's */
    pl_config_free(&c);
    setenv("PARLEY_SERVER_ID", "", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_SERVER_ID"));
    pl_config_free(&c);
    char id[80];
    memset(id, 'i', 65);
    id[65] = '\0';
    setenv("PARLEY_SERVER_ID", id, 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_SERVER_ID"));
    pl_config_free(&c);
    id[64] = '\0';
    setenv("PARLEY_SERVER_ID", id, 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_STR(c.server_id, id);
    pl_config_free(&c);
}

typedef struct {
    const char *url;
    const char *host; /* NULL: must be refused */
    int port, db;
} redis_case_t;

static void redis_url(void)
{
    static const redis_case_t cases[] = {
        {"redis://h:1234/2", "h", 1234, 2},
        {"redis://h", "h", 6379, 0},
        {"redis://h/", "h", 6379, 0},
        {"redis://h/7", "h", 6379, 7},
        {"redis://h:1", "h", 1, 0},
        {"redis://redis.example.com:65535/15", "redis.example.com", 65535, 15},
        {"redis://10.1.2.3:6379/0", "10.1.2.3", 6379, 0},
        {"redis://h:0", NULL, 0, 0},
        {"redis://h:65536", NULL, 0, 0},
        {"redis://h:abc/1", NULL, 0, 0},
        {"redis://h:/1", NULL, 0, 0},
        {"redis://h:-1", NULL, 0, 0},
        {"redis://h/x", NULL, 0, 0},
        {"redis://h/-1", NULL, 0, 0},
        {"redis://:6379/0", NULL, 0, 0},
        {"redis://", NULL, 0, 0},
        {"h:6379", NULL, 0, 0},
        {"http://h:6379", NULL, 0, 0},
        {"redis:/h", NULL, 0, 0},
        {"", NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        env_reset();
        setenv("PARLEY_REDIS_URL", cases[i].url, 1);
        pl_config_t c;
        int rc = LOAD0(&c);
        int ok;
        if (cases[i].host)
            ok = rc == 0 && c.redis_host && strcmp(c.redis_host, cases[i].host) == 0 &&
                 c.redis_port == cases[i].port && c.redis_db == cases[i].db;
        else
            ok = rc == -1 && strstr(err, "PARLEY_REDIS_URL") != NULL;
        if (!ok) {
            printf("  '%s': rc %d host %s port %d db %d err '%s'\n", cases[i].url, rc,
                   c.redis_host ? c.redis_host : "-", c.redis_port, c.redis_db, err);
            CHECK(ok);
        }
        pl_config_free(&c);
    }
}

/* Several hosts: a Redis Cluster's seed nodes, only with PARLEY_REDIS_CLUSTER=1. */
static void redis_cluster_url(void)
{
    pl_config_t c;
    env_reset();
    setenv("PARLEY_REDIS_URL", "redis://:pw@10.0.0.1:7000,10.0.0.2:7001,h3", 1);
    setenv("PARLEY_REDIS_CLUSTER", "1", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.redis_nhosts, 3);
    CHECK_STR(c.redis_hosts[0], "10.0.0.1");
    CHECK_EQ_INT(c.redis_ports[0], 7000);
    CHECK_STR(c.redis_hosts[1], "10.0.0.2");
    CHECK_EQ_INT(c.redis_ports[1], 7001);
    CHECK_STR(c.redis_hosts[2], "h3");
    CHECK_EQ_INT(c.redis_ports[2], 6379);
    CHECK_STR(c.redis_host, "10.0.0.1");
    CHECK_STR(c.redis_password, "pw");
    CHECK(c.redis_cluster && c.subscribe_rooms); /* sharded Pub/Sub: per room only */
    pl_config_free(&c);

    static const char *const bad[] = {"redis://a:1,,b:2", "redis://a:1,", "redis://,a:1",
                                      "redis://a:1,b:x", "redis://a:1,b:2/3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("PARLEY_REDIS_URL", bad[i], 1);
        if (!fails_naming(LOAD0(&c), "PARLEY_REDIS_URL")) {
            printf("  (for '%s')\n", bad[i]);
            CHECK(0);
        }
        pl_config_free(&c);
    }
    /* Several hosts without cluster mode: refused, naming the setting to use. */
    unsetenv("PARLEY_REDIS_CLUSTER");
    setenv("PARLEY_REDIS_URL", "redis://a:1,b:2", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_REDIS_CLUSTER=1"));
    pl_config_free(&c);
    env_reset();
}

typedef struct {
    const char *listen;
    const char *host; /* NULL: refused */
    int port;
} listen_case_t;

static void listen_addr(void)
{
    static const listen_case_t cases[] = {
        {"0.0.0.0:8080", "0.0.0.0", 8080},
        {"127.0.0.1:1", "127.0.0.1", 1},
        {"localhost:65535", "localhost", 65535},
        {"::1:9000", "::1", 9000}, /* the last ':' separates the port */
        {":8080", NULL, 0},
        {"8080", NULL, 0},
        {"host", NULL, 0},
        {"host:", NULL, 0},
        {"host:0", NULL, 0},
        {"host:65536", NULL, 0},
        {"host:80x", NULL, 0},
        {"", NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        env_reset();
        setenv("PARLEY_LISTEN", cases[i].listen, 1);
        pl_config_t c;
        int rc = LOAD0(&c);
        int ok;
        if (cases[i].host)
            ok = rc == 0 && c.listen_host && strcmp(c.listen_host, cases[i].host) == 0 &&
                 c.listen_port == cases[i].port;
        else
            ok = rc == -1 && strstr(err, "PARLEY_LISTEN") != NULL;
        if (!ok) {
            printf("  '%s': rc %d host %s port %d err '%s'\n", cases[i].listen, rc,
                   c.listen_host ? c.listen_host : "-", c.listen_port, err);
            CHECK(ok);
        }
        pl_config_free(&c);
    }
}

/* "[::1]:9000" is how an IPv6 host:port is written (RFC 3986). The host must
 * come out without brackets: it goes to getaddrinfo, which does not accept
 * "[::1]", so a config that loads fine would fail at bind time. */
static void listen_ipv6_brackets(void)
{
    env_reset();
    setenv("PARLEY_LISTEN", "[::1]:9000", 1);
    pl_config_t c;
    int rc = LOAD0(&c);
    CHECK_EQ_INT(rc, 0);
    CHECK(rc == 0 && c.listen_host && strcmp(c.listen_host, "::1") == 0);
    CHECK_EQ_INT(c.listen_port, 9000);
    pl_config_free(&c);
    /* "[]" is no host at all, like ":8080": refused, not left for bind to fail on */
    setenv("PARLEY_LISTEN", "[]:9000", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_LISTEN"));
    pl_config_free(&c);
}

/* Each of the pair works alone (the other follows it); explicit values that conflict are refused
 * with values that would work. */
static void ping_vs_idle(void)
{
    pl_config_t c;
    env_reset();
    setenv("PARLEY_PING_INTERVAL", "75", 1); /* alone: the idle timeout follows, 5/2 of it */
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.ping_interval, 75);
    CHECK_EQ_INT(c.idle_timeout, 187);
    pl_config_free(&c);
    setenv("PARLEY_PING_INTERVAL", "10", 1); /* lower: the default idle stays */
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.idle_timeout, 75);
    pl_config_free(&c);
    env_reset();
    setenv("PARLEY_IDLE_TIMEOUT", "20", 1); /* alone: ping 2/5 of it */
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.ping_interval, 8);
    CHECK_EQ_INT(c.idle_timeout, 20);
    pl_config_free(&c);
    setenv("PARLEY_IDLE_TIMEOUT", "2", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.ping_interval, 1);
    pl_config_free(&c);
    /* both given and in conflict: refused, naming both and what would work */
    env_reset();
    setenv("PARLEY_PING_INTERVAL", "75", 1);
    setenv("PARLEY_IDLE_TIMEOUT", "60", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_PING_INTERVAL"));
    CHECK(strstr(err, "PARLEY_IDLE_TIMEOUT") && strstr(err, "PARLEY_PING_INTERVAL=59") &&
          strstr(err, "PARLEY_IDLE_TIMEOUT=76"));
    pl_config_free(&c);
    setenv("PARLEY_IDLE_TIMEOUT", "76", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    pl_config_free(&c);
    CHECK_EQ_INT(LOAD(&c, "--idle-timeout", "75"), -1); /* the flag wins, and conflicts */
    pl_config_free(&c);
}

static void text_vs_frame(void)
{
    pl_config_t c;
    env_reset();
    /* PARLEY_MAX_FRAME alone: the text limit follows it */
    setenv("PARLEY_MAX_FRAME", "4096", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.max_text, 4096 - PL_CONFIG_ENVELOPE);
    pl_config_free(&c);
    setenv("PARLEY_MAX_FRAME", "1048576", 1); /* larger: the text default stays */
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.max_text, 16384);
    pl_config_free(&c);
    env_reset();
    setenv("PARLEY_MAX_TEXT", "70000", 1); /* over the default frame 65536 */
    CHECK(fails_naming(LOAD0(&c), "PARLEY_MAX_TEXT"));
    CHECK(strstr(err, "PARLEY_MAX_TEXT=65024") && strstr(err, "PARLEY_MAX_FRAME=70512"));
    pl_config_free(&c);
    CHECK_EQ_INT(LOAD(&c, "--max-frame", "70512"), 0);
    pl_config_free(&c);
    setenv("PARLEY_MAX_TEXT", "65024", 1); /* exactly what fits */
    CHECK_EQ_INT(LOAD0(&c), 0);
    pl_config_free(&c);
}

static void outbuf_soft(void)
{
    pl_config_t c;
    env_reset();
    setenv("PARLEY_MAX_OUTBUF", "1048576", 1); /* the soft limit follows: a quarter */
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.outbuf_soft, 262144);
    pl_config_free(&c);
    setenv("PARLEY_MAX_OUTBUF_SOFT", "2000000", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_MAX_OUTBUF_SOFT"));
    CHECK(strstr(err, "PARLEY_MAX_OUTBUF_SOFT=1048576") != NULL);
    pl_config_free(&c);
    setenv("PARLEY_MAX_OUTBUF_SOFT", "65536", 1);
    setenv("PARLEY_MAX_OUTBUF_SOFT_SECONDS", "5", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.outbuf_soft, 65536);
    CHECK_EQ_INT(c.outbuf_soft_s, 5);
    pl_config_free(&c);
}

/* redis://[[user]:password@]host...: percent-escapes decoded; the password never in a message. */
static void redis_credentials(void)
{
    pl_config_t c;
    env_reset();
    setenv("PARLEY_REDIS_URL", "redis://:s%40cret@h:6380/2", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK(c.redis_user == NULL);
    CHECK(c.redis_password && strcmp(c.redis_password, "s@cret") == 0);
    CHECK_STR(c.redis_host, "h");
    CHECK_EQ_INT(c.redis_port, 6380);
    CHECK_EQ_INT(c.redis_db, 2);
    pl_config_free(&c);
    setenv("PARLEY_REDIS_URL", "redis://alice:pw@h/1", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK(c.redis_user && strcmp(c.redis_user, "alice") == 0);
    CHECK(c.redis_password && strcmp(c.redis_password, "pw") == 0);
    CHECK_EQ_INT(c.redis_port, 6379);
    pl_config_free(&c);
    setenv("PARLEY_REDIS_URL", "redis://onlypass@h", 1); /* as redis-cli reads it */
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK(c.redis_user == NULL && c.redis_password && !strcmp(c.redis_password, "onlypass"));
    pl_config_free(&c);
    static const char *const bad[] = {"redis://:@h", "redis://:p%zz@h", "redis://:p%00x@h",
                                      "redis://:topsecret@h:notaport", "redis://:topsecret@"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("PARLEY_REDIS_URL", bad[i], 1);
        int rc = LOAD0(&c);
        if (!fails_naming(rc, "PARLEY_REDIS_URL") || strstr(err, "topsecret")) {
            printf("  '%s': rc %d err '%s'\n", bad[i], rc, err);
            CHECK(0);
        }
        pl_config_free(&c);
    }
}

static void levels_and_more(void)
{
    pl_config_t c;
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"error", PL_LOG_ERROR},
                  {"warn", PL_LOG_WARN},
                  {"warning", PL_LOG_WARN},
                  {"info", PL_LOG_INFO},
                  {"debug", PL_LOG_DEBUG}};
    for (size_t i = 0; i < sizeof levels / sizeof *levels; i++) {
        env_reset();
        setenv("PARLEY_LOG_LEVEL", levels[i].name, 1);
        CHECK_EQ_INT(LOAD0(&c), 0);
        CHECK_EQ_INT(c.log_level, levels[i].level);
        pl_config_free(&c);
    }
    env_reset();
    setenv("PARLEY_PUBLIC_URL", "https://chat.example.com/", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK(c.public_ws_url && strcmp(c.public_ws_url, "wss://chat.example.com/ws") == 0);
    pl_config_free(&c);
    setenv("PARLEY_PUBLIC_URL", "http://10.0.0.5:8088/chat", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK(c.public_ws_url && strcmp(c.public_ws_url, "ws://10.0.0.5:8088/chat/ws") == 0);
    pl_config_free(&c);
    setenv("PARLEY_PUBLIC_URL", "ftp://x", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_PUBLIC_URL"));
    pl_config_free(&c);
    env_reset();
    setenv("PARLEY_TRUSTED_PROXIES", " 127.0.0.1 , 10.0.0.0/8,::1 ", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.trusted_proxies.n, 3);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.200.3.4", &a.sin_addr);
    CHECK(pl_cidr_match(&c.trusted_proxies, (struct sockaddr *)&a));
    inet_pton(AF_INET, "11.0.0.1", &a.sin_addr);
    CHECK(!pl_cidr_match(&c.trusted_proxies, (struct sockaddr *)&a));
    pl_config_free(&c);
    setenv("PARLEY_TRUSTED_PROXIES", "10.0.0.0/33", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_TRUSTED_PROXIES"));
    pl_config_free(&c);
    env_reset();
    setenv("PARLEY_SERVER_ID", "bad id", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_SERVER_ID"));
    pl_config_free(&c);
}

/* Run pl_config_load with stdout sent to /dev/null. */
static int load_quiet(pl_config_t *c, int argc, char **argv)
{
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, STDOUT_FILENO);
    close(null);
    int rc = pl_config_load(c, argc, argv, err, sizeof err);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    return rc;
}

/* The limits (docs/security.md): defaults, the burst following the rate, the origin list. */
static void limits(void)
{
    pl_config_t c;
    env_reset();
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.rate_limit, 20);
    CHECK_EQ_INT(c.rate_burst, 40);
    CHECK_EQ_INT(c.subscribe_rate, 10);
    CHECK_EQ_INT(c.max_conns_per_ip, 500);
    CHECK_EQ_INT(c.max_conns, 0); /* derived from the open-files limit at start */
    CHECK(c.allowed_origins == NULL);
    CHECK_EQ_INT(c.http_max_header, 8192);
    CHECK_EQ_INT(c.http_max_body, 8192);
    pl_config_free(&c);
    setenv("PARLEY_RATE_LIMIT", "7", 1);
    setenv("PARLEY_ALLOWED_ORIGINS", "https://a.example, http://127.0.0.1:8080,*", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.rate_burst, 14);
    CHECK(c.allowed_origins == NULL); /* "*" among them: any */
    pl_config_free(&c);
    setenv("PARLEY_ALLOWED_ORIGINS", " https://a.example/ , http://127.0.0.1:8080", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_STR(c.allowed_origins, "https://a.example,http://127.0.0.1:8080");
    pl_config_free(&c);
    static const char *const bad[] = {"a.example", "https://a.example/path", "ftp://a.example",
                                      "https://", "https://a.example,,"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("PARLEY_ALLOWED_ORIGINS", bad[i], 1);
        CHECK(fails_naming(LOAD0(&c), "PARLEY_ALLOWED_ORIGINS"));
        pl_config_free(&c);
    }
    env_reset();
}

static void help(void)
{
    pl_config_t c;
    env_reset();
    char *a1[] = {"parleyd", "--help", NULL};
    CHECK_EQ_INT(load_quiet(&c, 2, a1), PL_CONFIG_HELP);
    pl_config_free(&c);
    char *a2[] = {"parleyd", "-h", NULL};
    CHECK_EQ_INT(load_quiet(&c, 2, a2), PL_CONFIG_HELP);
    pl_config_free(&c);
    /* --help wins even when required settings are missing */
    unsetenv("PARLEY_JWT_SECRET");
    unsetenv("PARLEY_API_KEY");
    char *a3[] = {"parleyd", "--shards", "2", "--help", NULL};
    CHECK_EQ_INT(load_quiet(&c, 4, a3), PL_CONFIG_HELP);
    pl_config_free(&c);
}

static void version(void)
{
    pl_config_t c;
    env_reset();
    char *a[] = {"parleyd", "--version", NULL};
    CHECK_EQ_INT(load_quiet(&c, 2, a), PL_CONFIG_VERSION);
    pl_config_free(&c);
    CHECK(strncmp(pl_config_version(), "parleyd ", 8) == 0);
}

/* The key set tokens are checked and minted with, and the token lifetimes. */
static void jwt_keys(void)
{
    pl_config_t c;
    env_reset();
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.jwt.nkeys, 1);
    CHECK_STR(c.jwt.key[0].kid, "");
    CHECK_STR(c.jwt.key[0].secret, "jwt-env");
    CHECK(c.jwt.issuer == NULL && c.jwt.audience == NULL && c.jwt.leeway == 0);
    CHECK_EQ_INT(c.token_ttl, 3600);
    CHECK_EQ_INT(c.token_max_ttl, 86400);
    pl_config_free(&c);

    unsetenv("PARLEY_JWT_SECRET");
    setenv("PARLEY_JWT_SECRETS", "new:s2,old:s1", 1);
    setenv("PARLEY_JWT_ISSUER", "https://auth.example", 1);
    setenv("PARLEY_JWT_AUDIENCE", "parley", 1);
    setenv("PARLEY_JWT_LEEWAY", "5", 1);
    setenv("PARLEY_TOKEN_MAX_TTL", "600", 1);
    CHECK_EQ_INT(LOAD0(&c), 0);
    CHECK_EQ_INT(c.jwt.nkeys, 2);
    CHECK_STR(c.jwt.key[0].kid, "new");
    CHECK_STR(c.jwt.issuer, "https://auth.example");
    CHECK_STR(c.jwt.audience, "parley");
    CHECK_EQ_INT(c.jwt.leeway, 5);
    CHECK_EQ_INT(c.token_ttl, 600); /* the default, capped by the maximum */
    pl_config_free(&c);

    setenv("PARLEY_TOKEN_TTL", "601", 1);
    CHECK(fails_naming(LOAD0(&c), "PARLEY_TOKEN_TTL=600"));
    pl_config_free(&c);
    unsetenv("PARLEY_TOKEN_TTL");

    setenv("PARLEY_JWT_SECRET", "one", 1);
    CHECK(fails_naming(LOAD0(&c), "both set"));
    pl_config_free(&c);

    unsetenv("PARLEY_JWT_SECRET");
    unsetenv("PARLEY_JWT_SECRETS");
    CHECK(fails_naming(LOAD0(&c), "PARLEY_JWT_SECRET"));
    pl_config_free(&c);

    setenv("PARLEY_JWT_SECRETS", "k1:SEKRIT,k1:SEKRIT2", 1);
    CHECK_EQ_INT(LOAD0(&c), -1);
    CHECK(strstr(err, "twice") != NULL && strstr(err, "SEKRIT") == NULL);
    pl_config_free(&c);
    env_reset();
}

/* A refusal after strings were parsed leaves nothing allocated (checked.sh asan's LeakSanitizer
 * found them left behind by every parleyd that refused to start). */
static void refusal_keeps_nothing(void)
{
    env_reset();
    setenv("PARLEY_REDIS_URL", "redis://u:pw@127.0.0.1:6379/0", 1);
    pl_config_t c;
    CHECK(fails_naming(LOAD(&c, "--listen", "127.0.0.1:8080", "--max-frame", "12"), "MAX_FRAME"));
    CHECK(c.listen_host == NULL && c.redis_host == NULL && c.redis_password == NULL &&
          c.jwt_secret == NULL && c.jwt.nkeys == 0 && c.api_key == NULL);
    env_reset();
}

int main(void)
{
    RUN(defaults);
    RUN(refusal_keeps_nothing);
    RUN(env_values);
    RUN(missing_required);
    RUN(bad_numbers);
    RUN(flags_override_env);
    RUN(bad_args);
    RUN(redis_url);
    RUN(redis_cluster_url);
    RUN(listen_addr);
    RUN(listen_ipv6_brackets);
    RUN(ping_vs_idle);
    RUN(text_vs_frame);
    RUN(outbuf_soft);
    RUN(redis_credentials);
    RUN(levels_and_more);
    RUN(jwt_keys);
    RUN(limits);
    RUN(help);
    RUN(version);
    for (size_t i = 0; i < sizeof VARS / sizeof *VARS; i++)
        unsetenv(VARS[i]);
    UNIT_EXIT();
}
