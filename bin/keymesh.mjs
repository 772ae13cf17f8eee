#!/usr/bin/env node
// The `keymesh` command. In a checkout it runs the TypeScript sources through tsx's loader; an installed
// package and the image carry them compiled to server/dist (`npm run build`, which `npm pack` runs) and
// need no tsx.
import { existsSync } from "node:fs";

const source = new URL("../server/src/cli/main.ts", import.meta.url);
if (existsSync(source)) {
  const { register } = await import("tsx/esm/api");
  register();
  await import(source.href);
} else {
  await import(new URL("../server/dist/cli/main.js", import.meta.url).href);
}
