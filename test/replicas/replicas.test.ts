// Several server processes on one Postgres (DESIGN "Replicas"): real processes on loopback, a database of
// their own, polling for conditions. Ownership TTL is shortened to 3 s so failovers are quick to observe.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import net from "node:net";
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EventType, PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { ErrorReason } from "../../server/src/gen/keymesh/v1/common_pb.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { Channel } from "../../server/src/rpc/channel.js";
import { rejection, reasonOf } from "../support/errors.js";
import { listening, spawnServer, type ServerProcess } from "../support/process.js";
import { freshDatabase, uniqueName } from "../support/server.js";

const TTL_MS = 3000;
const MASTER_KEY = Buffer.alloc(32, 11).toString("base64");

interface Replica {
  p: ServerProcess;
  addr: string;
  httpPort: number;
  pool: Client<typeof KeyPoolService>;
  admin: Client<typeof PoolAdminService>;
}

let databaseUrl: string;
let sql: postgres.Sql;
const started: Replica[] = [];

async function startReplica(env: NodeJS.ProcessEnv = {}): Promise<Replica> {
  const p = spawnServer({
    DATABASE_URL: databaseUrl,
    KEYMESH_MASTER_KEY: MASTER_KEY,
    KEYMESH_SNAPSHOT_INTERVAL: "200ms",
    KEYMESH_OWNERSHIP_TTL: `${TTL_MS}ms`,
    KEYMESH_LOG_LEVEL: "info",
    ...env,
  });
  const { grpcPort, httpPort } = await listening(p);
  const addr = `127.0.0.1:${grpcPort}`;
  const transport = createGrpcTransport({ baseUrl: `http://${addr}` });
  const r = { p, addr, httpPort, pool: createClient(KeyPoolService, transport), admin: createClient(PoolAdminService, transport) };
  started.push(r);
  return r;
}

/** Stops every replica; after a failed test, first prints how each ended and the tail of its log. */
async function stopAll(failed = false): Promise<void> {
  for (const r of started.splice(0)) {
    if (failed) {
      const tail = (s: string) => s.trimEnd().split("\n").slice(-30).join("\n");
      const ended = r.p.child.exitCode ?? r.p.child.signalCode ?? "running";
      console.error(`replica ${r.addr} (${ended})\n${tail(r.p.stdout())}\n${tail(r.p.stderr())}`);
    }
    if (r.p.child.exitCode === null && r.p.child.signalCode === null) {
      r.p.child.kill("SIGCONT");
      r.p.child.kill("SIGKILL");
    }
    await r.p.exited;
  }
}

/** The live owner's address of each pool, from the database. */
async function owners(): Promise<Map<string, string>> {
  const rows = await sql<{ pool: string; address: string }[]>`
    select o.pool, r.address from pool_owners o join replicas r on r.id = o.owner where o.expires_at > now()`;
  return new Map(rows.map((r) => [r.pool, r.address]));
}

async function poll<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const FORWARDED = { headers: { "keymesh-forwarded": "1" } };

/** The pool's owner once placement has settled: a pool starts on the replica that created it and moves to the one it hashes to. */
async function settledOwner(pool: string): Promise<string> {
  return poll(`${pool} settled`, async () => {
    const first = (await owners()).get(pool);
    await new Promise((r) => setTimeout(r, 1500));
    const second = (await owners()).get(pool);
    return first !== undefined && first === second ? first : undefined;
  });
}

/** Acquire straight on `r`, never forwarded: resolves with the grant, or the error. */
async function acquireHere(r: Replica, pool: string) {
  try {
    return await r.pool.acquire({ pool, leaseTtl: durationFromMs(60_000) }, FORWARDED);
  } catch (e) {
    return ConnectError.from(e);
  }
}

beforeAll(async () => {
  databaseUrl = (await freshDatabase())!;
  expect(databaseUrl, "DATABASE_URL must point at the test Postgres").toBeDefined();
  sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
});

afterEach((ctx) => stopAll(ctx.task.result?.state === "fail"), 30_000);
afterAll(async () => {
  await stopAll();
  await sql?.end();
});

/** Creates `n` pools with one key each (max_concurrency `limit`) through `via`, each key added through whichever replica answers. */
async function createPools(via: Replica, n: number, limit = 0): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = uniqueName("rp");
    await via.admin.createPool({ pool: { name } });
    await poll(`key added to ${name}`, async () => (await via.admin.addKey({ pool: name, key: { id: "k", maxConcurrency: limit }, secret: `sk-replica-${i}-secret` })) && true);
    names.push(name);
  }
  return names;
}

describe("replicas on one Postgres", () => {
  it("start in any order: every pool has exactly one owner, pools spread over all, any replica answers naming the owner", async () => {
    const a = await startReplica();
    const pools = await createPools(a, 30);
    const b = await startReplica();
    const c = await startReplica();
    const all = [a, b, c];
    const spread = await poll("pools spread over three replicas", async () => {
      const o = await owners();
      if (pools.some((p) => !o.has(p))) return undefined;
      const counts = all.map((r) => pools.filter((p) => o.get(p) === r.addr).length);
      return counts.every((n) => n > 0) ? { o, counts } : undefined;
    });
    expect(spread.counts.reduce((x, y) => x + y)).toBe(30);
    // Each pool answers on every replica, and the answer names the owner the database names.
    for (const name of pools.slice(0, 6)) {
      await poll(`owner of ${name} stable`, async () => {
        const o = await owners();
        for (const r of all) {
          let header: string | null = null;
          const lease = await r.pool.acquire({ pool: name }, { onHeader: (h) => (header = h.get("keymesh-owner")) });
          await r.pool.release({ leaseId: lease.leaseId });
          if (header !== o.get(name)) return undefined;
        }
        return true;
      });
    }
    // ListPools on any replica lists every pool (from the database).
    for (const r of all) expect((await r.admin.listPools({})).pools.map((p) => p.name)).toEqual(expect.arrayContaining(pools));
    // GetPoolStats on any replica names the owner and its term; ListReplicas shows the three with their pools.
    const o = await owners();
    const [row] = await sql<{ term: number }[]>`select term from pool_owners where pool = ${pools[0]!}`;
    for (const r of all) {
      const { stats } = await r.admin.getPoolStats({ pool: pools[0] });
      expect(stats!.owner).toBe(o.get(pools[0]!));
      expect(stats!.term).toBe(BigInt(row!.term));
    }
    const { replicas } = await b.admin.listReplicas({});
    expect(replicas.map((m) => m.address).sort()).toEqual(all.map((r) => r.addr).sort());
    expect(replicas.flatMap((m) => m.pools).sort()).toEqual([...pools].sort());
  }, 120_000);

  it("max_concurrency holds across replicas under load arriving at every replica: 0 over-lent", async () => {
    const a = await startReplica();
    const b = await startReplica();
    const [name] = await createPools(a, 1, 2);
    await poll("pool owned", async () => ((await owners()).has(name!) ? true : undefined));
    const intervals: Array<{ start: number; end: number }> = [];
    let cancelled = 0;
    const worker = async (r: Replica) => {
      for (let i = 0; i < 25; i++) {
        let lease;
        try {
          lease = await r.pool.acquire({ pool: name, waitTimeout: durationFromMs(2000) });
        } catch (e) {
          // No key in time, or the pool changing hands; a call cut by the transport (CANCEL) granted nothing to this caller either.
          expect([Code.ResourceExhausted, Code.Unavailable, Code.Canceled], ConnectError.from(e).message).toContain(ConnectError.from(e).code);
          if (ConnectError.from(e).code === Code.Canceled) cancelled++;
          continue;
        }
        const start = performance.now();
        await new Promise((res) => setTimeout(res, 5));
        const end = performance.now();
        // A release during a hand-over is answered UNAVAILABLE and retried, as the clients do.
        for (let attempt = 0; ; attempt++) {
          try {
            await r.pool.release({ leaseId: lease.leaseId });
            break;
          } catch (e) {
            if (ConnectError.from(e).code !== Code.Unavailable || attempt > 100) throw e;
            await new Promise((res) => setTimeout(res, 20));
          }
        }
        intervals.push({ start, end });
      }
    };
    await Promise.all([a, b, a, b, a, b].map(worker));
    let maxHeld = 0;
    for (const x of intervals) maxHeld = Math.max(maxHeld, intervals.filter((y) => y.start <= x.start && x.start < y.end).length);
    expect(intervals.length).toBeGreaterThan(50);
    expect(maxHeld).toBeLessThanOrEqual(2);
    expect(cancelled).toBeLessThanOrEqual(3);
  }, 120_000);

  it("a KeepAlive stream on a non-owner renews through the owner and receives the owner's revocation", async () => {
    const a = await startReplica();
    const b = await startReplica();
    const [name] = await createPools(a, 1);
    const ownerAddr = await settledOwner(name!);
    const [owner, other] = ownerAddr === a.addr ? [a, b] : [b, a];
    const lease = await owner.pool.acquire({ pool: name, leaseTtl: durationFromMs(60_000) });
    const sends = new Channel<{ leaseId: string }>();
    const answers: Array<{ leaseId: string; result: string }> = [];
    let failure: unknown;
    const stream = (async () => {
      for await (const res of other.pool.keepAlive(sends)) answers.push({ leaseId: res.leaseId, result: res.result.case ?? "" });
    })().catch((e: unknown) => void (failure = e));
    sends.push({ leaseId: lease.leaseId });
    await poll("renewed through the owner", async () => (answers.some((x) => x.result === "renewed") ? true : undefined));
    await owner.admin.revokeLease({ leaseId: lease.leaseId, reason: "test" });
    await poll("revocation pushed", async () => (answers.some((x) => x.result === "gone") ? true : undefined), 5000);
    sends.close();
    await stream;
    expect(failure).toBeUndefined();
    expect(answers.map((x) => x.result)).toEqual(["renewed", "gone"]);
  }, 120_000);

  it("kill -9 of the owner: a survivor serves the pool within the TTL, and a lease granted before renews and releases there", async () => {
    const a = await startReplica();
    const b = await startReplica();
    const [name] = await createPools(a, 1, 1);
    const ownerAddr = await settledOwner(name!);
    const [owner, survivor] = ownerAddr === a.addr ? [a, b] : [b, a];
    // Released through the survivor (forwarded) just before the kill: its end was durable before the answer.
    const ended = await survivor.pool.acquire({ pool: name, leaseTtl: durationFromMs(60_000) });
    await survivor.pool.release({ leaseId: ended.leaseId });
    const held = await survivor.pool.acquire({ pool: name, leaseTtl: durationFromMs(60_000) });
    owner.p.child.kill("SIGKILL");
    const killedAt = performance.now();
    // Served again when the survivor answers for the pool itself: the key is still held by the lease granted before.
    await poll("survivor serves", async () => {
      const r = await acquireHere(survivor, name!);
      return r instanceof ConnectError && r.code === Code.ResourceExhausted ? true : undefined;
    });
    const ms = performance.now() - killedAt;
    console.log(`kill -9 failover: ${Math.round(ms)} ms (ownership TTL ${TTL_MS} ms)`);
    expect(ms).toBeLessThan(10_000);
    // The takeover replayed the journal as a restart does: the held lease is live there, the released one is not.
    expect((await survivor.admin.listLeases({ pool: name })).leases.map((l) => l.leaseId)).toEqual([held.leaseId]);
    await survivor.pool.renewLease({ leaseId: held.leaseId });
    await survivor.pool.release({ leaseId: held.leaseId });
    const next = await survivor.pool.acquire({ pool: name });
    expect(next.keyId).toBe("k");
  }, 120_000);

  it("SIGTERM of the owner: it resigns and a survivor serves in under a second", async () => {
    const a = await startReplica();
    const b = await startReplica();
    const [name] = await createPools(a, 1, 1);
    const ownerAddr = await settledOwner(name!);
    const [owner, survivor] = ownerAddr === a.addr ? [a, b] : [b, a];
    const events: Array<{ type: number; replica: string }> = [];
    const watching = new AbortController();
    const watch = (async () => {
      for await (const res of survivor.admin.watchEvents({ pool: name }, { signal: watching.signal })) events.push({ type: res.event!.type, replica: res.event!.replica });
    })().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    owner.p.child.kill("SIGTERM");
    const stoppedAt = performance.now();
    await poll("survivor serves", async () => {
      const r = await acquireHere(survivor, name!);
      return r instanceof ConnectError ? undefined : r;
    });
    const ms = performance.now() - stoppedAt;
    console.log(`SIGTERM failover: ${Math.round(ms)} ms`);
    expect(ms).toBeLessThan(1000);
    // The survivor's takeover is an event on its WatchEvents stream.
    await poll("takeover event", async () => (events.some((e) => e.type === EventType.POOL_CLAIMED && e.replica === survivor.addr) ? true : undefined), 5000);
    watching.abort();
    await watch;
  }, 120_000);

  it("a paused owner (SIGSTOP past its term, then SIGCONT) grants nothing, steps down, expires nothing in bulk, and rejoins", async () => {
    const a = await startReplica();
    const b = await startReplica();
    const [name] = await createPools(a, 1, 1);
    const ownerAddr = await settledOwner(name!);
    const [owner, survivor] = ownerAddr === a.addr ? [a, b] : [b, a];
    const before = await owner.pool.acquire({ pool: name, leaseTtl: durationFromMs(60_000) });
    owner.p.child.kill("SIGSTOP");
    await poll("survivor serves", async () => {
      const r = await acquireHere(survivor, name!);
      return r instanceof ConnectError && r.code === Code.ResourceExhausted ? true : undefined;
    });
    await survivor.pool.release({ leaseId: before.leaseId });
    // A short lease on the new owner whose deadline passes while the old owner sleeps on: the old owner must not expire it.
    const after = await survivor.pool.acquire({ pool: name, leaseTtl: durationFromMs(60_000) });
    owner.p.child.kill("SIGCONT");
    const woke = await acquireHere(owner, name!);
    expect(woke).toBeInstanceOf(ConnectError);
    expect((woke as ConnectError).code).toBe(Code.Unavailable);
    expect([ErrorReason.POOL_NOT_SERVED, ErrorReason.OWNERSHIP_LOST]).toContain(reasonOf(woke));
    // The lease granted by the new owner is still live there, and the old owner rejoins as a member.
    await survivor.pool.renewLease({ leaseId: after.leaseId });
    await poll("old owner rejoined", async () => {
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from replicas where address = ${owner.addr} and heartbeat_at > now() - interval '2 seconds'`;
      return row!.n === 1 ? true : undefined;
    });
    expect(owner.p.stdout()).not.toContain('"lease_expired"');
    const stillHeld = await rejection(survivor.pool.acquire({ pool: name }));
    expect(stillHeld.code).toBe(Code.ResourceExhausted);
  }, 120_000);

  it("an owner cut from Postgres stops granting limited keys within its trust window, the other takes over, and it rejoins", async () => {
    const target = new URL(databaseUrl);
    const sockets = new Set<net.Socket>();
    let open = true;
    const proxy = net.createServer((client) => {
      if (!open) return void client.destroy();
      const upstream = net.connect(Number(target.port), target.hostname);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
    await new Promise<void>((res) => proxy.listen(0, "127.0.0.1", res));
    const proxied = new URL(databaseUrl);
    proxied.port = String((proxy.address() as net.AddressInfo).port);
    try {
      const cut = await startReplica({ DATABASE_URL: proxied.toString() });
      const other = await startReplica();
      const [name] = await createPools(cut, 1, 1);
      await poll("pool owned by the proxied replica", async () => {
        const o = await owners();
        if (o.get(name!) === cut.addr) return true;
        return undefined;
      }).catch(async () => {
        // It hashed to the other replica: the test needs the proxied one as owner, so create more until one does.
      });
      let pool = name!;
      for (let i = 0; (await owners()).get(pool) !== cut.addr && i < 20; i++) {
        [pool] = await createPools(cut, 1, 1);
        await new Promise((r) => setTimeout(r, 1500));
      }
      expect((await owners()).get(pool)).toBe(cut.addr);
      open = false;
      for (const s of sockets) s.destroy();
      const cutAt = performance.now();
      await poll("cut replica stops granting", async () => {
        const r = await acquireHere(cut, pool);
        if (!(r instanceof ConnectError)) {
          await cut.pool.release({ leaseId: r.leaseId }).catch(() => undefined);
          return undefined;
        }
        return r.code === Code.Unavailable ? true : undefined;
      });
      const stoppedMs = performance.now() - cutAt;
      console.log(`cut from Postgres: stopped granting after ${Math.round(stoppedMs)} ms (TTL ${TTL_MS} ms)`);
      expect(stoppedMs).toBeLessThan(TTL_MS);
      expect((await fetch(`http://127.0.0.1:${cut.httpPort}/readyz`)).status).toBe(503);
      await poll("the other replica serves", async () => {
        const r = await acquireHere(other, pool);
        return r instanceof ConnectError ? undefined : r;
      });
      open = true;
      await poll("cut replica rejoins", async () => ((await fetch(`http://127.0.0.1:${cut.httpPort}/readyz`)).status === 200 ? true : undefined), 20_000);
      await poll("rejoined as a member", async () => {
        const [row] = await sql<{ n: number }[]>`select count(*)::int as n from replicas where address = ${cut.addr} and heartbeat_at > now() - interval '2 seconds'`;
        return row!.n === 1 ? true : undefined;
      });
    } finally {
      open = false;
      for (const s of sockets) s.destroy();
      proxy.close();
    }
  }, 180_000);

  it("a replica that cannot reach Postgres at all never becomes ready", async () => {
    const closed = net.createServer();
    await new Promise<void>((res) => closed.listen(0, "127.0.0.1", res));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((res) => closed.close(() => res()));
    const p = spawnServer({ DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nothing`, KEYMESH_MASTER_KEY: MASTER_KEY });
    const code = await p.exited;
    expect(code).not.toBe(0);
    expect(p.stdout()).not.toContain('"listening"');
  }, 60_000);
});
