// Entry point of the `keymesh` command (bin/keymesh.mjs runs this file through tsx).
import { text } from "node:stream/consumers";
import { createAdminClient } from "./client.js";
import { runCli } from "./program.js";

const argv = process.argv.slice(2);
const interrupt = new AbortController();
// Only `watch` runs until interrupted; elsewhere Ctrl-C keeps its default meaning.
if (argv[0] === "watch") process.once("SIGINT", () => interrupt.abort());

process.exitCode = await runCli(argv, {
  stdout: (chunk) => process.stdout.write(chunk),
  stderr: (chunk) => process.stderr.write(chunk),
  readStdin: () => text(process.stdin),
  env: process.env,
  connect: createAdminClient,
  runServer: async () => (await import("../main.js")).runServer(),
  now: Date.now,
  interrupt: interrupt.signal,
});
