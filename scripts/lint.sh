#!/usr/bin/env bash
# `make lint`: (a) banned C functions, (b) clang-format (reported; fails only with
# LINT_STRICT=1), (c) every environment variable a binary's --help lists is in .env.example.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

failed=0
fail()
{
    echo "lint: FAIL: $*" >&2
    failed=1
}

dirs=()
for d in common broker worker reconciler cli tests/unit tests/bench; do
    [[ -d "$d" ]] && dirs+=("$d")
done
sources=()
if [[ ${#dirs[@]} -gt 0 ]]; then
    mapfile -t sources < <(find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.h' \) | sort)
fi

# (a) Banned functions (STYLE.md, curl's list). \b keeps snprintf, vsnprintf, fgets, strtok_r
# and the like out: a letter before the name or "_r" after it is not a match.
banned='\b(sprintf|strcpy|strcat|strtok|gets|atoi)\s*\('
if [[ ${#sources[@]} -gt 0 ]]; then
    if grep -qE "$banned" "${sources[@]}"; then
        fail "banned functions (use snprintf, explicit lengths, strtol with range checks):"
        grep -nHE "$banned" "${sources[@]}" | sed 's/^/  /' >&2
    fi
fi
echo "lint: banned functions: checked ${#sources[@]} files"

# (b) Formatting with the project's .clang-format.
if ! command -v clang-format >/dev/null 2>&1; then
    msg="clang-format is not installed (bash scripts/deps.sh)"
    if [[ "${LINT_STRICT:-0}" == 1 ]]; then fail "$msg"; else echo "lint: skipped: $msg"; fi
else
    unformatted=()
    for f in "${sources[@]}"; do
        clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1 || unformatted+=("$f")
    done
    if [[ ${#unformatted[@]} -eq 0 ]]; then
        echo "lint: clang-format: all ${#sources[@]} files formatted"
    else
        echo "lint: clang-format: ${#unformatted[@]} of ${#sources[@]} files differ" \
            "(fix: clang-format -i FILE; see: clang-format --dry-run FILE):"
        printf '  %s\n' "${unformatted[@]}"
        if [[ "${LINT_STRICT:-0}" == 1 ]]; then
            fail "${#unformatted[@]} files are not clang-formatted (LINT_STRICT=1)"
        fi
    fi
fi

# (c) Configuration keys: each "env NAME," in a binary's --help must appear in .env.example
# as NAME= (commented out or not).
bins=()
for b in build/webhook-broker build/webhook-worker build/webhook-reconciler; do
    [[ -x "$b" ]] && bins+=("$b")
done
if [[ ${#bins[@]} -eq 0 ]]; then
    echo "lint: skipped the .env.example check: no binaries in build/ (run make all first)"
elif [[ ! -f .env.example ]]; then
    fail ".env.example is missing"
else
    checked=0
    for b in "${bins[@]}"; do
        if ! help=$(timeout 10 "$b" --help 2>&1); then
            fail "$b --help failed"
            continue
        fi
        mapfile -t keys < <(grep -oE 'env [A-Z_][A-Z0-9_]*,' <<<"$help" |
            sed -E 's/^env (.*),$/\1/' | sort -u)
        for key in "${keys[@]}"; do
            checked=$((checked + 1))
            grep -qE "^[[:space:]]*(#[[:space:]]*)?$key=" .env.example ||
                fail "$key (listed by $b --help) is not in .env.example"
        done
    done
    echo "lint: .env.example: checked $checked keys from ${bins[*]}"
fi

if ((failed)); then
    echo "lint: failed" >&2
    exit 1
fi
echo "lint: ok"
