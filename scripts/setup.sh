#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages that mediasync needs to build, test
# and benchmark. Idempotent: when every package is already installed it touches
# nothing (no apt-get update). Runs apt as root, through sudo if not root.
# prometheus is installed for its /usr/bin/promtool only (the metrics tests run
# `promtool check metrics`): its daemon is kept from starting (see below).
#
# Usage: scripts/setup.sh [--fuzz]
#   --fuzz  also install clang-14 and its sanitizer/libFuzzer runtimes (scripts/fuzz.sh)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config ccache
  libcaf-dev libsqlite3-dev sqlite3 libssl-dev libspdlog-dev catch2 nlohmann-json3-dev
  libpqxx-dev postgresql-15 libcpp-httplib-dev
  libvips-dev libvips-tools gnome-backgrounds
  rsync time procps
)
# With --fuzz (scripts/fuzz.sh): clang with libFuzzer, ASan and UBSan.
FUZZ_PACKAGES=(clang-14 libclang-rt-14-dev)

# Installed with a temporary /usr/sbin/policy-rc.d that forbids starting services
# (exit 101), unless that file exists already: only a tool of theirs is needed, not
# the daemon their maintainer scripts would start (on a machine without systemd,
# through invoke-rc.d). With systemd the unit stays enabled for the next boot.
NO_START_PACKAGES=(
  prometheus
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --fuzz) PACKAGES+=("${FUZZ_PACKAGES[@]}") ;;
    *) die "unexpected argument '$1' (usage: scripts/setup.sh [--fuzz])" ;;
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
missing_no_start=()
for pkg in "${NO_START_PACKAGES[@]}"; do
  is_installed "$pkg" || missing_no_start+=("$pkg")
done
all_missing=("${missing[@]}" "${missing_no_start[@]}")

if [[ ${#all_missing[@]} -eq 0 ]]; then
  log "all $(( ${#PACKAGES[@]} + ${#NO_START_PACKAGES[@]} )) required packages are already installed; nothing to do"
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 \
    || die "not running as root and sudo is not available; run as root to install: ${missing[*]}"
  as_root=(sudo)
fi

apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)

log "missing packages: ${all_missing[*]}"
log "running: apt-get update"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update \
  || die "'apt-get update' failed (exit $?); check the network/apt sources and retry"

if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing: ${missing[*]}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" \
    || die "'apt-get install' failed (exit $?) for: ${missing[*]}"
fi

if [[ ${#missing_no_start[@]} -gt 0 ]]; then
  policy=/usr/sbin/policy-rc.d
  policy_marker='# temporary: mediasync scripts/setup.sh, removed when its install is done'
  policy_ours=0
  # Removes the policy file if this script created it (and it still is ours), on
  # every way out: success, die, Ctrl-C, kill.
  remove_policy() {
    if [[ $policy_ours -eq 1 ]]; then
      policy_ours=0
      if grep -qxF "$policy_marker" "$policy" 2>/dev/null; then
        "${as_root[@]}" rm -f "$policy" \
          || log "WARNING: could not remove the temporary $policy: remove it by hand"
      fi
    fi
  }
  trap remove_policy EXIT
  trap 'remove_policy; trap - INT; kill -INT $$' INT
  trap 'remove_policy; trap - TERM; kill -TERM $$' TERM
  if [[ -e $policy || -L $policy ]]; then
    log "$policy exists: installing ${missing_no_start[*]} under its policy"
  else
    policy_ours=1
    # noclobber: never overwrites a policy file that appeared meanwhile.
    printf '#!/bin/sh\n%s\nexit 101\n' "$policy_marker" \
      | "${as_root[@]}" sh -c 'set -C; umask 022; cat > "$1" && chmod 755 "$1"' sh "$policy" \
      || { policy_ours=0; die "cannot create the temporary $policy"; }
    log "created a temporary $policy (exit 101): no service starts during this install"
  fi
  if [[ $policy_ours -eq 1 ]]; then
    log "installing (services not started): ${missing_no_start[*]}"
  else
    log "installing: ${missing_no_start[*]}"
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing_no_start[@]}" \
    || die "'apt-get install' failed (exit $?) for: ${missing_no_start[*]}"
  remove_policy
  trap - EXIT INT TERM
fi

still_missing=()
for pkg in "${all_missing[@]}"; do
  is_installed "$pkg" || still_missing+=("$pkg")
done
[[ ${#still_missing[@]} -eq 0 ]] \
  || die "apt-get reported success but these packages are still not installed: ${still_missing[*]}"

log "installed: ${all_missing[*]}"
