// Entry point of the `keymesh` command (bin/keymesh.mjs runs it from the sources or from server/dist).
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { text } from "node:stream/consumers";
import { setTimeout as sleep } from "node:timers/promises";
import { createAdminClient } from "./client.js";
import { runCli } from "./program.js";

// The same relative path from server/src/cli and server/dist/cli, in a checkout and in an installed package.
const { version } = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: (chunk) => process.stdout.write(chunk),
  stderr: (chunk) => process.stderr.write(chunk),
  readStdin: () => text(process.stdin),
  readFile: (path) => readFile(path, "utf8"),
  env: process.env,
  connect: createAdminClient,
  runServer: async () => (await import("../main.js")).runServer(),
  now: Date.now,
  sleep: (ms, signal) => sleep(ms, undefined, { signal }).catch(() => undefined),
  // Only `watch` registers; for every other command Ctrl-C keeps its default meaning.
  onInterrupt: (stop) => process.once("SIGINT", stop),
  version,
});
