/* migrate: apply sql/ migrations in order, once each; see the header. */
#include "parley/svc/migrate.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "parley/base/log.h"

/* Arbitrary constant: the advisory lock all parleyd migrations take. */
#define MIGRATE_LOCK 726547

static int exec_ok(PGconn *pg, const char *sql, const char *what)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) pl_error("migrate: %s: %s", what, PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

static int applied(PGconn *pg, const char *name)
{
    const char *params[1] = {name};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE name = $1", 1, NULL,
                               params, NULL, NULL, 0);
    int found = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
    return found;
}

int pl_migrate_applied(PGconn *pg)
{
    PGresult *r = PQexec(pg, "SELECT name FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* No table at all: never migrated (a lost connection shows in PQstatus). */
        int never = PQstatus(pg) == CONNECTION_OK;
        PQclear(r);
        return never ? 0 : -1;
    }
    int all = 1;
    for (int i = 0; i < pl_migrations_count && all; i++) {
        int found = 0;
        for (int row = 0; row < PQntuples(r) && !found; row++)
            found = strcmp(PQgetvalue(r, row, 0), pl_migrations[i].name) == 0;
        all = found;
    }
    PQclear(r);
    return all;
}

/* Where a connection goes, for messages: host:port/database (no user, no password). */
static void where(PGconn *pg, char *out, size_t n)
{
    const char *host = PQhost(pg), *port = PQport(pg), *db = PQdb(pg);
    snprintf(out, n, "%s:%s/%s", host && *host ? host : "localhost", port && *port ? port : "5432",
             db ? db : "?");
}

pl_migrate_status_t pl_migrate_check(const char *url, char *why, size_t n)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (!opts) {
        snprintf(why, n,
                 "PARLEY_DATABASE_URL is not a PostgreSQL connection string or "
                 "postgresql:// URL: %s",
                 perr ? perr : "out of memory");
        PQfreemem(perr);
        return PL_MIGRATE_BAD_URL;
    }
    PQconninfoFree(opts);
    /* The URL's own settings win; connect_timeout only bounds start-up when it has none. */
    const char *keys[3] = {"connect_timeout", "dbname", NULL};
    const char *vals[3] = {"5", url, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    char at[256];
    where(pg, at, sizeof at);
    pl_migrate_status_t rc = PL_MIGRATE_OK;
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(why, n, "cannot connect to PostgreSQL at %s: %s", at, PQerrorMessage(pg));
        rc = PL_MIGRATE_UNREACHABLE;
    } else {
        int ok = pl_migrate_applied(pg);
        if (ok < 0) {
            snprintf(why, n, "PostgreSQL at %s: %s", at, PQerrorMessage(pg));
            rc = PL_MIGRATE_UNREACHABLE;
        } else if (!ok) {
            snprintf(why, n,
                     "the schema of %s is not at this build's version (%s): run `parleyd "
                     "--migrate` with the same PARLEY_DATABASE_URL first",
                     at, pl_migrations[pl_migrations_count - 1].name);
            rc = PL_MIGRATE_BEHIND;
        }
    }
    PQfinish(pg);
    return rc;
}

int pl_migrate(const char *url)
{
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK) {
        pl_error("migrate: cannot connect: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    int n = 0, rc = 0;
    char lock[64];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%d)", MIGRATE_LOCK);
    if (exec_ok(pg, "SET client_min_messages = warning", "settings") != 0 ||
        exec_ok(pg, lock, "lock") != 0 ||
        exec_ok(pg,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                "schema_migrations") != 0) {
        PQfinish(pg);
        return -1;
    }
    for (int i = 0; i < pl_migrations_count && rc == 0; i++) {
        const pl_migration_t *m = &pl_migrations[i];
        if (applied(pg, m->name)) continue;
        const char *params[1] = {m->name};
        if (exec_ok(pg, "BEGIN", "begin") != 0 || exec_ok(pg, m->sql, m->name) != 0) {
            exec_ok(pg, "ROLLBACK", "rollback");
            rc = -1;
            break;
        }
        PGresult *r = PQexecParams(pg, "INSERT INTO schema_migrations (name) VALUES ($1)", 1, NULL,
                                   params, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok || exec_ok(pg, "COMMIT", "commit") != 0) {
            pl_error("migrate: recording %s: %s", m->name, PQerrorMessage(pg));
            exec_ok(pg, "ROLLBACK", "rollback");
            rc = -1;
            break;
        }
        pl_info("migrate: applied %s", m->name);
        n++;
    }
    PQfinish(pg);
    return rc == 0 ? n : -1;
}
