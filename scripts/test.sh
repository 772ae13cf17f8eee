#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (npm packages, Go plugins, a Python
# venv, Debian's postgresql, chromium and promtool), checks generated code, the dashboard build and the
# proto, tests the alert rules, then runs every language's tests against a real Postgres and a real
# KeyMesh server.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"

step() { printf '\n== %s\n' "$*"; }

step "install"
ensure_node_modules
ensure_go_plugins
ensure_grpcurl
ensure_chromium
ensure_promtool
ensure_venv
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e "clients/python[test]"

step "runtime"
require_pinned_node

step "generated code and the dashboard build are up to date"
bash scripts/generate.sh >/dev/null
generated=(server/src/gen clients/ts/src/gen clients/go/gen clients/python/src/keymesh_client/v1 docs/api.md dashboard/build)
if [ -n "$(git status --porcelain -- "${generated[@]}")" ]; then
  git status --short -- "${generated[@]}"
  echo "generated code differs from proto/ or dashboard/build from dashboard/: run 'npm run generate' and commit the result" >&2
  exit 1
fi

step "proto: breaking changes against main"
if git rev-parse --verify --quiet main >/dev/null; then
  buf breaking --against ".git#branch=main"
fi

step "typecheck"
tsc --noEmit -p .
tsc --noEmit -p dashboard

step "alert rules (promtool)"
promtool check rules deploy/prometheus/keymesh-alerts.yml
promtool test rules deploy/prometheus/keymesh-alerts.test.yml

step "unused files, exports and dependencies (knip)"
knip

step "build (server/dist: what the image runs and an installed package carries)"
npm run -s build

step "postgres"
source scripts/pg.sh
pg_start
server_pids=()
# The client-suite servers' data directories, removed with them.
data_dirs=()
cleanup() {
  local pid
  for pid in "${server_pids[@]}"; do
    { kill "$pid" && wait "$pid"; } 2>/dev/null || true
  done
  rm -rf "${data_dirs[@]}"
  pg_stop || true
}
trap cleanup EXIT

step "server and TypeScript tests (vitest)"
vitest run

# Starts a KeyMesh server on port 0 with the extra environment given ("NAME=value" …), logging to $1, and
# waits until it listens; sets grpc_port and http_port. Its pid joins server_pids at once, for cleanup.
# It is the compiled server, as the image runs it (the vitest suites run the sources).
start_keymesh() {
  local log="$1" listening=""
  shift
  # The file exists before the server starts, so polling it never races the background redirect.
  : >"$log"
  env KEYMESH_GRPC_PORT=0 KEYMESH_HTTP_PORT=0 KEYMESH_MASTER_KEY="$(head -c 32 /dev/urandom | base64)" \
    KEYMESH_LOG_LEVEL=info "$@" node server/dist/main.js >>"$log" 2>&1 &
  local pid=$!
  server_pids+=("$pid")
  for _ in $(seq 1 300); do
    listening="$(grep -m 1 '"msg":"listening"' "$log" || true)"
    [ -n "$listening" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  [ -n "$listening" ] || { echo "server did not start" >&2; cat "$log" >&2; exit 1; }
  grpc_port="$(sed -n 's/.*"grpcPort":\([0-9]*\).*/\1/p' <<<"$listening")"
  http_port="$(sed -n 's/.*"httpPort":\([0-9]*\).*/\1/p' <<<"$listening")"
}

step "a KeyMesh server for the client suites"
# A database of its own, made afresh: the server's master key is new each run, and a database that kept
# the last run's sealed secrets would refuse it.
clients_db="$(pg_fresh_db keymesh_clients)"
data_dirs+=("$(mktemp -d)")
start_keymesh "$TOOLS/client-server.log" KEYMESH_DATA_DIR="${data_dirs[-1]}" DATABASE_URL="$clients_db"
export KEYMESH_ADDR="127.0.0.1:$grpc_port" KEYMESH_HTTP_ADDR="127.0.0.1:$http_port"
echo "server at $KEYMESH_ADDR (gRPC), $KEYMESH_HTTP_ADDR (HTTP)"

step "a second one over TLS, with a throwaway self-signed certificate"
# openssl comes with Debian's postgresql (postgresql-common needs ssl-cert, which needs openssl).
tls_dir="$TOOLS/client-tls"
mkdir -p "$tls_dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>/dev/null
# The embedded database: a second server must not share the first one's Postgres database.
data_dirs+=("$(mktemp -d)")
start_keymesh "$TOOLS/client-tls-server.log" DATABASE_URL= KEYMESH_DATA_DIR="${data_dirs[-1]}" \
  KEYMESH_TLS_CERT="$tls_dir/cert.pem" KEYMESH_TLS_KEY="$tls_dir/key.pem"
export KEYMESH_TLS_ADDR="127.0.0.1:$grpc_port" KEYMESH_TLS_HTTP_ADDR="127.0.0.1:$http_port" KEYMESH_TLS_CA="$tls_dir/cert.pem"
echo "TLS server at $KEYMESH_TLS_ADDR (gRPC), $KEYMESH_TLS_HTTP_ADDR (HTTPS), CA $KEYMESH_TLS_CA"

step "TypeScript client (vitest, against the server)"
vitest run --root clients/ts

step "Python client (pytest)"
"$VENV/bin/python" -m pytest clients/python -q

step "Go client (go test)"
(cd clients/go && go vet ./... && go test ./...)

step "install paths: each client from a scratch project outside the repository"
bash clients/ts/install-check.sh
bash clients/python/install-check.sh
bash clients/go/install-check.sh
