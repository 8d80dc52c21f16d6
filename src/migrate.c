/* migrate: apply sql/ migrations in order, once each; see the header. */
#include "parley/migrate.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "parley/log.h"

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
