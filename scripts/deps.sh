#!/usr/bin/env bash
# Installs the Debian packages the project needs to build, run and test, when some are missing.
#
#   bash scripts/deps.sh          install what is missing (as root), or print the command (not root)
#   bash scripts/deps.sh --list   print the package list, one line, and exit
#   . scripts/deps.sh             only define WH_DEPS_PACKAGES (no checks, no installs)
#
# WH_DEPS_PACKAGES is the one place the list lives; other scripts and the README refer to it.

export WH_DEPS_PACKAGES="build-essential pkg-config libhiredis-dev libevent-dev \
libcurl4-openssl-dev libcjson-dev libpq-dev libssl-dev redis-server postgresql python3 \
python3-pytest python3-cryptography python3-aiosmtpd python3-jsonschema nodejs npm chromium clang clang-format libclang-rt-14-dev curl ca-certificates iproute2 procps \
prometheus python3-yaml"

# Sourced: the caller only wants the list.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    return 0
fi

set -euo pipefail

if [[ "${1:-}" == "--list" ]]; then
    echo "$WH_DEPS_PACKAGES"
    exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: dpkg-query not found: this script supports Debian/Ubuntu only." >&2
    echo "deps.sh: install the equivalents of: $WH_DEPS_PACKAGES" >&2
    exit 1
fi

read -ra packages <<<"$WH_DEPS_PACKAGES"
missing=()
for pkg in "${packages[@]}"; do
    # npm (npx lints docs/openapi.json): NodeSource's nodejs package carries its own npm and
    # conflicts with Debian's, so an npm already on the PATH counts as installed.
    if [[ "$pkg" == npm ]] && command -v npm >/dev/null 2>&1; then
        continue
    fi
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$pkg")
done

[[ ${#missing[@]} -eq 0 ]] && exit 0

install_cmd="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"

if [[ "$(id -u)" -ne 0 ]]; then
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: run as root:" >&2
    echo "  apt-get update && $install_cmd" >&2
    exit 1
fi

echo "deps.sh: installing: ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
