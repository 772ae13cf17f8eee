// TLS on both listeners (KEYMESH_TLS_CERT / KEYMESH_TLS_KEY), with a self-signed certificate for
// 127.0.0.1 made by openssl for this run.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { startTestServer, uniqueName, type TestServer } from "../support/server.js";

let ts: TestServer;
let ca: Buffer;

beforeAll(async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "keymesh-tls-"));
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
  ], { stdio: "ignore" });
  ca = readFileSync(cert);
  ts = await startTestServer({ KEYMESH_TLS_CERT: cert, KEYMESH_TLS_KEY: key });
});

afterAll(async () => {
  await ts?.stop();
});

describe("TLS", () => {
  it("serves native gRPC over TLS and refuses plaintext", async () => {
    const transport = createGrpcTransport({ baseUrl: `https://${ts.grpcAddr}`, nodeOptions: { ca } });
    const admin = createClient(PoolAdminService, transport);
    const pool = createClient(KeyPoolService, transport);
    const name = uniqueName("tls");
    await admin.createPool({ pool: { name } });
    await admin.addKey({ pool: name, key: { id: "k" }, secret: "sk-tls-000000000000000000" });
    const lease = await pool.acquire({ pool: name });
    expect(lease.key).toBe("sk-tls-000000000000000000");
    await pool.release({ leaseId: lease.leaseId });
    await expect(ts.admin.listPools({})).rejects.toThrow();
  });

  it("serves Connect over HTTPS (HTTP/1.1 and HTTP/2)", async () => {
    for (const httpVersion of ["1.1", "2"] as const) {
      const transport = createConnectTransport({ baseUrl: `https://127.0.0.1:${ts.server.httpPort}`, httpVersion, nodeOptions: { ca } });
      const { pools } = await createClient(PoolAdminService, transport).listPools({});
      expect(Array.isArray(pools)).toBe(true);
    }
  });
});
