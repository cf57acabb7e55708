#!/usr/bin/env bash
# Checks that each binary given was built hardened (Makefile HARDEN_*): a position-independent
# executable, full RELRO (GNU_RELRO segment + BIND_NOW), stack-protector and FORTIFY_SOURCE
# checked libc calls linked in. Run by `make test` on every daemon.
#
#   bash scripts/check-hardening.sh BINARY...
set -euo pipefail

failed=0
for bin in "$@"; do
    problems=()
    header=$(readelf -h "$bin")
    grep -qE 'Type:[[:space:]]+DYN' <<<"$header" || problems+=("not a position-independent executable")
    readelf -lW "$bin" | grep -q GNU_RELRO || problems+=("no GNU_RELRO segment")
    readelf -dW "$bin" | grep -qE 'BIND_NOW|FLAGS.*NOW' || problems+=("no BIND_NOW (lazy binding)")
    syms=$(readelf --dyn-syms -W "$bin")
    grep -q '__stack_chk_fail' <<<"$syms" || problems+=("no stack protector (__stack_chk_fail)")
    grep -qE '__[a-z_]+_chk(@|$| )' <<<"$syms" || problems+=("no FORTIFY_SOURCE checked calls (__*_chk)")
    if ((${#problems[@]})); then
        printf 'check-hardening: %s: %s\n' "$bin" "$(IFS=';'; echo "${problems[*]}")" >&2
        failed=1
    fi
done
((failed)) || echo "check-hardening: $# binaries: PIE, full RELRO, stack protector, FORTIFY_SOURCE"
exit "$failed"
