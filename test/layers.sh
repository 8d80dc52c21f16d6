#!/usr/bin/env bash
# The layers depend one way (docs/architecture.md):
#   base   <- net <- proto <- app
#   base   <- net <- svc   <- app        (svc reaches net only to post to a loop)
# A file of a layer may include headers of its own layer and of the layers it
# depends on, nothing else. Prints `PASS layers` or one `FAIL layers:` line per
# include that breaks the rule (file, line, the include), and exits non-zero then.
set -uo pipefail
cd "$(dirname "$0")/.."

allowed() {  # allowed LAYER: the layers LAYER may include
    case "$1" in
        base)  echo "base" ;;
        net)   echo "base net" ;;
        proto) echo "base net proto" ;;
        svc)   echo "base net svc" ;;
        app)   echo "base net proto svc app" ;;
    esac
}

bad=0
files=0
for layer in base net proto svc app; do
    ok=" $(allowed "$layer") "
    for f in src/"$layer"/*.c include/parley/"$layer"/*.h; do
        [ -f "$f" ] || continue
        files=$((files + 1))
        while IFS=: read -r line inc; do
            dep=$(printf '%s' "$inc" | sed -n 's|.*#include "parley/\([a-z]*\)/.*|\1|p')
            if [ -z "$dep" ]; then
                echo "FAIL layers: $f:$line: $inc (a parley header outside the layer folders)"
                bad=$((bad + 1))
            elif [ "$layer" = svc ] && [ "$dep" = net ] && ! printf '%s' "$inc" | grep -q '"parley/net/loop.h"'; then
                echo "FAIL layers: $f:$line: svc may include only net/loop.h of net: $(echo "$inc" | sed 's/^ *//')"
                bad=$((bad + 1))
            elif [ "${ok#* $dep }" = "$ok" ]; then
                echo "FAIL layers: $f:$line: $layer includes $dep: $(echo "$inc" | sed 's/^ *//')"
                bad=$((bad + 1))
            fi
        done < <(grep -n '#include "parley/' "$f" | sed 's/^\([0-9]*\):/\1:/')
    done
done
# Every source file lives in a layer.
for f in src/*.c include/parley/*.h; do
    [ -f "$f" ] && { echo "FAIL layers: $f is outside the layer folders"; bad=$((bad + 1)); }
done
if [ "$bad" -eq 0 ]; then
    echo "PASS layers ($files files: base <- net <- proto|svc <- app)"
else
    exit 1
fi
