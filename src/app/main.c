/* parleyd: parse the configuration, then run the server. */
#include <signal.h>
#include <stdio.h>

#include "parley/base/config.h"
#include "parley/base/log.h"
#include "parley/svc/migrate.h"
#include "parley/app/wire.h"
#include "parley/app/server.h"

int main(int argc, char **argv)
{
    pl_wire_init(); /* cJSON's hooks, before anything (any thread) uses cJSON */
    pl_config_t cfg;
    char err[512];
    int rc = pl_config_load(&cfg, argc, argv, err, sizeof err);
    if (rc == PL_CONFIG_HELP || rc == PL_CONFIG_VERSION) return 0;
    if (rc != 0) {
        fprintf(stderr, "parleyd: %s\n", err);
        return 2;
    }
    pl_log_set_level((pl_log_level_t)cfg.log_level);
    if (cfg.migrate) {
        int n = pl_migrate(cfg.database_url);
        if (n >= 0) printf("parleyd: schema up to date (%d migration(s) applied)\n", n);
        pl_config_free(&cfg);
        return n < 0 ? 1 : 0;
    }
    /* Writes to a vanished peer must fail with EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    return pl_server_run(&cfg);
}
