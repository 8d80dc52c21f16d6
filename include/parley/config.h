/*
 * config: parleyd's settings, from flags and PARLEY_* environment variables
 * (a flag wins over its variable). Parsed once at start-up into a plain
 * struct that every thread then only reads.
 */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stddef.h>

/** Every setting; strings are owned by the struct (pl_config_free). */
typedef struct {
    char *listen_host; /**< PARLEY_LISTEN host part */
    int listen_port;   /**< PARLEY_LISTEN port part */
    int shards;        /**< PARLEY_SHARDS, default: online CPUs */
    char *server_id;   /**< PARLEY_SERVER_ID, default hostname-pid */
    char *redis_host;  /**< from PARLEY_REDIS_URL */
    int redis_port;
    int redis_db;
    char *jwt_secret;   /**< PARLEY_JWT_SECRET, required */
    char *api_key;      /**< PARLEY_API_KEY, required */
    size_t max_frame;   /**< PARLEY_MAX_FRAME, bytes of payload per client message */
    size_t max_text;    /**< PARLEY_MAX_TEXT */
    size_t max_rooms;   /**< PARLEY_MAX_ROOMS per connection */
    size_t max_outbuf;  /**< PARLEY_MAX_OUTBUF: bytes queued to one client before it is cut off */
    int auth_timeout;   /**< PARLEY_AUTH_TIMEOUT, seconds */
    int ping_interval;  /**< PARLEY_PING_INTERVAL, seconds */
    int idle_timeout;   /**< PARLEY_IDLE_TIMEOUT, seconds */
    int log_debug;      /**< PARLEY_LOG_LEVEL=debug */
    char *database_url; /**< PARLEY_DATABASE_URL; NULL: no database (ephemeral mode) */
    int db_workers;     /**< PARLEY_DB_WORKERS */
    size_t db_queue; /**< PARLEY_DB_QUEUE: messages waiting to be stored before sends are refused */
    int open_rooms;  /**< PARLEY_OPEN_ROOMS: anyone may join any room (and becomes a member) */
    size_t stream_len;  /**< PARLEY_STREAM_LEN: recent messages kept per room in Redis */
    size_t recover_max; /**< PARLEY_RECOVER_MAX: most messages replayed on one resubscribe */
    int migrate;        /**< --migrate: apply the schema and exit */
    char *redis_prefix; /**< PARLEY_REDIS_PREFIX: prefix of the chat-state keys (presence...) */
    size_t offline_max; /**< PARLEY_OFFLINE_MAX: direct messages kept for an offline user */
} pl_config_t;

/** Outcome of pl_config_load besides success. */
enum { PL_CONFIG_HELP = 1 };

/**
 * Fill `c` from argv and the environment. Returns 0 when the server should
 * start, PL_CONFIG_HELP after printing --help to stdout, or -1 after writing a
 * clear message about the bad or missing setting into `err`.
 */
int pl_config_load(pl_config_t *c, int argc, char **argv, char *err, size_t err_size);

/** Release the strings. */
void pl_config_free(pl_config_t *c);

#endif
