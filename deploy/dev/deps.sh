#!/usr/bin/env bash
# Installs what Parley needs to build, run and test, and nothing it already has.
# Idempotent: a second run installs nothing and makes no network calls.
set -euo pipefail
cd "$(dirname "$0")/../.."

PKGS=(build-essential pkg-config libuv1-dev libwslay-dev libhiredis-dev libcjson-dev
      libmbedtls-dev libpq-dev redis-server postgresql node-llhttp nodejs npm curl python3 valgrind
      nginx chromium python3-yaml prometheus clang libclang-rt-14-dev)
# python3-yaml: the deployment test reads deploy/docker-compose.yml with it (Node has no YAML parser).
# prometheus: promtool, for `promtool check metrics`.
# clang, libclang-rt-14-dev: libFuzzer and AddressSanitizer (make fuzz, test/checked.sh asan).


missing=()
for p in "${PKGS[@]}"; do
    case "$p" in
        # Node.js may come from another source (e.g. NodeSource, whose nodejs
        # bundles npm and conflicts with Debian's npm): a working command is enough.
        nodejs) command -v node >/dev/null 2>&1 && continue ;;
        npm)    command -v npm  >/dev/null 2>&1 && continue ;;
    esac
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps.sh: installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "deps.sh: not root and no sudo: install ${missing[*]} as root" >&2; exit 1; }
        SUDO=(sudo env DEBIAN_FRONTEND=noninteractive)
    fi
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "deps.sh: all Debian packages present"
fi

# Node packages for the integration tests: the `ws` client, playwright-core (drives Debian's
# chromium in the browser test) and axe-core (the accessibility check it runs in the page).
if [ ! -d test/node_modules ] || [ test/package-lock.json -nt test/node_modules ]; then
    echo "deps.sh: npm ci --prefix test"
    npm ci --prefix test --no-audit --no-fund --update-notifier=false --loglevel=error
    touch test/node_modules
fi
