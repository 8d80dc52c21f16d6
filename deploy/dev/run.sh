#!/usr/bin/env bash
# `make run`: private Redis + PostgreSQL under ./var, then parleyd in the
# foreground with development credentials. Ctrl-C stops parleyd; the services
# keep running (deploy/dev/services.sh stop ends them).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

[ -x build/parleyd ] || { echo "run.sh: build/parleyd missing: run 'make' first" >&2; exit 1; }
deploy/dev/services.sh start
set -a; . var/services.env; set +a

# Loopback only by default: this prints published development credentials and opens every room.
# PARLEY_LISTEN=0.0.0.0:8080 makes it reachable from elsewhere; PARLEY_PORT changes only the port.
export PARLEY_LISTEN="${PARLEY_LISTEN:-127.0.0.1:${PARLEY_PORT:-8080}}"
export PARLEY_JWT_SECRET="${PARLEY_JWT_SECRET:-dev-secret-change-me}"
export PARLEY_API_KEY="${PARLEY_API_KEY:-dev-api-key}"
export PARLEY_REDIS_URL PARLEY_DATABASE_URL
# Dev mode: anyone may join any room (and becomes a member by doing so), the web app in web/ is
# served at /, and it signs in by name (POST /api/dev/token, no API key).
export PARLEY_OPEN_ROOMS="${PARLEY_OPEN_ROOMS:-1}"
export PARLEY_WEB_ROOT="${PARLEY_WEB_ROOT-$ROOT/web}"
export PARLEY_DEV="${PARLEY_DEV:-1}"
# Ctrl-C drains like SIGTERM (clients told to reconnect, closes spread over this many seconds);
# short here so that stopping is quick. A second Ctrl-C stops at once.
export PARLEY_DRAIN_SECONDS="${PARLEY_DRAIN_SECONDS:-2}"
build/parleyd --migrate

reach() { # host:port -> who can reach it
    local h=${1%:*} p=${1##*:}
    case "$h" in 127.*|localhost|'[::1]') echo "this machine only (set $2=0.0.0.0:$p to accept others)" ;;
                 *) echo "$1" ;; esac
}
# The recipes below use the plain listener, or the TLS one (PARLEY_TLS_LISTEN) when
# PARLEY_LISTEN=none; the TLS certificate is PARLEY_TLS_CERT's (curl and Node must trust it).
TLS_LISTEN="${PARLEY_TLS_LISTEN:-}"
lines=""
if [ "$PARLEY_LISTEN" != none ] && [ -n "$PARLEY_LISTEN" ]; then
    port="${PARLEY_LISTEN##*:}" http=http ws=ws h=127.0.0.1
    lines+="Listening:   $PARLEY_LISTEN, $(reach "$PARLEY_LISTEN" PARLEY_LISTEN)"$'\n'
    lines+="WebSocket:   ws://127.0.0.1:$port/ws"$'\n'
fi
if [ -n "$TLS_LISTEN" ] && [ "$TLS_LISTEN" != none ]; then
    tport="${TLS_LISTEN##*:}"
    lines+="TLS:         $TLS_LISTEN, $(reach "$TLS_LISTEN" PARLEY_TLS_LISTEN); certificate ${PARLEY_TLS_CERT:-(PARLEY_TLS_CERT unset)}"$'\n'
    lines+="WebSocket:   wss://localhost:$tport/ws (kill -HUP the parleyd process to reload the certificate;"$'\n'
    lines+="             a self-signed one: curl --cacert ${PARLEY_TLS_CERT:-}, NODE_EXTRA_CA_CERTS=${PARLEY_TLS_CERT:-})"$'\n'
    [ -n "${port:-}" ] || port=$tport http=https ws=wss h=localhost
fi
[ -n "${port:-}" ] || { echo "run.sh: PARLEY_LISTEN=none needs PARLEY_TLS_LISTEN" >&2; exit 1; }
lines+="Health:      $http://$h:$port/health"
page=""
[ -n "$PARLEY_WEB_ROOT" ] && page="Open the chat: $http://$h:$port/   (two windows, two names: chat with yourself)"
cat <<MSG

================ Parley (development) ================
$page
$lines
JWT secret:  $PARLEY_JWT_SECRET
API key:     $PARLEY_API_KEY
Redis:       $PARLEY_REDIS_URL
PostgreSQL:  $PARLEY_DATABASE_URL (schema applied; open rooms on)

Mint a token for user "alice":
  curl -s -X POST $http://$h:$port/api/websocket/token \\
       -H 'Authorization: Bearer $PARLEY_API_KEY' -H 'Content-Type: application/json' \\
       -d '{"user_id":"alice"}'

Connect, join room "lobby" and say hello (Node + the ws package from test/):
  TOKEN=\$(curl -s -X POST $http://$h:$port/api/websocket/token -H 'Authorization: Bearer $PARLEY_API_KEY' -d '{"user_id":"alice"}' | sed 's/.*"token":"\\([^"]*\\)".*/\\1/')
  NODE_PATH=test/node_modules node -e 'const W=require("ws");const w=new W("$ws://$h:$port/ws?token="+process.argv[1]);w.on("message",m=>console.log(String(m)));w.on("open",()=>{w.send(JSON.stringify({type:"subscribe",rooms:["lobby"]}));w.send(JSON.stringify({type:"message",room:"lobby",text:"hello"}))})' "\$TOKEN"

Stop: Ctrl-C (services keep running; 'deploy/dev/services.sh stop' ends them)
=======================================================

MSG
exec build/parleyd
