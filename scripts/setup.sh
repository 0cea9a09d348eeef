#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages that mediasync needs to build, test
# and benchmark. Idempotent: when every package is already installed it touches
# nothing (no apt-get update). Runs apt as root, through sudo if not root.
#
# Usage: scripts/setup.sh
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config ccache
  libcaf-dev libsqlite3-dev sqlite3 libssl-dev libspdlog-dev catch2 nlohmann-json3-dev
  libpqxx-dev postgresql-15
  libvips-dev libvips-tools gnome-backgrounds
  rsync time procps
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unexpected argument '$1' (usage: scripts/setup.sh)" ;;
  esac
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  die "dpkg-query/apt-get not found: this script supports Debian 12 (bookworm) only"
fi

is_installed() {
  dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} required packages are already installed; nothing to do"
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 \
    || die "not running as root and sudo is not available; run as root to install: ${missing[*]}"
  as_root=(sudo)
fi

apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)

log "missing packages: ${missing[*]}"
log "running: apt-get update"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update \
  || die "'apt-get update' failed (exit $?); check the network/apt sources and retry"

log "installing: ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" \
  || die "'apt-get install' failed (exit $?) for: ${missing[*]}"

still_missing=()
for pkg in "${missing[@]}"; do
  is_installed "$pkg" || still_missing+=("$pkg")
done
[[ ${#still_missing[@]} -eq 0 ]] \
  || die "apt-get reported success but these packages are still not installed: ${still_missing[*]}"

log "installed: ${missing[*]}"
