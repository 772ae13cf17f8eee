# Real Postgres for tests, from Debian's `postgresql` package. Source it, then:
#   pg_start     init (if needed) and start a cluster on 127.0.0.1, create keymesh_test, export
#                DATABASE_URL and KEYMESH_TEST_PG_DATA
#   pg_stop      fast shutdown          pg_kill     immediate shutdown (an outage, as after a crash)
#   pg_restart   start again after pg_stop or pg_kill, on the same port
#   pg_fresh_db NAME   drop NAME if it exists, create it empty, and print its URL
# KEYMESH_PG_NAME (default "pg") picks the cluster directory $ROOT/.tmp/$KEYMESH_PG_NAME, so a test
# that kills its Postgres can run its own cluster beside the shared one.

PG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The cluster lives in the repository's .tmp/, unless the postgres user cannot reach it (a checkout under
# /root, say): then under /tmp, in a directory named after the checkout.
_pg_dir() {
  local base="$PG_ROOT/.tmp"
  mkdir -p "$base"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$base" 2>/dev/null; then
    base="/tmp/keymesh-pg-$(echo "$PG_ROOT" | md5sum | cut -c1-8)"
    mkdir -p "$base"
    chmod 755 "$base"
  fi
  echo "$base/${KEYMESH_PG_NAME:-pg}"
}

_pg_bin() {
  local ctl
  ctl="$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$ctl" ] && dirname "$ctl"
}

# Postgres refuses to run as root, so as root every server command runs as the `postgres` user.
_pg_as() {
  # fd 9 is pg_start's lock: a server started with it open would hold the lock for its whole life.
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@" 9>&-); else "$@" 9>&-; fi
}

_pg_install() {
  [ -n "$(_pg_bin)" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "pg.sh: postgresql is not installed and this shell is not root; run: apt-get install -y postgresql" >&2
    return 1
  fi
  echo "pg.sh: installing postgresql (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql </dev/null >/dev/null
}

_pg_port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_pg_pick_port() {
  local port tries=0
  while [ "$tries" -lt 50 ]; do
    port=$((20000 + RANDOM % 20000))
    if _pg_port_free "$port"; then echo "$port"; return 0; fi
    tries=$((tries + 1))
  done
  echo "pg.sh: no free port found" >&2
  return 1
}

# The postmaster's pid from postmaster.pid, if that process is alive (a killed one may linger as a zombie).
_pg_pid() {
  local pidfile="$1/data/postmaster.pid" pid stat
  [ -f "$pidfile" ] || return 1
  pid="$(head -n 1 "$pidfile")"
  stat="$(ps -o stat= -p "$pid" 2>/dev/null)"
  [ -n "$stat" ] && [ "${stat#Z}" = "$stat" ] && echo "$pid"
}

_pg_running() {
  _pg_pid "$1" >/dev/null
}

_pg_init() {
  local dir="$1" bin data
  bin="$(_pg_bin)"
  data="$dir/data"
  # A cluster from an interrupted initdb or another major version is rebuilt: it only ever holds test data.
  if [ -f "$data/PG_VERSION" ] && [ "$(cat "$data/PG_VERSION")" = "$(basename "$(dirname "$bin")")" ] &&
    [ -f "$data/postgresql.auto.conf" ] && [ -f "$dir/port" ]; then
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  chown postgres "$dir" 2>/dev/null || true
  _pg_as "$bin/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; return 1; }
  _pg_pick_port >"$dir/port" || return 1
  _pg_configure "$dir"
}

# fsync off: only an OS crash could lose data, and tests never survive one. Commits stay synchronous,
# so pg_kill loses nothing that was committed, as with a production server.
_pg_configure() {
  local dir="$1"
  _pg_as tee "$dir/data/postgresql.auto.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $(cat "$dir/port")
unix_socket_directories = ''
fsync = off
full_page_writes = off
max_connections = 200
EOF
}

_pg_export() {
  local dir="$1"
  export KEYMESH_TEST_PG_DATA="$dir/data"
  export DATABASE_URL="postgres://postgres@127.0.0.1:$(cat "$dir/port")/keymesh_test"
}

_pg_launch() {
  local dir="$1" bin
  bin="$(_pg_bin)"
  if ! _pg_running "$dir"; then
    # A killed run leaves postmaster.pid behind, and its port may have been taken since.
    rm -f "$dir/data/postmaster.pid"
    if ! _pg_port_free "$(cat "$dir/port")"; then
      _pg_pick_port >"$dir/port" || return 1
      _pg_configure "$dir"
    fi
    # Backends orphaned by a killed postmaster hold its shared memory for a moment after it dies.
    local attempt
    for attempt in 1 2 3 4 5; do
      _pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null 2>&1 && break
      [ "$attempt" = 5 ] && { tail -n 20 "$dir/server.log" >&2; return 1; }
      sleep 1
    done
  fi
}

_pg_createdb() {
  local port
  port="$(cat "$1/port")"
  if [ -z "$(_pg_as "$(_pg_bin)/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc \
    "select 1 from pg_database where datname = 'keymesh_test'")" ]; then
    _pg_as "$(_pg_bin)/createdb" -h 127.0.0.1 -p "$port" -U postgres keymesh_test
  fi
}

pg_start() {
  _pg_install || return 1
  local dir
  dir="$(_pg_dir)"
  # Test workers may start the same cluster at once; one of them initialises it.
  (flock 9 && _pg_init "$dir" && _pg_launch "$dir" && _pg_createdb "$dir") 9>"$dir.lock" || return 1
  _pg_export "$dir"
}

pg_fresh_db() {
  local dir port
  dir="$(_pg_dir)"
  port="$(cat "$dir/port")"
  _pg_as "$(_pg_bin)/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "drop database if exists \"$1\" with (force)" >/dev/null 2>&1 &&
    _pg_as "$(_pg_bin)/createdb" -h 127.0.0.1 -p "$port" -U postgres "$1" &&
    echo "postgres://postgres@127.0.0.1:$port/$1"
}

pg_stop() {
  local dir
  dir="$(_pg_dir)"
  _pg_running "$dir" && _pg_as "$(_pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  return 0
}

pg_kill() {
  local dir
  dir="$(_pg_dir)"
  _pg_running "$dir" && _pg_as "$(_pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  return 0
}

pg_restart() {
  local dir
  dir="$(_pg_dir)"
  [ -f "$dir/port" ] || { pg_start; return; }
  pg_stop
  (flock 9 && _pg_launch "$dir") 9>"$dir.lock" || return 1
  _pg_export "$dir"
}
