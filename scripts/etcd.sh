# etcd for the bench's baseline (issue 22), from Debian's `etcd-server` package. Source it, then:
#   etcd_start   install etcd-server if needed, start one throwaway member on loopback with its data under
#                $ROOT/.tmp/etcd-bench, and export KEYMESH_BENCH_ETCD (its client gRPC address, host:port)
#                and KEYMESH_BENCH_ETCD_PID
#   etcd_stop    stop it and remove its data
# The member runs with etcd's defaults otherwise: every raft entry (a grant, a revoke) is fsynced to its WAL.

ETCD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tmp/etcd-bench"

_etcd_install() {
  command -v etcd >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "etcd.sh: etcd is not installed and this shell is not root; run: apt-get install -y etcd-server" >&2
    return 1
  fi
  echo "etcd.sh: installing etcd-server (Debian package)" >&2
  # The lock timeout: other checkouts on the same machine may be installing packages at the same time.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq </dev/null >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends etcd-server </dev/null >/dev/null
}

etcd_start() {
  _etcd_install || return 1
  etcd_stop
  mkdir -p "$ETCD_DIR"
  # Port 0 everywhere: the kernel picks the ports, and the log says which one serves clients. One member
  # never dials its peer port; the HTTP/JSON gateway is off, as it would dial the advertised port 0.
  etcd --name bench --data-dir "$ETCD_DIR/data" \
    --listen-client-urls http://127.0.0.1:0 --advertise-client-urls http://127.0.0.1:0 \
    --listen-peer-urls http://127.0.0.1:0 --initial-advertise-peer-urls http://127.0.0.1:0 \
    --initial-cluster bench=http://127.0.0.1:0 --enable-grpc-gateway=false \
    --logger zap --log-outputs "$ETCD_DIR/etcd.log" </dev/null >/dev/null 2>&1 9>&- &
  echo $! >"$ETCD_DIR/pid"
  local addr="" _
  for _ in $(seq 1 150); do
    # The log file appears once etcd has started its logger.
    [ -f "$ETCD_DIR/etcd.log" ] &&
      addr="$(sed -n 's/.*"msg":"serving client traffic insecurely[^"]*","address":"\([0-9.:]*\)".*/\1/p' "$ETCD_DIR/etcd.log" | head -n 1)"
    [ -n "$addr" ] && break
    _etcd_pid >/dev/null || break
    sleep 0.2
  done
  if [ -z "$addr" ]; then
    echo "etcd.sh: etcd did not start" >&2
    tail -n 20 "$ETCD_DIR/etcd.log" >&2 2>/dev/null
    etcd_stop
    return 1
  fi
  export KEYMESH_BENCH_ETCD="$addr" KEYMESH_BENCH_ETCD_PID="$(cat "$ETCD_DIR/pid")"
}

# The member's pid, if that process is alive and is this checkout's etcd (a stale pid file may name another process).
_etcd_pid() {
  local pid stat cmd
  [ -f "$ETCD_DIR/pid" ] || return 1
  pid="$(cat "$ETCD_DIR/pid")"
  stat="$(ps -o stat= -p "$pid" 2>/dev/null)"
  # No pipe into grep -q here: under pipefail, tr's SIGPIPE when grep stops early would read as "not ours".
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [ -n "$stat" ] && [ "${stat#Z}" = "$stat" ] && [[ "$cmd" == *"--data-dir $ETCD_DIR/data "* ]] && echo "$pid"
}

etcd_stop() {
  local pid _
  if pid="$(_etcd_pid)"; then
    kill "$pid"
    for _ in $(seq 1 100); do
      _etcd_pid >/dev/null || break
      sleep 0.1
    done
  fi
  rm -rf "$ETCD_DIR"
  return 0
}
