// The process: configuration from the environment, start, and a graceful stop on SIGTERM/SIGINT.
// Start-up failures are one line on stderr and a non-zero exit, never a stack trace.
import { pathToFileURL } from "node:url";
import { startServer } from "./app/app.js";
import { configFromEnv } from "./app/config.js";
import { createLogger } from "./ops/logger.js";

/** Runs the server until a signal stops it. Exported for the CLI's `serve`. */
export async function runServer(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let log;
  let server;
  try {
    const cfg = configFromEnv(env);
    log = createLogger(cfg.logLevel);
    server = await startServer(cfg, log, env);
  } catch (e) {
    process.stderr.write(`keymesh: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const running = server;
  let signals = 0;
  const stop = (signal: string) => {
    signals += 1;
    if (signals > 1) {
      process.stderr.write(`keymesh: second ${signal}, exiting now\n`);
      process.exit(1);
    }
    log.info({ signal }, "shutting down");
    const deadline = setTimeout(() => {
      process.stderr.write("keymesh: shutdown took longer than 5s, exiting\n");
      process.exit(1);
    }, 5000);
    deadline.unref();
    running.shutdown().then(
      () => process.exit(0),
      (e: unknown) => {
        process.stderr.write(`keymesh: shutdown failed: ${(e as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  void runServer();
}
