#!/usr/bin/env bash
# Regenerates every language from proto/: TypeScript (server and clients/ts), Go and Python; the
# descriptors with their comments that server reflection serves, and the API reference (docs/api.md);
# then builds the dashboard (dashboard/build), which bundles the server's generated TypeScript.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$ROOT"
ensure_node_modules
ensure_go_plugins
ensure_venv

buf lint
buf generate
buf generate node_modules/grpc-health-check/proto --template buf.gen.grpc.yaml
buf generate node_modules/@grpc/reflection/build/proto --template buf.gen.grpc.yaml \
  --path node_modules/@grpc/reflection/build/proto/grpc/reflection

PY_OUT=clients/python/src/keymesh_client/v1
PY_TMP="$(mktemp -d)"
"$VENV/bin/python" -m grpc_tools.protoc -Iproto \
  --python_out="$PY_TMP" --pyi_out="$PY_TMP" --grpc_python_out="$PY_TMP" \
  proto/keymesh/v1/*.proto
rm -rf "$PY_OUT"
mkdir -p "$PY_OUT"
mv "$PY_TMP"/keymesh/v1/* "$PY_OUT"/
rm -rf "$PY_TMP"
# protoc names the modules after the proto package (keymesh.v1); the import name is keymesh_client,
# which does not collide with PyPI's keymesh.
sed -i 's/^from keymesh\.v1 import/from keymesh_client.v1 import/' "$PY_OUT"/*.py "$PY_OUT"/*.pyi
: > "$PY_OUT/__init__.py"

# protoc-gen-es strips the comments (source info) from the descriptors it embeds; reflection serves these
# instead, so `grpcurl describe` shows the comments, and the API reference is written from the same bytes.
buf build --as-file-descriptor-set --exclude-imports -o "$TOOLS/keymesh.binpb"
tsx scripts/descriptor-set.ts "$TOOLS/keymesh.binpb" server/src/gen/keymesh/v1/descriptor_set.ts
tsx scripts/api-reference.ts docs/api.md
node dashboard/build.mjs
echo "generated: server/src/gen (keymesh, grpc health and reflection) clients/ts/src/gen clients/go/gen $PY_OUT docs/api.md dashboard/build"
