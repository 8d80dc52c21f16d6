/*
 * migrate: the schema in sql/NNN_*.sql, compiled into the binary, applied
 * by `parleyd --migrate`. Each migration runs in its own transaction and is
 * recorded in schema_migrations; what is recorded is skipped, so running it
 * again is harmless. An advisory lock keeps two instances from migrating at
 * once.
 */
#ifndef PARLEY_SVC_MIGRATE_H
#define PARLEY_SVC_MIGRATE_H

#include <stddef.h>

/** One migration: its name (file name without .sql) and its SQL. */
typedef struct {
    const char *name;
    const char *sql;
} pl_migration_t;

/** Every migration, in order (generated from sql/ by sql/embed.sh). */
extern const pl_migration_t pl_migrations[];
/** How many. */
extern const int pl_migrations_count;

/** Outcomes of pl_migrate_check. */
typedef enum {
    PL_MIGRATE_OK = 0,
    PL_MIGRATE_BAD_URL,     /**< not a libpq connection string or postgresql:// URL */
    PL_MIGRATE_UNREACHABLE, /**< no connection (down, wrong host or port, refused login) */
    PL_MIGRATE_BEHIND,      /**< migrations of this build are not applied */
} pl_migrate_status_t;

/**
 * Whether the database at `url` can be used by this build: the URL parses,
 * a connection succeeds within 5 s, and every migration compiled in is
 * applied. On anything else, writes one line saying what and what to do into
 * `why` (never a password).
 */
pl_migrate_status_t pl_migrate_check(const char *url, char *why, size_t why_size);

struct pg_conn;
/** The same schema check on an open connection: 1 if every migration is applied, 0 if not, -1
 *  if the query failed (the connection is likely gone). */
int pl_migrate_applied(struct pg_conn *pg);

/**
 * Apply what is missing to the database at `url` (a libpq connection string
 * or postgresql:// URL). Returns the number applied (0 if up to date) or -1
 * after logging why.
 */
int pl_migrate(const char *url);

#endif
