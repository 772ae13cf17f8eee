// The process: configuration from the environment, start, a bounded graceful stop on SIGTERM/SIGINT, and
// the config file re-applied on SIGHUP.
// Start-up failures are one line on stderr and a non-zero exit, never a stack trace.
import { pathToFileURL } from "node:url";
import { startServer, type RunningServer } from "./app/app.js";
import { configFromEnv } from "./app/config.js";
import { createLogger, type Logger } from "./ops/logger.js";
import { SignalPolicy, STOP_BOUNDS, type ProcessSignal } from "./ops/stop.js";

/** Runs the server until a signal stops it. Exported for the CLI's `serve`. */
export async function runServer(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  // Handlers first: a signal during start-up stops the server as soon as it is up, never half-started.
  const policy = new SignalPolicy(Date.now);
  let log: Logger | undefined;
  let server: RunningServer | undefined;
  let stopRequested: ProcessSignal | undefined;

  const stop = (signal: ProcessSignal) => {
    log?.info({ signal }, "shutting down");
    const deadline = setTimeout(() => {
      log?.error({ signal, boundMs: STOP_BOUNDS.totalMs }, "stop did not finish in time: exiting");
      process.exit(1);
    }, STOP_BOUNDS.totalMs);
    deadline.unref();
    server!.shutdown().then(
      () => process.exit(0),
      (e: unknown) => {
        log?.error({ err: (e as Error).message }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: ProcessSignal) => {
    const decision = policy.decide(signal);
    switch (decision) {
      case "stop":
        if (server) stop(signal);
        else stopRequested = signal;
        return;
      case "reload":
        if (server) void server.reload();
        else log?.warn({ signal }, "not started yet: nothing to re-apply");
        return;
      case "force":
        log?.warn({ signal }, "second interrupt: exiting now, without the final snapshot");
        process.exit(130);
        return;
      case "duplicate":
      case "already_stopping":
        log?.debug({ signal, decision }, "signal ignored");
    }
  };
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(signal, () => onSignal(signal));

  try {
    const cfg = configFromEnv(env);
    log = createLogger(cfg.logLevel);
    log.info({ pid: process.pid, node: process.version }, "starting");
    server = await startServer(cfg, log, env);
  } catch (e) {
    // A bad config file has one problem per line; each line names the process.
    process.stderr.write(`${(e as Error).message.split("\n").map((line) => `keymesh: ${line}`).join("\n")}\n`);
    process.exit(1);
  }
  if (stopRequested) stop(stopRequested);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  void runServer();
}
