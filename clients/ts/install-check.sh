#!/usr/bin/env bash
# Installs the packed @keymesh/client tarball into a scratch project outside the repository and runs
# the quickstart against the server at KEYMESH_ADDR twice: as plain JavaScript under node, and as a
# TypeScript app compiled by tsc. scripts/test.sh runs it; it needs the npm registry for the peer
# dependencies and @types/node.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${KEYMESH_ADDR:?KEYMESH_ADDR must name a running server}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

tarball="$(cd "$here" && npm pack --silent --pack-destination "$scratch" | tail -n 1)"
cd "$scratch"
npm init -y >/dev/null
npm pkg set type=module
npm install --no-audit --no-fund --silent "./$tarball" typescript@5 @types/node@20 >/dev/null

# The package's own admin client makes a pool with one key for the quickstart.
pool="install-ts-$RANDOM$RANDOM"
cat >setup.mjs <<'EOF'
import { createKeyMeshClient } from "@keymesh/client";
const [pool, action] = process.argv.slice(2);
const client = createKeyMeshClient({ baseUrl: `http://${process.env.KEYMESH_ADDR}` });
if (action === "delete") await client.admin.deletePool({ name: pool, force: true });
else {
  await client.admin.createPool({ pool: { name: pool } });
  await client.admin.addKey({ pool, key: { id: "k1", label: "installed" }, secret: "sk-install-check" });
}
EOF
node setup.mjs "$pool" create
trap 'node setup.mjs "$pool" delete || true; rm -rf "$scratch"' EXIT

# The quickstart has no type annotations, so the same file is plain JavaScript.
cp "$here/examples/quickstart.ts" quickstart.mjs
out="$(node quickstart.mjs "$pool")"
[ "$out" = "leased installed" ] || { echo "plain node quickstart printed: $out" >&2; exit 1; }

cat >tsconfig.json <<'EOF'
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true, "outDir": "out", "types": ["node"] }, "include": ["quickstart.ts"] }
EOF
cp "$here/examples/quickstart.ts" quickstart.ts
npx tsc -p .
out="$(node out/quickstart.js "$pool")"
[ "$out" = "leased installed" ] || { echo "tsc-compiled quickstart printed: $out" >&2; exit 1; }
echo "ok: $tarball installs in a scratch project; the quickstart runs under plain node and compiled by tsc"
