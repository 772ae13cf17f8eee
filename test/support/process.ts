// The server as a separate OS process (node --import tsx, so signals, kill -9 included, reach the
// server itself and not a wrapper), for tests of what only a process can show.
import { spawn, type ChildProcess } from "node:child_process";

export interface ServerProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

export function spawnServer(env: NodeJS.ProcessEnv): ServerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", "server/src/main.ts"], {
    env: { ...process.env, KEYMESH_GRPC_PORT: "0", KEYMESH_HTTP_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Waits for the "listening" log line and returns the bound ports. */
export async function listening(p: ServerProcess): Promise<{ grpcPort: number; httpPort: number }> {
  for (let i = 0; i < 300; i++) {
    const m = /"grpcPort":(\d+),"httpPort":(\d+)/.exec(p.stdout());
    if (m) return { grpcPort: Number(m[1]), httpPort: Number(m[2]) };
    if (p.child.exitCode !== null) throw new Error(`server exited: ${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server did not start");
}
