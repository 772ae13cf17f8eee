#!/usr/bin/env node
// Launcher for the `keymesh` CLI: registers tsx so the TypeScript sources run as they are.
import { register } from "tsx/esm/api";

register();
await import(new URL("../server/src/cli/main.ts", import.meta.url).href);
