/*
 * config: parleyd's settings, from flags and PARLEY_* environment variables
 * (a flag wins over its variable). Parsed once at start-up into a plain
 * struct that every thread then only reads.
 *
 * Settings that constrain each other (PARLEY_MAX_TEXT and PARLEY_MAX_FRAME,
 * PARLEY_PING_INTERVAL and PARLEY_IDLE_TIMEOUT, PARLEY_MAX_OUTBUF_SOFT and
 * PARLEY_MAX_OUTBUF) take their default from the other one when only one is
 * given, so every documented setting works alone; only explicit values that
 * conflict are refused, with the value that would work.
 */
#ifndef PARLEY_BASE_CONFIG_H
#define PARLEY_BASE_CONFIG_H

#include <stddef.h>

#include "parley/base/cidr.h"
#include "parley/base/jwt.h"

/** Bytes of a client message frame that are not its text: type, room or to, cid, quotes. */
#define PL_CONFIG_ENVELOPE 512
/** Most hosts PARLEY_REDIS_URL may name (Redis Cluster seed nodes). */
#define PL_CONFIG_REDIS_HOSTS_MAX 16

/** Every setting; strings are owned by the struct (pl_config_free). */
typedef struct {
    char *listen_host;     /**< PARLEY_LISTEN host part; NULL: no plain listener ("none") */
    int listen_port;       /**< PARLEY_LISTEN port part */
    char *tls_listen_host; /**< PARLEY_TLS_LISTEN host part; NULL: no TLS listener */
    int tls_listen_port;
    char *metrics_listen_host; /**< PARLEY_METRICS_LISTEN host part; NULL: /metrics on the others */
    int metrics_listen_port;
    char *tls_cert;            /**< PARLEY_TLS_CERT: PEM certificate chain */
    char *tls_key;             /**< PARLEY_TLS_KEY: PEM private key */
    int tls_handshake_timeout; /**< PARLEY_TLS_HANDSHAKE_TIMEOUT, seconds */
    int tls_ticket_lifetime;   /**< PARLEY_TLS_TICKET_LIFETIME, seconds; 0: no tickets */
    int shards;                /**< PARLEY_SHARDS, default: online CPUs */
    char *server_id;           /**< PARLEY_SERVER_ID, default hostname-pid */
    char *redis_host;          /**< from PARLEY_REDIS_URL: its first host */
    int redis_port;
    int redis_db;
    char *redis_user;     /**< from PARLEY_REDIS_URL's user:password@, or NULL */
    char *redis_password; /**< likewise; never logged */
    char *redis_hosts[PL_CONFIG_REDIS_HOSTS_MAX]; /**< every host of PARLEY_REDIS_URL */
    int redis_ports[PL_CONFIG_REDIS_HOSTS_MAX];
    int redis_nhosts;
    int redis_cluster; /**< PARLEY_REDIS_CLUSTER: the hosts are seed nodes of a Redis Cluster */
    int redis_wait_replicas; /**< PARLEY_REDIS_WAIT_REPLICAS: cluster mode's WAIT before delivery */
    char *jwt_secret;        /**< PARLEY_JWT_SECRET (or PARLEY_JWT_SECRETS), required */
    char *jwt_issuer;        /**< PARLEY_JWT_ISSUER, or NULL */
    char *jwt_audience;      /**< PARLEY_JWT_AUDIENCE, or NULL */
    int jwt_leeway;          /**< PARLEY_JWT_LEEWAY, seconds */
    pl_jwt_keyset_t jwt;     /**< derived: what tokens are checked and minted with */
    int token_ttl;           /**< PARLEY_TOKEN_TTL: a minted token's default lifetime, s */
    int token_max_ttl;       /**< PARLEY_TOKEN_MAX_TTL: the longest one may ask for, s */
    char *api_key;           /**< PARLEY_API_KEY, required */
    size_t max_frame;        /**< PARLEY_MAX_FRAME, bytes of payload per client message */
    size_t max_text;         /**< PARLEY_MAX_TEXT (default: what fits in max_frame) */
    size_t max_rooms;        /**< PARLEY_MAX_ROOMS per connection */
    size_t max_outbuf;  /**< PARLEY_MAX_OUTBUF: unread bytes at which a client is cut off at once */
    size_t outbuf_soft; /**< PARLEY_MAX_OUTBUF_SOFT: cut off if above it this long: */
    int outbuf_soft_s;  /**< PARLEY_MAX_OUTBUF_SOFT_SECONDS */
    int auth_timeout;   /**< PARLEY_AUTH_TIMEOUT, seconds */
    int drain_seconds;  /**< PARLEY_DRAIN_SECONDS */
    int ping_interval;  /**< PARLEY_PING_INTERVAL, seconds */
    int idle_timeout;   /**< PARLEY_IDLE_TIMEOUT, seconds */
    int http_idle_timeout;    /**< PARLEY_HTTP_IDLE_TIMEOUT: idle keep-alive HTTP, seconds */
    int http_request_timeout; /**< PARLEY_HTTP_REQUEST_TIMEOUT: to send a whole request, s */
    int log_level;            /**< PARLEY_LOG_LEVEL as a pl_log_level_t */
    int subscribe_rooms;      /**< PARLEY_SUBSCRIBE=rooms: subscribe to the rooms held here only */
    char *database_url;       /**< PARLEY_DATABASE_URL; NULL: no database (ephemeral mode) */
    int db_workers;           /**< PARLEY_DB_WORKERS */
    size_t db_queue; /**< PARLEY_DB_QUEUE: messages waiting to be stored before sends are refused */
    int db_required; /**< PARLEY_DB_REQUIRED: refuse to start while the database is unreachable */
    int open_rooms;  /**< PARLEY_OPEN_ROOMS: anyone may join any room (and becomes a member) */
    int dev;         /**< PARLEY_DEV: development endpoints (POST /api/dev/token, no key) */
    char *web_root;  /**< PARLEY_WEB_ROOT: directory of static files served at /, or NULL */
    size_t stream_len;   /**< PARLEY_STREAM_LEN: recent messages kept per room in Redis */
    size_t recover_max;  /**< PARLEY_RECOVER_MAX: most messages replayed on one resubscribe */
    int migrate;         /**< --migrate: apply the schema and exit */
    char *redis_prefix;  /**< PARLEY_REDIS_PREFIX: prefix of the chat-state keys (presence...) */
    size_t offline_max;  /**< PARLEY_OFFLINE_MAX: direct messages kept for an offline user */
    char *public_url;    /**< PARLEY_PUBLIC_URL: how clients reach us, or NULL */
    char *public_ws_url; /**< derived: the WebSocket URL tokens name, or NULL (from the request) */
    char *trusted_proxies_s;        /**< PARLEY_TRUSTED_PROXIES as given */
    pl_cidr_list_t trusted_proxies; /**< whose X-Forwarded-* headers are believed */
    int rate_limit;         /**< PARLEY_RATE_LIMIT: client frames per second (0: no limit) */
    int rate_burst;         /**< PARLEY_RATE_BURST (default: twice PARLEY_RATE_LIMIT) */
    int subscribe_rate;     /**< PARLEY_SUBSCRIBE_RATE: rooms joined or left per second */
    int max_conns_per_ip;   /**< PARLEY_MAX_CONNS_PER_IP: WebSockets per client address (0: any) */
    int max_conns;          /**< PARLEY_MAX_CONNS: WebSockets per instance (0: from open files) */
    char *allowed_origins;  /**< PARLEY_ALLOWED_ORIGINS, trimmed, joined by commas; NULL: any */
    size_t http_max_header; /**< PARLEY_HTTP_MAX_HEADER: request line and headers, bytes */
    size_t http_max_body;   /**< PARLEY_HTTP_MAX_BODY: request body, bytes */
} pl_config_t;

/** Outcomes of pl_config_load besides success. */
enum { PL_CONFIG_HELP = 1, PL_CONFIG_VERSION = 2 };

/**
 * Fill `c` from argv and the environment. Returns 0 when the server should
 * start, PL_CONFIG_HELP after printing --help to stdout, PL_CONFIG_VERSION
 * after printing the version, or -1 after writing a clear message about the
 * bad or missing setting into `err` (secrets are never copied into it). Unless
 * it returns 0, nothing is left to free.
 */
int pl_config_load(pl_config_t *c, int argc, char **argv, char *err, size_t err_size);

/** Release the strings. */
void pl_config_free(pl_config_t *c);

/** "parleyd <version>": the build's version string. */
const char *pl_config_version(void);

#endif
