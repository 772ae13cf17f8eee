// The operator's path: grpcurl with no .proto files, through server reflection. This is the README
// walk-through (create a pool, add a key, acquire, release), run with the real grpcurl binary that
// scripts/test.sh installs into .tmp/bin.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { startTestServer, uniqueName, type TestServer } from "../support/server.js";

const run = promisify(execFile);
const grpcurl = path.resolve(".tmp/bin/grpcurl");

let ts: TestServer;

beforeAll(async () => {
  if (!existsSync(grpcurl)) throw new Error(`${grpcurl} is missing: scripts/test.sh installs it (go install)`);
  ts = await startTestServer();
});

afterAll(async () => {
  await ts?.stop();
});

async function call(...args: string[]): Promise<string> {
  const { stdout } = await run(grpcurl, ["-plaintext", ...args]);
  return stdout;
}

describe("grpcurl through reflection", () => {
  it("lists the services and describes KeepAlive as a bidi stream", async () => {
    const services = (await call(ts.grpcAddr, "list")).trim().split("\n");
    expect(services).toEqual(expect.arrayContaining(["keymesh.v1.KeyPoolService", "keymesh.v1.PoolAdminService", "grpc.health.v1.Health"]));
    const described = await call(ts.grpcAddr, "describe", "keymesh.v1.KeyPoolService");
    for (const rpc of ["Acquire", "Release", "MarkFailed", "MarkRateLimited", "RenewLease"]) expect(described).toContain(`rpc ${rpc} (`);
    expect(described).toMatch(/rpc KeepAlive \( stream \.keymesh\.v1\.KeepAliveRequest \) returns \( stream/);
    expect(await call(ts.grpcAddr, "describe", "keymesh.v1.AcquireRequest")).toContain(".google.protobuf.Duration wait_timeout = 2;");
  });

  it("reports SERVING", async () => {
    expect(JSON.parse(await call(ts.grpcAddr, "grpc.health.v1.Health/Check"))).toEqual({ status: "SERVING" });
  });

  it("runs the README walk-through: create a pool, add a key, acquire, release", async () => {
    const pool = uniqueName("demo");
    await call("-d", JSON.stringify({ pool: { name: pool, strategy: "STRATEGY_LEAST_BUSY" } }), ts.grpcAddr, "keymesh.v1.PoolAdminService/CreatePool");
    const added = JSON.parse(
      await call("-d", JSON.stringify({ pool, key: { id: "openai-1", maxConcurrency: 2 }, secret: "sk-demo-abcdefghijklmnop" }), ts.grpcAddr, "keymesh.v1.PoolAdminService/AddKey"),
    );
    expect(added.key.secretHint).toBe("sk-…mnop");
    const lease = JSON.parse(await call("-d", JSON.stringify({ pool, holder: "grpcurl", leaseTtl: "30s" }), ts.grpcAddr, "keymesh.v1.KeyPoolService/Acquire"));
    expect(lease.key).toBe("sk-demo-abcdefghijklmnop");
    expect(lease.ttl).toBe("30s");
    expect(lease.renewInterval).toBe("10s");
    await call("-d", JSON.stringify({ leaseId: lease.leaseId, latency: "0.250s" }), ts.grpcAddr, "keymesh.v1.KeyPoolService/Release");
    const stats = JSON.parse(await call("-d", JSON.stringify({ pool }), ts.grpcAddr, "keymesh.v1.PoolAdminService/GetPoolStats"));
    expect(stats.stats.keys[0]).toMatchObject({ keyId: "openai-1", emaLatency: "0.250s", totalLeases: "1" });
  });
});

describe("grpcurl describe shows the proto comments", () => {
  it("of a service and its methods", async () => {
    const out = await call(ts.grpcAddr, "describe", "keymesh.v1.KeyPoolService");
    expect(out).toContain("// KeyPoolService is the hot path used by every backend");
    expect(out).toMatch(/\/\/ Acquire lends one key of the pool under a lease\.[^]*rpc Acquire \( \.keymesh\.v1\.AcquireRequest \)/);
  });

  it("of a message's fields and of an enum's values", async () => {
    const acquire = await call(ts.grpcAddr, "describe", "keymesh.v1.AcquireRequest");
    expect(acquire).toMatch(/\/\/ How long to wait for a key when none is eligible; unset or zero fails at once\.\s+\.google\.protobuf\.Duration wait_timeout = 2;/);
    const reasons = await call(ts.grpcAddr, "describe", "keymesh.v1.ErrorReason");
    expect(reasons).toMatch(/\/\/ No key became eligible before the wait ended \(RESOURCE_EXHAUSTED, with retry_after\)\.\s+ERROR_REASON_NO_KEY_AVAILABLE = 9;/);
  });

  it("of a method named in full", async () => {
    expect(await call(ts.grpcAddr, "describe", "keymesh.v1.PoolAdminService.WatchEvents")).toContain("// WatchEvents streams what happens in a pool");
  });
});
