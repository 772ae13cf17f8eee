// Builds the dashboard into dashboard/build: src/main.ts bundled with the libraries it imports
// (esbuild, minified, no source map) beside index.html, style.css and favicon.svg. The output is
// committed and scripts/test.sh checks it is up to date, as with generated code, so neither the
// server nor its image needs a bundler. Run by `npm run generate`.
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, "build");

rmSync(out, { recursive: true, force: true });
mkdirSync(out);
await build({
  entryPoints: [path.join(here, "src/main.ts")],
  outfile: path.join(out, "app.js"),
  tsconfig: path.join(here, "tsconfig.json"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  charset: "utf8",
  legalComments: "none",
  banner: { js: "// KeyMesh dashboard, built from dashboard/src by dashboard/build.mjs. Bundles @bufbuild/protobuf, @connectrpc/connect and @connectrpc/connect-web (Apache-2.0)." },
  logLevel: "warning",
});
for (const file of ["index.html", "style.css", "favicon.svg"]) copyFileSync(path.join(here, file), path.join(out, file));
