// One process, one signal: `npm start` runs the server as node itself, a stop signal however it arrives
// (to npm, to the process group, twice, Ctrl-C right after readiness) is one graceful stop that writes the
// final snapshot and exits 0 within STOP_BOUNDS.totalMs, also right after and during a database outage.
// The final snapshot is checked by restarting on the same database: a cooldown set after start-up is
// runtime state that only a snapshot carries, and the snapshot interval is an hour, so only the final
// one writes it. Servers run on a Postgres cluster of their own (killed here), except where `npm start`'s
// default, the embedded database, is the point.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import { PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { STOP_BOUNDS } from "../../server/src/ops/stop.js";
import { pgScript, ROOT } from "../../server/test/store/helpers.js";
import { scratchDatabase } from "../support/database.js";

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

const MASTER_KEY = randomBytes(32).toString("base64");
const CLUSTER = "pg-signals";
const dirs: string[] = [];
const relays: Relay[] = [];
let cluster: string | undefined;

const launched: ChildProcess[] = [];

afterAll(async () => {
  // A test that failed part way leaves its server running: end its process group.
  for (const child of launched.filter((c) => c.exitCode === null && c.signalCode === null)) {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // Gone meanwhile.
    }
  }
  await Promise.all(relays.map((r) => r.close()));
  if (cluster) pgScript("pg_stop", CLUSTER);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}, 60_000);

function clusterUrl(): string {
  cluster ??= pgScript("pg_start", CLUSTER).url;
  return cluster;
}

/** The environment of a server on a fresh database of the cluster, reached directly or through `relay`. */
async function onPostgres(relay?: Relay): Promise<{ env: NodeJS.ProcessEnv; directUrl: string }> {
  const db = await scratchDatabase(clusterUrl(), "keymesh_signals");
  const url = new URL(db.url);
  if (relay) {
    relays.push(relay);
    url.port = String(await relay.listen());
  }
  // One server on its database: its trust window in its pools (the TTL less 2 s) outlasts the 5 s outages below, so
  // it lends from memory through them.
  return { env: { ...baseEnv({ dir: await dataDir(), databaseUrl: url.toString() }), KEYMESH_OWNERSHIP_TTL: "10s" }, directUrl: db.url };
}

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "keymesh-signals-"));
  dirs.push(dir);
  return dir;
}

function baseEnv(data: { dir: string; databaseUrl?: string }): NodeJS.ProcessEnv {
  return {
    ...process.env,
    KEYMESH_GRPC_PORT: "0",
    KEYMESH_HTTP_PORT: "0",
    KEYMESH_DATA_DIR: data.dir,
    DATABASE_URL: data.databaseUrl ?? "",
    KEYMESH_MASTER_KEY: MASTER_KEY,
    KEYMESH_SNAPSHOT_INTERVAL: "1h",
    KEYMESH_LOG_LEVEL: "debug",
    npm_config_update_notifier: "false",
  };
}

/** `command` in a process group of its own (as a terminal runs it), output captured. */
function launch(command: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(command, args, { cwd: ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  launched.push(child);
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, out: () => out, exited };
}

const npmStart = (env: NodeJS.ProcessEnv) => launch("npm", ["start"], env);
const nodeServer = (env: NodeJS.ProcessEnv) => launch(process.execPath, ["--import", "tsx", "server/src/main.ts"], env);

/** Polls the output until `pattern` appears. */
async function waitFor(p: Proc, pattern: RegExp): Promise<RegExpExecArray> {
  for (let i = 0; i < 600; i++) {
    const m = pattern.exec(p.out());
    if (m) return m;
    if (p.child.exitCode !== null) throw new Error(`exited ${p.child.exitCode} before ${pattern}:\n${p.out()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${pattern} in:\n${p.out()}`);
}

/** The server's pid (from its "starting" line) and gRPC address, once it listens. */
async function ready(p: Proc): Promise<{ pid: number; addr: string }> {
  const pid = Number((await waitFor(p, /"pid":(\d+),"node":"v[\d.]+","msg":"starting"/))[1]);
  const port = (await waitFor(p, /"grpcPort":(\d+)/))[1];
  return { pid, addr: `127.0.0.1:${port}` };
}

function clients(addr: string) {
  const transport = createGrpcTransport({ baseUrl: `http://${addr}` });
  return { admin: createClient(PoolAdminService, transport), pool: createClient(KeyPoolService, transport) };
}

/** A pool of two keys, k1 cooling down for 10 minutes (state only a snapshot writes), k2 free to lend. */
async function coolKey(addr: string, pool: string): Promise<void> {
  const c = clients(addr);
  await c.admin.createPool({ pool: { name: pool } });
  await c.admin.addKey({ pool, key: { id: "k1" }, secret: "sk-signals-test-000000000000" });
  const lease = await c.pool.acquire({ pool, holder: "signals" });
  await c.pool.markRateLimited({ leaseId: lease.leaseId, retryAfter: durationFromMs(600_000) });
  await c.admin.addKey({ pool, key: { id: "k2" }, secret: "sk-signals-test-111111111111" });
}

async function cooldownAfterRestart(env: NodeJS.ProcessEnv, pool: string): Promise<number> {
  const again = nodeServer(env);
  try {
    const { addr } = await ready(again);
    // A stop cut short before it resigned leaves the pools to the old term until it expires (KEYMESH_OWNERSHIP_TTL).
    let stats;
    for (let i = 0; ; i++) {
      try {
        stats = await clients(addr).admin.getPoolStats({ pool });
        break;
      } catch (e) {
        if (ConnectError.from(e).code !== Code.Unavailable || i > 300) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const left = stats.stats!.keys.find((k) => k.keyId === "k1")!.cooldownRemaining;
    return left ? durationMs(left) : 0;
  } finally {
    again.child.kill("SIGTERM");
    await again.exited;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends `send()`, waits for the exit, and returns the exit code and how long the stop took. */
async function stopTimed(p: Proc, send: () => void): Promise<{ code: number | null; ms: number }> {
  const sent = performance.now();
  send();
  const code = await p.exited;
  return { code, ms: Math.round(performance.now() - sent) };
}

function expectOneGracefulStop(p: Proc): void {
  expect(p.out().match(/"msg":"shutting down"/g)).toHaveLength(1);
  expect(p.out()).toContain('"msg":"stopped"');
  expect(p.out()).not.toContain("final snapshot not written");
  expect(p.out()).not.toContain("exiting now");
}

describe("npm start: one process, one signal", () => {
  it("runs the server as npm's own child, node itself (no shell, no tsx wrapper)", async () => {
    const p = npmStart((await onPostgres()).env);
    const { pid } = await ready(p);
    try {
      const stat = (await import("node:fs")).readFileSync(`/proc/${pid}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      expect(ppid).toBe(p.child.pid);
      const cmdline = (await import("node:fs")).readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      expect(cmdline.slice(1, 4)).toEqual(["--import", "tsx", "server/src/main.ts"]);
    } finally {
      process.kill(-p.child.pid!, "SIGTERM");
      await p.exited;
    }
  }, 60_000);

  it("SIGTERM to npm's process: the server writes its final snapshot, exits 0, and leaves no orphan", async () => {
    const { env } = await onPostgres();
    const p = npmStart(env);
    const { pid, addr } = await ready(p);
    await coolKey(addr, "to-npm");
    const { code, ms } = await stopTimed(p, () => process.kill(p.child.pid!, "SIGTERM"));
    console.log(`stop via npm's pid: ${ms} ms`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(STOP_BOUNDS.totalMs);
    expect(alive(pid)).toBe(false);
    expectOneGracefulStop(p);
    expect(await cooldownAfterRestart(env, "to-npm")).toBeGreaterThan(500_000);
  }, 90_000);

  it("SIGTERM to the process group (npm relays it too): one stop, final snapshot, exit 0", async () => {
    const { env } = await onPostgres();
    const p = npmStart(env);
    const { pid, addr } = await ready(p);
    await coolKey(addr, "to-group");
    const { code, ms } = await stopTimed(p, () => process.kill(-p.child.pid!, "SIGTERM"));
    console.log(`stop via the process group: ${ms} ms`);
    expect(code).toBe(0);
    expect(alive(pid)).toBe(false);
    expectOneGracefulStop(p);
    expect(await cooldownAfterRestart(env, "to-group")).toBeGreaterThan(500_000);
  }, 90_000);

  it("SIGTERM twice in a row to the server: one stop, final snapshot, exit 0", async () => {
    const { env } = await onPostgres();
    const p = nodeServer(env);
    const { addr } = await ready(p);
    await coolKey(addr, "twice");
    const { code } = await stopTimed(p, () => {
      p.child.kill("SIGTERM");
      p.child.kill("SIGTERM");
    });
    expect(code).toBe(0);
    expectOneGracefulStop(p);
    expect(await cooldownAfterRestart(env, "twice")).toBeGreaterThan(500_000);
  }, 90_000);

  it("Ctrl-C right after readiness (SIGINT to the group, relayed by npm) stops gracefully, not at once", async () => {
    const p = npmStart(baseEnv({ dir: await dataDir() }));
    await waitFor(p, /"msg":"listening"/);
    const { code } = await stopTimed(p, () => process.kill(-p.child.pid!, "SIGINT"));
    expect(code).toBe(0);
    expectOneGracefulStop(p);
  }, 60_000);
});

/**
 * A TCP relay to Postgres that can drop off the network as a database host does when it vanishes: its
 * connections are cut, and new ones are accepted but never answered. Healed, it relays new connections
 * again; those accepted meanwhile stay unanswered.
 */
class Relay {
  readonly #server = net.createServer((client) => this.#accept(client));
  readonly #sockets = new Set<net.Socket>();
  #cut = false;

  constructor(private readonly target: { host: string; port: number }) {}

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    return (this.#server.address() as net.AddressInfo).port;
  }

  cut(): void {
    this.#cut = true;
    for (const socket of this.#sockets) socket.destroy();
  }

  heal(): void {
    this.#cut = false;
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => this.#sockets.delete(socket));
  }

  #accept(client: net.Socket): void {
    this.#track(client);
    if (this.#cut) return;
    const upstream = net.connect(this.target);
    this.#track(upstream);
    upstream.on("close", () => client.destroy());
    client.on("close", () => upstream.destroy());
    client.pipe(upstream).pipe(client);
  }
}

describe("SIGHUP", () => {
  it("re-applies the config file without a restart, logging what changed, and the server keeps serving", async () => {
    const dir = await dataDir();
    const file = path.join(dir, "keymesh.yaml");
    await writeFile(file, "pools:\n  - name: hup\n    default_ttl: 1m\n");
    const { env } = await onPostgres();
    const p = nodeServer({ ...env, KEYMESH_CONFIG: file });
    const { addr } = await ready(p);
    await writeFile(file, "pools:\n  - name: hup\n    default_ttl: 2m\n");
    p.child.kill("SIGHUP");
    p.child.kill("SIGHUP");
    await waitFor(p, /"changes":1,"msg":"config re-applied"/);
    expect(p.out()).toContain('"msg":"update pool hup (defaultTtlMs)"');
    expect(p.out().match(/config re-applied/g)).toHaveLength(1);
    expect(Number((await clients(addr).admin.getPool({ name: "hup" })).pool!.defaultTtl!.seconds)).toBe(120);
    const { code } = await stopTimed(p, () => p.child.kill("SIGTERM"));
    expect(code).toBe(0);
  }, 60_000);
});

describe("stopping around a database outage", () => {
  /** A server on its own database, with a pool whose k1 cools down (see coolKey). */
  async function server(pool: string, relay?: Relay) {
    const { env, directUrl } = await onPostgres(relay);
    const p = nodeServer(env);
    const { addr } = await ready(p);
    await coolKey(addr, pool);
    return { p, env, addr, directUrl };
  }

  /**
   * 24 callers lending in a loop from 4 keys until stopped. Unlimited keys: on Postgres a key with a max_concurrency
   * is not lent from memory during an outage (another replica could take the pool over), these are, their grants
   * held by the journal until the database returns.
   */
  async function callers(addr: string, pool: string) {
    const c = clients(addr);
    for (let i = 3; i <= 6; i++) {
      await c.admin.addKey({ pool, key: { id: `k${i}` }, secret: `sk-signals-test-${i}00000000000` });
    }
    let running = true;
    let cycles = 0;
    const loops = Array.from({ length: 24 }, async () => {
      while (running) {
        try {
          const lease = await c.pool.acquire({ pool, holder: "loop", waitTimeout: durationFromMs(200) }, { timeoutMs: 2000 });
          await c.pool.release({ leaseId: lease.leaseId }, { timeoutMs: 2000 });
          cycles += 1;
        } catch {
          if (running) await new Promise((r) => setTimeout(r, 20));
        }
      }
    });
    return {
      cycles: () => cycles,
      async stop() {
        running = false;
        await Promise.all(loops);
      },
    };
  }

  /** Starts the callers, begins the outage, and returns once the server lends from memory through it. */
  async function outage(p: Proc, addr: string, pool: string, begin: () => void) {
    const load = await callers(addr, pool);
    begin();
    await waitFor(p, /database unreachable: lending from memory/);
    const before = load.cycles();
    while (load.cycles() < before + 100) await new Promise((r) => setTimeout(r, 20));
    return load;
  }

  const relayToCluster = () => new Relay({ host: new URL(clusterUrl()).hostname, port: Number(new URL(clusterUrl()).port) });
  // The outage's length is the scenario's, as in the report that found the hang (5 s); nothing is timed by it.
  const OUTAGE_MS = 5000;

  it("right after a 5 s outage (Postgres killed, then back): final snapshot written, exit 0 within the bound", async () => {
    const { p, env, addr } = await server("after-kill");
    const load = await outage(p, addr, "after-kill", () => pgScript("pg_kill", CLUSTER));
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    pgScript("pg_restart", CLUSTER);
    const { code, ms } = await stopTimed(p, () => p.child.kill("SIGTERM"));
    await load.stop();
    console.log(`stop right after a 5 s outage (Postgres killed), 24 callers lending: ${ms} ms`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(STOP_BOUNDS.totalMs);
    expect(p.out()).toContain('"msg":"stopped"');
    expect(p.out()).not.toContain("final snapshot not written");
    expect(await cooldownAfterRestart(env, "after-kill")).toBeGreaterThan(500_000);
  }, 120_000);

  it("right after a 5 s network outage, a connection attempt still hanging: final snapshot written, the close cut short, exit 0", async () => {
    const relay = relayToCluster();
    const { p, env, addr, directUrl } = await server("after-partition", relay);
    const load = await outage(p, addr, "after-partition", () => relay.cut());
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    // An admin write just before the network returns: its connection attempt hangs unanswered.
    await clients(addr).admin.updatePool({ pool: { name: "after-partition", description: "x" }, updateMask: { paths: ["description"] } }, { timeoutMs: 300 }).catch(() => undefined);
    relay.heal();
    const { code, ms } = await stopTimed(p, () => p.child.kill("SIGTERM"));
    await load.stop();
    console.log(`stop right after a 5 s network outage, 24 callers lending: ${ms} ms`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(STOP_BOUNDS.totalMs);
    expect(p.out()).toContain('"msg":"stopped"');
    expect(p.out()).not.toContain("final snapshot not written");
    expect(p.out()).toContain("database connections not closed in time");
    expect(await cooldownAfterRestart({ ...env, DATABASE_URL: directUrl }, "after-partition")).toBeGreaterThan(500_000);
  }, 120_000);

  it("during an outage (Postgres killed): the unwritten snapshot is logged, exit 0 within the bound", async () => {
    const { p, addr } = await server("during-kill");
    const load = await outage(p, addr, "during-kill", () => pgScript("pg_kill", CLUSTER));
    const { code, ms } = await stopTimed(p, () => p.child.kill("SIGTERM"));
    await load.stop();
    pgScript("pg_restart", CLUSTER);
    console.log(`stop during an outage (Postgres killed), 24 callers lending: ${ms} ms`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(STOP_BOUNDS.totalMs);
    expect(p.out()).toContain("final snapshot not written");
    expect(p.out()).toContain('"msg":"stopped"');
  }, 120_000);

  it("during a network outage (every statement hangs): each step is cut at its bound and logged, exit 0", async () => {
    const relay = relayToCluster();
    const { p, addr } = await server("during-partition", relay);
    const load = await outage(p, addr, "during-partition", () => relay.cut());
    const { code, ms } = await stopTimed(p, () => p.child.kill("SIGTERM"));
    await load.stop();
    console.log(`stop during a network outage, 24 callers lending: ${ms} ms`);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(STOP_BOUNDS.totalMs);
    expect(p.out()).toContain("final snapshot not written in time");
    expect(p.out()).toContain("database connections not closed in time");
    expect(p.out()).toContain('"msg":"stopped"');
  }, 120_000);
});
