/*
 * migrate: the schema in sql/NNN_*.sql, compiled into the binary, applied
 * by `parleyd --migrate`. Each migration runs in its own transaction and is
 * recorded in schema_migrations; what is recorded is skipped, so running it
 * again is harmless. An advisory lock keeps two instances from migrating at
 * once.
 */
#ifndef PARLEY_MIGRATE_H
#define PARLEY_MIGRATE_H

/** One migration: its name (file name without .sql) and its SQL. */
typedef struct {
    const char *name;
    const char *sql;
} pl_migration_t;

/** Every migration, in order (generated from sql/ by sql/embed.sh). */
extern const pl_migration_t pl_migrations[];
/** How many. */
extern const int pl_migrations_count;

/**
 * Apply what is missing to the database at `url` (a libpq connection string
 * or postgresql:// URL). Returns the number applied (0 if up to date) or -1
 * after logging why.
 */
int pl_migrate(const char *url);

#endif
