// The client's `tls` option against a real KeyMesh server over TLS at KEYMESH_TLS_ADDR, whose self-signed
// certificate is the PEM file KEYMESH_TLS_CA (scripts/test.sh starts it; KEYMESH_TLS_HTTP_ADDR, its HTTPS
// Connect listener, adds the Connect transport).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createKeyMeshClient } from "../src/index.js";

const tlsAddr = process.env.KEYMESH_TLS_ADDR;
const tlsHttpAddr = process.env.KEYMESH_TLS_HTTP_ADDR;
const caPath = process.env.KEYMESH_TLS_CA;

describe.skipIf(!tlsAddr || !caPath)("over TLS against a real server (KEYMESH_TLS_ADDR, KEYMESH_TLS_CA)", () => {
  const endpoints = { grpc: tlsAddr, connect: tlsHttpAddr };
  const transports = tlsHttpAddr ? (["grpc", "connect"] as const) : (["grpc"] as const);

  it.each(transports)("acquires and releases with the server's CA (%s transport)", async (transport) => {
    const client = createKeyMeshClient({ baseUrl: `https://${endpoints[transport]}`, transport, tls: { ca: readFileSync(caPath!) } });
    const name = `ts-tls-${randomBytes(5).toString("hex")}`;
    await client.admin.createPool({ pool: { name } });
    try {
      await client.admin.addKey({ pool: name, key: { id: "k1" }, secret: "sk-tls-k1" });
      const lease = await client.pool.acquire({ pool: name });
      expect([lease.keyId, lease.key]).toEqual(["k1", "sk-tls-k1"]);
      await client.pool.release({ leaseId: lease.leaseId });
      expect((await client.admin.listLeases({ pool: name })).leases).toHaveLength(0);
    } finally {
      await client.admin.deletePool({ name, force: true });
    }
  });

  it.each(transports)("fails with the certificate error, before its deadline, without the CA (%s transport)", async (transport) => {
    const client = createKeyMeshClient({ baseUrl: `https://${endpoints[transport]}`, transport, defaultTimeoutMs: 5_000 });
    const error = ConnectError.from(await client.pool.acquire({ pool: "any" }).catch((e: unknown) => e));
    // A hang would end as deadline_exceeded; connect-node reports a refused certificate as internal (not retried).
    expect([error.code, error.message]).toEqual([Code.Internal, expect.stringMatching(/self[- ]signed certificate/)]);
  });
});
