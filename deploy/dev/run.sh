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
# Dev mode: anyone may join any room (and becomes a member by doing so).
export PARLEY_OPEN_ROOMS="${PARLEY_OPEN_ROOMS:-1}"
build/parleyd --migrate

port="${PARLEY_LISTEN##*:}"
host="${PARLEY_LISTEN%:*}"
case "$host" in 127.*|localhost|'[::1]') reach="this machine only (set PARLEY_LISTEN=0.0.0.0:$port to accept others)" ;;
                *) reach="$host:$port" ;; esac
cat <<MSG

================ Parley (development) ================
Listening:   $PARLEY_LISTEN, $reach
WebSocket:   ws://127.0.0.1:$port/ws
Health:      http://127.0.0.1:$port/health
JWT secret:  $PARLEY_JWT_SECRET
API key:     $PARLEY_API_KEY
Redis:       $PARLEY_REDIS_URL
PostgreSQL:  $PARLEY_DATABASE_URL (schema applied; open rooms on)

Mint a token for user "alice":
  curl -s -X POST http://127.0.0.1:$port/api/websocket/token \\
       -H 'Authorization: Bearer $PARLEY_API_KEY' -H 'Content-Type: application/json' \\
       -d '{"user_id":"alice"}'

Connect, join room "lobby" and say hello (Node + the ws package from test/):
  TOKEN=\$(curl -s -X POST http://127.0.0.1:$port/api/websocket/token -H 'Authorization: Bearer $PARLEY_API_KEY' -d '{"user_id":"alice"}' | sed 's/.*"token":"\\([^"]*\\)".*/\\1/')
  NODE_PATH=test/node_modules node -e 'const W=require("ws");const w=new W("ws://127.0.0.1:$port/ws?token="+process.argv[1]);w.on("message",m=>console.log(String(m)));w.on("open",()=>{w.send(JSON.stringify({type:"subscribe",rooms:["lobby"]}));w.send(JSON.stringify({type:"message",room:"lobby",text:"hello"}))})' "\$TOKEN"

Stop: Ctrl-C (services keep running; 'deploy/dev/services.sh stop' ends them)
=======================================================

MSG
exec build/parleyd
