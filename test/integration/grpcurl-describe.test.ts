// `grpcurl describe` through server reflection shows the proto comments, as docs/api.md does: the real
// grpcurl binary that scripts/test.sh installs into .tmp/bin, against a real server.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { startTestServer, type TestServer } from "../support/server.js";

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

async function describeSymbol(symbol: string): Promise<string> {
  const { stdout } = await run(grpcurl, ["-plaintext", ts.grpcAddr, "describe", symbol]);
  return stdout;
}

describe("grpcurl describe", () => {
  it("shows the comments of a service and its methods", async () => {
    const out = await describeSymbol("keymesh.v1.KeyPoolService");
    expect(out).toContain("// KeyPoolService is the hot path used by every backend");
    expect(out).toMatch(/\/\/ Acquire lends one key of the pool under a lease\.[^]*rpc Acquire \( \.keymesh\.v1\.AcquireRequest \)/);
  });

  it("shows the comments of a message's fields and of an enum's values", async () => {
    const acquire = await describeSymbol("keymesh.v1.AcquireRequest");
    expect(acquire).toMatch(/\/\/ How long to wait for a key when none is eligible; unset or zero fails at once\.\s+\.google\.protobuf\.Duration wait_timeout = 2;/);
    const reasons = await describeSymbol("keymesh.v1.ErrorReason");
    expect(reasons).toMatch(/\/\/ No key became eligible before the wait ended \(RESOURCE_EXHAUSTED, with retry_after\)\.\s+ERROR_REASON_NO_KEY_AVAILABLE = 9;/);
  });

  it("shows them for a method by its full name", async () => {
    expect(await describeSymbol("keymesh.v1.PoolAdminService.WatchEvents")).toContain("// WatchEvents streams what happens in a pool");
  });
});
