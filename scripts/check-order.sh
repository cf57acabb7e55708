#!/usr/bin/env bash
# Checks that `make run`, `make test` and `make bench` install packages before they compile:
# on a machine with nothing installed, a compile that comes first fails on missing headers.
# Reads `make -n TARGET` in a fresh clone of the committed tree (no build/ to skip steps) and
# fails when the first install-or-compile command of any target is a compile.
#
#   bash scripts/check-order.sh [REPO]      (default: this checkout; CI runs it)
set -euo pipefail

repo=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/p"

failed=0
for target in run test bench; do
    # -n prints commands without running them; recursive $(MAKE) lines run, also with -n.
    first=$(cd "$tmp/p" && timeout 60 make -n "$target" 2>/dev/null |
        grep -m1 -E '(deps\.sh|apt-get|(^|[ ;])(cc|gcc|clang) )' || true)
    case "$first" in
    *deps.sh* | *apt-get*)
        echo "check-order: make $target: installs packages first"
        ;;
    "")
        echo "check-order: make $target: neither an install nor a compile step found" >&2
        failed=1
        ;;
    *)
        echo "check-order: make $target compiles before installing packages:" >&2
        echo "    $first" >&2
        failed=1
        ;;
    esac
done
exit "$failed"
