#!/usr/bin/env bash
# Private Redis and PostgreSQL 15 for development and tests, under ./var,
# listening on 127.0.0.1 only, on free ports (preferring 16379 and 15432). A
# service started again takes the port it had before (recorded under var/),
# so instances pointed at it reconnect; only if another process holds that
# port does it move.
#
#   deploy/dev/services.sh start [redis|postgres]   start both, or one (reuses ones running)
#   deploy/dev/services.sh stop [redis|postgres]    stop the ones started here (by PID)
#   deploy/dev/services.sh status                   show what runs; exit 0 only if both run
#   deploy/dev/services.sh env                      print `export` lines: eval "$(... env)"
#
# Writes var/services.env: PARLEY_REDIS_URL, PARLEY_DATABASE_URL, REDIS_PORT, PG_PORT.
# PARLEY_VAR moves ./var elsewhere (the tests use it to run a set of their own).
# PostgreSQL refuses to run as root: as root, its files belong to the `postgres`
# user and its commands run through runuser. If postgres cannot reach ./var
# (e.g. the clone is under /root), its data lives in /tmp/parley-<hash>.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VAR="${PARLEY_VAR:-$ROOT/var}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
ENVFILE="$VAR/services.env"
HASH="$(printf '%s' "$VAR" | md5sum | cut -c1-10)"
PG_USER_DB=parley        # role (superuser, trust auth) and database name

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

IS_ROOT=0; [ "$(id -u)" -eq 0 ] && IS_ROOT=1
as_pg() { if [ "$IS_ROOT" = 1 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

. "$ROOT/deploy/dev/lib.sh"   # port_free, pick_port, alive

# ---------- Redis ----------
RDIR="$VAR/redis"
redis_pid()  { cat "$RDIR/redis.pid" 2>/dev/null || true; }
redis_port() { cat "$RDIR/port" 2>/dev/null || true; }
redis_port_or() { local p; p="$(redis_port)"; echo "${p:-$1}"; }
redis_running() { alive "$(redis_pid)" redis-server; }

redis_start() {
    if redis_running; then log "redis already running (pid $(redis_pid), port $(redis_port))"; return 0; fi
    mkdir -p "$RDIR"; rm -f "$RDIR/redis.pid"
    local sock="$RDIR/redis.sock" port tries=0
    [ "${#sock}" -gt 100 ] && { mkdir -p "/tmp/parley-$HASH"; sock="/tmp/parley-$HASH/redis.sock"; }
    local skip=""
    while :; do
        port="$(pick_port "$(redis_port_or 16379)" "$skip")"
        redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes \
            --unixsocket "$sock" --unixsocketperm 700 \
            --dir "$RDIR" --pidfile "$RDIR/redis.pid" --logfile "$RDIR/redis.log" \
            --daemonize yes --save '' --appendonly no >/dev/null
        for _ in $(seq 1 50); do
            redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
        if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && redis_running; then break; fi
        tries=$((tries + 1)); skip="$port"
        [ "$tries" -ge 3 ] && { tail -n 20 "$RDIR/redis.log" >&2 || true; die "redis-server did not start"; }
        log "redis-server did not come up on port $port; trying another"
    done
    echo "$port" >"$RDIR/port"
    log "redis started (pid $(redis_pid), 127.0.0.1:$port)"
}
redis_stop() {
    local pid; pid="$(redis_pid)"
    if alive "$pid" redis-server; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do alive "$pid" redis-server || break; sleep 0.1; done
        alive "$pid" redis-server && kill -KILL "$pid"
        log "redis stopped (pid $pid)"
    fi
    rm -f "$RDIR/redis.pid"
}

# ---------- PostgreSQL ----------
# Where the cluster lives: var/pg, unless (as root) postgres cannot reach it.
pg_base() {
    if [ -f "$VAR/pg.location" ]; then cat "$VAR/pg.location"; return; fi
    local base="$VAR/pg"
    if [ "$IS_ROOT" = 1 ] && ! runuser -u postgres -- test -x "$VAR" 2>/dev/null; then
        base="/tmp/parley-$HASH/pg"
    fi
    # socket path limit (~107 bytes)
    [ "${#base}" -gt 80 ] && base="/tmp/parley-$HASH/pg"
    echo "$base"
}
PGBASE=""
pg_init_paths() {
    mkdir -p "$VAR"
    PGBASE="$(pg_base)"; echo "$PGBASE" >"$VAR/pg.location"
    PGDATA_DIR="$PGBASE/data"; PGSOCK="$PGBASE/run"; PGLOG="$PGBASE/postgres.log"
}
pg_pid()  { head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true; }
pg_port() { cat "$PGBASE/port" 2>/dev/null || true; }
pg_running() { alive "$(pg_pid)" postgres; }

pg_start() {
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 not found in $PGBIN (run deploy/dev/deps.sh)"
    if pg_running; then log "postgres already running (pid $(pg_pid), port $(pg_port))"; return 0; fi
    mkdir -p "$PGBASE" "$PGSOCK"
    if [ "$IS_ROOT" = 1 ]; then
        [ "${PGBASE#/tmp/parley-}" != "$PGBASE" ] && chmod 755 "$(dirname "$PGBASE")"
        chown -R postgres:postgres "$PGBASE"
        chmod 700 "$PGBASE"
    fi
    if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
        log "initdb $PGDATA_DIR"
        as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U "$PG_USER_DB" -A trust -E UTF8 --no-locale \
            >"$PGBASE/initdb.log" 2>&1 || { cat "$PGBASE/initdb.log" >&2; die "initdb failed"; }
    fi
    rm -f "$PGDATA_DIR/postmaster.pid"
    local port skip="" tries=0 was
    was="$(pg_port)"
    while :; do
        port="$(pick_port "${was:-15432}" "$skip")"
        if as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t 30 \
               -o "-p $port -h 127.0.0.1 -k $PGSOCK -c fsync=off" start >/dev/null 2>&1; then
            break
        fi
        tries=$((tries + 1)); skip="$port"
        [ "$tries" -ge 3 ] && { tail -n 20 "$PGLOG" >&2 || true; die "postgres did not start"; }
        log "postgres did not come up on port $port; trying another"
    done
    echo "$port" | as_pg tee "$PGBASE/port" >/dev/null
    if ! as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U "$PG_USER_DB" -d postgres -Atqc \
            "SELECT 1 FROM pg_database WHERE datname='$PG_USER_DB'" | grep -q 1; then
        as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER_DB" "$PG_USER_DB"
    fi
    log "postgres started (pid $(pg_pid), 127.0.0.1:$port, database $PG_USER_DB)"
}
pg_stop() {
    local pid; pid="$(pg_pid)"
    if alive "$pid" postgres; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 20 stop >/dev/null 2>&1 || kill -TERM "$pid" || true
        for _ in $(seq 1 50); do alive "$pid" postgres || break; sleep 0.1; done
        alive "$pid" postgres && kill -KILL "$pid"
        log "postgres stopped (pid $pid)"
    fi
}

write_env() {
    local tmp="$ENVFILE.tmp"
    {
        echo "REDIS_PORT=$(redis_port)"
        echo "PG_PORT=$(pg_port)"
        echo "PARLEY_REDIS_URL=redis://127.0.0.1:$(redis_port)/0"
        echo "PARLEY_DATABASE_URL=postgresql://$PG_USER_DB@127.0.0.1:$(pg_port)/$PG_USER_DB"
    } >"$tmp"
    mv "$tmp" "$ENVFILE"
}

cmd="${1:-}"
what="${2:-all}"
case "$what" in all|redis|postgres) ;; *) echo "usage: $0 start|stop [redis|postgres]" >&2; exit 2 ;; esac
case "$cmd" in
    start)
        pg_init_paths
        if [ "$what" != postgres ]; then redis_start; fi
        if [ "$what" != redis ]; then pg_start; fi
        write_env
        log "wrote $ENVFILE"
        ;;
    stop)
        pg_init_paths
        if [ "$what" != redis ]; then pg_stop; fi
        if [ "$what" != postgres ]; then redis_stop; fi
        if [ "$what" = all ]; then rm -f "$ENVFILE"; fi
        ;;
    status)
        pg_init_paths
        rc=0
        if redis_running; then echo "redis: running (pid $(redis_pid), 127.0.0.1:$(redis_port))"; else echo "redis: stopped"; rc=1; fi
        if pg_running; then echo "postgres: running (pid $(pg_pid), 127.0.0.1:$(pg_port), data $PGDATA_DIR)"; else echo "postgres: stopped"; rc=1; fi
        exit "$rc"
        ;;
    env)
        [ -f "$ENVFILE" ] || die "$ENVFILE missing: run '$0 start' first"
        sed 's/^/export /' "$ENVFILE"
        ;;
    *)
        echo "usage: $0 start|stop [redis|postgres] | status | env" >&2; exit 2 ;;
esac
