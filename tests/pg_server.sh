#!/usr/bin/env bash
# Starts or stops a throw-away PostgreSQL 15 server for the tests.
#
# Usage: tests/pg_server.sh start|stop|restart DIR
#        tests/pg_server.sh stop DIR
#
# start: creates DIR (owned by the `postgres` OS user, as initdb refuses to run
#   as root), a cluster in DIR/data (UTF8, locale C, fsync off: test data only),
#   and starts it on a free port, listening on the unix socket dir DIR/sock and
#   on 127.0.0.1. Authentication: unix socket `trust`, TCP `scram-sha-256`.
#   Creates the superuser role `root` (the tests run as root), and writes:
#     DIR/url   postgresql:///postgres?host=DIR/sock&port=PORT   (socket, trust;
#               the socket dir is under /tmp instead when DIR is too long for it)
#     DIR/port  PORT
#   The server log is DIR/server.log. Idempotent: when the server of DIR is
#   already running, prints its URL and does nothing else.
# stop: stops the server of DIR (pg_ctl stop -m fast) and removes DIR.
#   Idempotent: a missing DIR is fine.
#
# Runs as root (it switches to `postgres` with runuser) or as `postgres`.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { printf 'pg_server: %s\n' "$*" >&2; }
die() { printf 'pg_server: ERROR: %s\n' "$*" >&2; exit 1; }

usage() { die "usage: $0 start|stop|restart DIR"; }

[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2
[[ -n $dir ]] || usage
case $dir in
  /*) ;;
  *) dir=$(pwd)/$dir ;;
esac
dir=${dir%/}

# Runs a command as the postgres OS user.
as_pg() {
  if [[ $(id -un) == postgres ]]; then
    "$@"
  elif [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    die "must run as root or as the postgres user (running as $(id -un))"
  fi
}

is_running() {
  [[ -f $dir/data/PG_VERSION ]] && as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

# True when something accepts TCP connections on 127.0.0.1:$1 or a socket file exists.
port_busy() {
  local p=$1
  [[ -e $dir/sock/.s.PGSQL.$p ]] && return 0
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn "sport = :$p" 2>/dev/null | grep -q . && return 0
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 0
  return 1
}

start() {
  [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] \
    || die "PostgreSQL 15 server binaries not found in $PG_BIN (apt-get install postgresql-15, or scripts/setup.sh)"
  id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (it comes with the postgresql-15 package)"
  command -v psql >/dev/null 2>&1 || die "psql not found (postgresql-client-15)"

  if is_running && [[ -s $dir/url ]]; then
    log "server of $dir is already running: $(cat "$dir/url")"
    cat "$dir/url"
    return 0
  fi
  if [[ -e $dir ]]; then
    # A leftover of a crashed run: stop what may still run there, start afresh.
    log "removing leftover $dir"
    stop_server quiet
    remove_dir
  fi

  mkdir -p -- "$dir"
  local sockdir=$dir/sock
  # Unix socket paths are limited to 107 bytes (SOCKDIR/.s.PGSQL.NNNNN): with a
  # long DIR the socket goes to a directory under /tmp, removed by stop.
  if (( ${#sockdir} + 16 > 107 )); then
    sockdir=$(mktemp -d /tmp/mediasync-pg.XXXXXX) || die "cannot create a socket directory in /tmp"
    printf '%s\n' "$sockdir" >"$dir/sockdir"
  else
    mkdir -p -- "$sockdir"
  fi
  chown postgres: -- "$dir" "$sockdir"
  chmod 0700 -- "$dir"
  # Every parent must be searchable by postgres.
  as_pg test -x "$dir" \
    || die "the postgres OS user cannot reach $dir (a parent directory is not searchable): use another DIR"

  as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
    || die "initdb failed; see $dir/initdb.log: $(tail -n 5 "$dir/initdb.log")"

  local port attempt started=0
  for attempt in $(seq 1 20); do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    port_busy "$port" && continue
    as_pg tee "$dir/data/postgresql.auto.conf" >/dev/null <<EOF
# written by tests/pg_server.sh: a throw-away test server
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 128MB
log_min_messages = warning
log_connections = off
EOF
    if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1; then
      started=1
      break
    fi
    # Most likely another process took the port between the check and the start.
    log "start on port $port failed (attempt $attempt): $(tail -n 2 "$dir/server.log" 2>/dev/null | tr '\n' ' ')"
  done
  (( started )) || die "could not start the server; see $dir/server.log"

  as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$sockdir" -p "$port" -U postgres -d postgres -c \
    "DO \$\$ BEGIN
       IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') THEN
         CREATE ROLE root SUPERUSER LOGIN;
       END IF;
     END \$\$;" >/dev/null \
    || die "cannot create the role root; see $dir/server.log"

  printf '%s\n' "$port" >"$dir/port"
  printf 'postgresql:///postgres?host=%s&port=%s\n' "$sockdir" "$port" >"$dir/url.tmp"
  mv -f -- "$dir/url.tmp" "$dir/url"
  log "started PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') in $dir on port $port"
  cat "$dir/url"
}

# Stops the server of $dir if it runs. With "quiet", no message when none runs.
stop_server() {
  if [[ -f $dir/data/PG_VERSION ]]; then
    if is_running; then
      as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null \
        || die "pg_ctl stop failed for $dir/data; see $dir/server.log"
      log "stopped the server of $dir"
    elif [[ ${1:-} != quiet ]]; then
      log "no server running in $dir"
    fi
  fi
}

stop() {
  if [[ ! -e $dir ]]; then
    log "$dir does not exist; nothing to stop"
    return 0
  fi
  stop_server
  remove_dir
  log "removed $dir"
}

# Removes $dir and the socket directory under /tmp that a long DIR needed.
remove_dir() {
  if [[ -f $dir/sockdir ]]; then
    local s
    s=$(cat "$dir/sockdir")
    [[ $s == /tmp/mediasync-pg.* ]] && rm -rf -- "$s"
  fi
  rm -rf -- "$dir"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  restart)  # what a server restart looks like to clients: every connection drops
    is_running || die "no server running in $dir"
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null \
      || die "pg_ctl restart failed for $dir/data; see $dir/server.log"
    log "restarted the server of $dir" ;;
  *) usage ;;
esac
