// Real KeyMesh server processes for the failover tests: the compiled server when it is built (as
// scripts/test.sh does), the sources otherwise, on loopback. By default each has its embedded database
// in a directory of its own, so one can be killed and started again on the same port with its leases;
// replicas share a Postgres database and a master key instead.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../", import.meta.url));

export interface KeyMeshProcess {
  /** host:port of the gRPC listener (kept across restarts). */
  readonly addr: string;
  /** Starts the server again on the same port and data directory after a kill. */
  restart(): Promise<void>;
  kill(signal: NodeJS.Signals): Promise<void>;
  /** Kills it and removes its data. */
  dispose(): Promise<void>;
}

export async function startKeyMesh(opts: { databaseUrl?: string; masterKey?: string; env?: NodeJS.ProcessEnv } = {}): Promise<KeyMeshProcess> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keymesh-failover-"));
  const env = {
    ...process.env,
    DATABASE_URL: opts.databaseUrl ?? "",
    KEYMESH_HOST: "127.0.0.1",
    KEYMESH_HTTP_PORT: "0",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_MASTER_KEY: opts.masterKey ?? randomBytes(32).toString("base64"),
    KEYMESH_LOG_LEVEL: "info",
    ...opts.env,
  };
  let child: ChildProcess | undefined;
  let port = 0;
  const start = async () => {
    const dist = path.join(root, "server/dist/main.js");
    const args = existsSync(dist) ? [dist] : ["--import", "tsx", path.join(root, "server/src/main.ts")];
    const proc = spawn(process.execPath, args, { cwd: root, env: { ...env, KEYMESH_GRPC_PORT: String(port) }, stdio: ["ignore", "pipe", "pipe"] });
    child = proc;
    port = await new Promise<number>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`server did not start: ${out.slice(-2000)}`)), 60_000);
      const onData = (d: Buffer) => {
        out += d.toString();
        const m = /"grpcPort":(\d+).*"msg":"listening"/.exec(out);
        if (m) {
          clearTimeout(timer);
          proc.stdout!.off("data", onData);
          resolve(Number(m[1]));
        }
      };
      proc.stdout!.on("data", onData);
      proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
      proc.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code}: ${out.slice(-2000)}`));
      });
    });
    proc.stdout!.resume();
  };
  const kill = async (signal: NodeJS.Signals) => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.kill(signal);
    });
  };
  await start();
  return {
    get addr() {
      return `127.0.0.1:${port}`;
    },
    restart: start,
    kill,
    async dispose() {
      await kill("SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
