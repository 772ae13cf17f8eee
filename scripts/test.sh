#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (npm packages, Go plugins, a Python
# venv, Debian's postgresql), checks generated code and the proto, then runs every language's tests
# against a real Postgres and a real KeyMesh server.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"

step() { printf '\n== %s\n' "$*"; }

step "install"
ensure_node_modules
ensure_go_plugins
ensure_grpcurl
ensure_venv
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e "clients/python[test]"

step "generated code is up to date"
bash scripts/generate.sh >/dev/null
if [ -n "$(git status --porcelain -- server/src/gen clients/ts/src/gen clients/go/gen clients/python/src/keymesh/v1)" ]; then
  git status --short -- server/src/gen clients/ts/src/gen clients/go/gen clients/python/src/keymesh/v1
  echo "generated code differs from proto/: run 'npm run generate' and commit the result" >&2
  exit 1
fi

step "proto: breaking changes against main"
if git rev-parse --verify --quiet main >/dev/null; then
  buf breaking --against ".git#branch=main"
fi

step "typecheck"
tsc --noEmit -p .

step "postgres"
source scripts/pg.sh
pg_start
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  pg_stop || true
}
trap cleanup EXIT

step "server and TypeScript tests (vitest)"
vitest run

step "a KeyMesh server for the client suites"
server_log="$TOOLS/client-server.log"
server_data="$(mktemp -d)"
# The file exists before the server starts, so polling it never races the background redirect.
: >"$server_log"
KEYMESH_GRPC_PORT=0 KEYMESH_HTTP_PORT=0 KEYMESH_DATA_DIR="$server_data" KEYMESH_MASTER_KEY="$(head -c 32 /dev/urandom | base64)" \
  KEYMESH_LOG_LEVEL=info node --import tsx server/src/main.ts >>"$server_log" 2>&1 &
server_pid=$!
listening=""
for _ in $(seq 1 300); do
  listening="$(grep -m 1 '"msg":"listening"' "$server_log" || true)"
  [ -n "$listening" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$listening" ] || { echo "server did not start" >&2; cat "$server_log" >&2; exit 1; }
grpc_port="$(sed -n 's/.*"grpcPort":\([0-9]*\).*/\1/p' <<<"$listening")"
http_port="$(sed -n 's/.*"httpPort":\([0-9]*\).*/\1/p' <<<"$listening")"
export KEYMESH_ADDR="127.0.0.1:$grpc_port" KEYMESH_HTTP_ADDR="127.0.0.1:$http_port"
echo "server at $KEYMESH_ADDR (gRPC), $KEYMESH_HTTP_ADDR (HTTP)"

step "TypeScript client (vitest, against the server)"
vitest run --root clients/ts

step "Python client (pytest)"
"$VENV/bin/python" -m pytest clients/python -q

step "Go client (go test)"
(cd clients/go && go vet ./... && go test ./...)
