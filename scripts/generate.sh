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

PY_OUT=clients/python/src
rm -rf "$PY_OUT/keymesh/v1"
mkdir -p "$PY_OUT/keymesh/v1"
"$VENV/bin/python" -m grpc_tools.protoc -Iproto \
  --python_out="$PY_OUT" --pyi_out="$PY_OUT" --grpc_python_out="$PY_OUT" \
  proto/keymesh/v1/*.proto
: > "$PY_OUT/keymesh/v1/__init__.py"

# protoc-gen-es strips the comments (source info) from the descriptors it embeds; reflection serves these
# instead, so `grpcurl describe` shows the comments, and the API reference is written from the same bytes.
buf build --as-file-descriptor-set --exclude-imports -o "$TOOLS/keymesh.binpb"
tsx scripts/descriptor-set.ts "$TOOLS/keymesh.binpb" server/src/gen/keymesh/v1/descriptor_set.ts
tsx scripts/api-reference.ts docs/api.md
node dashboard/build.mjs
echo "generated: server/src/gen (keymesh, grpc health and reflection) clients/ts/src/gen clients/go/gen $PY_OUT/keymesh/v1 docs/api.md dashboard/build"
