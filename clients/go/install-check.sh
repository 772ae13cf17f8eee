#!/usr/bin/env bash
# Copies the examples into a scratch module outside the repository that requires the client through a
# replace directive, builds them there with the oldest Go that go.mod declares (GOTOOLCHAIN, fetched
# from the module proxy) and with the local go, and runs the quickstart against the server at
# KEYMESH_ADDR; the module's tests also run with that oldest Go. scripts/test.sh runs it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${KEYMESH_ADDR:?KEYMESH_ADDR must name a running server}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
module="$(cd "$here" && go list -m)"
oldest="go$(cd "$here" && go mod edit -json | sed -n 's/^\s*"Go": "\(.*\)",\?$/\1/p')"

cp -r "$here/examples" "$scratch/"
cd "$scratch"
go mod init example.com/keymesh-install-check >/dev/null 2>&1
go mod edit -go="${oldest#go}" -require="$module@v0.0.0" -replace="$module=$here"
go mod tidy >/dev/null 2>&1
# The module's own suite with the oldest toolchain (scripts/test.sh runs it with the local one).
(cd "$here" && GOTOOLCHAIN="$oldest" go vet ./... && GOTOOLCHAIN="$oldest" go test -count=1 ./...)
for toolchain in "$oldest" local; do
  GOTOOLCHAIN="$toolchain" go vet ./...
  GOTOOLCHAIN="$toolchain" go build -o "bin-$toolchain/" ./...
done

# A pool with one key for the quickstart, through the client's own admin API.
pool="install-go-$RANDOM$RANDOM"
mkdir setup
cat >setup/main.go <<'EOF'
package main

import (
	"context"
	"os"

	keymesh "github.com/keymesh/keymesh/clients/go"
	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
)

func main() {
	client, err := keymesh.NewClient(os.Getenv("KEYMESH_ADDR"), keymesh.WithInsecure())
	if err != nil {
		panic(err)
	}
	defer client.Close()
	ctx, pool := context.Background(), os.Args[1]
	if len(os.Args) > 2 && os.Args[2] == "delete" {
		_, err = client.DeletePool(ctx, &keymeshv1.DeletePoolRequest{Name: pool, Force: true})
	} else if _, err = client.CreatePool(ctx, &keymeshv1.CreatePoolRequest{Pool: &keymeshv1.Pool{Name: pool}}); err == nil {
		_, err = client.AddKey(ctx, &keymeshv1.AddKeyRequest{Pool: pool, Key: &keymeshv1.Key{Id: "k1", Label: "installed"}, Secret: "sk-install-check"})
	}
	if err != nil {
		panic(err)
	}
}
EOF
go run ./setup "$pool"
trap 'go run ./setup "$pool" delete || true; rm -rf "$scratch"' EXIT
for toolchain in "$oldest" local; do
  out="$("./bin-$toolchain/quickstart" "$pool")"
  [ "$out" = "leased installed" ] || { echo "quickstart built with $toolchain printed: $out" >&2; exit 1; }
done
echo "ok: the examples build in a scratch module (replace $module => clients/go) with $oldest and $(go env GOVERSION); the quickstart runs"
