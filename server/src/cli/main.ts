// Entry point of the `keymesh` command (bin/keymesh.mjs runs this file through tsx).
import { text } from "node:stream/consumers";
import { createAdminClient } from "./client.js";
import { runCli } from "./program.js";

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: (chunk) => process.stdout.write(chunk),
  stderr: (chunk) => process.stderr.write(chunk),
  readStdin: () => text(process.stdin),
  env: process.env,
  connect: createAdminClient,
  runServer: async () => (await import("../main.js")).runServer(),
  now: Date.now,
  // Only `watch` registers; for every other command Ctrl-C keeps its default meaning.
  onInterrupt: (stop) => process.once("SIGINT", stop),
});
