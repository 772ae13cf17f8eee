// Both listeners against a real server and a real database: Connect over gRPC, Connect JSON over
// HTTP/1.1, a plain @grpc/grpc-js client (wire interop), reflection, health, and bad input.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { createRequire } from "node:module";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { ErrorDetailSchema, ErrorReason } from "../../server/src/gen/keymesh/v1/common_pb.js";
import { AcquireRequestSchema, AcquireResponseSchema, KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { Channel } from "../../server/src/rpc/channel.js";
import { reasonOf, rejection } from "../support/errors.js";
import { connectJsonClients, startTestServer, uniqueName, type TestServer } from "../support/server.js";

const require = createRequire(import.meta.url);



let ts: TestServer;

beforeAll(async () => {
  ts = await startTestServer({ KEYMESH_MAX_MESSAGE_BYTES: String(64 * 1024) });
});

afterAll(async () => {
  await ts?.stop();
});

async function poolWithKey(secret = "sk-test-0123456789abcdef") {
  const name = uniqueName("tp");
  await ts.admin.createPool({ pool: { name } });
  const { key } = await ts.admin.addKey({ pool: name, key: { id: "k1", label: "first", metadata: { base_url: "http://127.0.0.1:1" } }, secret });
  return { name, key: key! };
}

describe("Connect client over native gRPC (grpc-js listener)", () => {
  it("creates a pool, adds a key, acquires and releases; a second release is NOT_FOUND LEASE_RELEASED", async () => {
    const { name, key } = await poolWithKey();
    expect(key.secretHint).toBe("sk-…cdef");
    const lease = await ts.pool.acquire({ pool: name, holder: "it", leaseTtl: durationFromMs(10_000) });
    expect(lease.key).toBe("sk-test-0123456789abcdef");
    expect(lease.keyId).toBe("k1");
    expect(lease.keyLabel).toBe("first");
    expect(lease.keyMetadata).toEqual({ base_url: "http://127.0.0.1:1" });
    expect(Number(lease.ttl!.seconds)).toBe(10);
    expect(lease.renewInterval!.seconds).toBe(3n);
    await ts.pool.release({ leaseId: lease.leaseId, latency: durationFromMs(120) });
    const again = await rejection(ts.pool.release({ leaseId: lease.leaseId }));
    expect(again.code).toBe(Code.NotFound);
    expect(reasonOf(again)).toBe(ErrorReason.LEASE_RELEASED);
  });

  it("answers an unknown pool with NOT_FOUND and a machine-readable reason", async () => {
    const err = await rejection(ts.pool.acquire({ pool: "no-such-pool" }));
    expect(err.code).toBe(Code.NotFound);
    expect(reasonOf(err)).toBe(ErrorReason.POOL_NOT_FOUND);
  });

  it("answers a malformed lease id with INVALID_ARGUMENT and a forged one with NOT_FOUND", async () => {
    const malformed = await rejection(ts.pool.renewLease({ leaseId: "not-a-lease" }));
    expect(malformed.code).toBe(Code.InvalidArgument);
    expect(reasonOf(malformed)).toBe(ErrorReason.LEASE_ID_MALFORMED);
    const { name } = await poolWithKey();
    const lease = await ts.pool.acquire({ pool: name });
    const [prefix, payload, mac] = lease.leaseId.split(".");
    const forgedMac = (mac[0] === "A" ? "B" : "A") + mac.slice(1);
    const forged = await rejection(ts.pool.renewLease({ leaseId: `${prefix}.${payload}.${forgedMac}` }));
    expect(forged.code).toBe(Code.NotFound);
    expect(reasonOf(forged)).toBe(ErrorReason.LEASE_UNKNOWN);
    await ts.pool.release({ leaseId: lease.leaseId });
  });

  it("an empty pool is RESOURCE_EXHAUSTED with reason POOL_EMPTY; a negative duration names its field", async () => {
    const name = uniqueName("empty");
    await ts.admin.createPool({ pool: { name } });
    const empty = await rejection(ts.pool.acquire({ pool: name }));
    expect(empty.code).toBe(Code.ResourceExhausted);
    expect(reasonOf(empty)).toBe(ErrorReason.POOL_EMPTY);
    const negative = await rejection(ts.pool.acquire({ pool: name, leaseTtl: { seconds: -5n, nanos: 0 } }));
    expect(negative.code).toBe(Code.InvalidArgument);
    expect(ConnectError.from(negative).findDetails(ErrorDetailSchema)[0]?.field).toBe("lease_ttl");
  });

  it("renews over the KeepAlive stream and pushes a revocation when the key is disabled", async () => {
    const { name } = await poolWithKey();
    const lease = await ts.pool.acquire({ pool: name, leaseTtl: durationFromMs(5_000) });
    const input = new Channel<{ leaseId: string }>();
    input.push({ leaseId: lease.leaseId });
    const stream = ts.pool.keepAlive(input.drain());
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.value.result.case).toBe("renewed");
    await ts.admin.disableKey({ pool: name, keyId: "k1", reason: "rotating" });
    const pushed = await it.next();
    expect(pushed.value.leaseId).toBe(lease.leaseId);
    expect(pushed.value.result.case).toBe("gone");
    expect(pushed.value.result.value.reason).toBe(ErrorReason.LEASE_REVOKED);
    input.close();
    expect((await it.next()).done).toBe(true);
  });
});

describe("Connect JSON over HTTP/1.1 (connect-node listener)", () => {
  it("answers Acquire for an unknown pool with the Connect code not_found", async () => {
    const res = await fetch(`${ts.httpUrl}/keymesh.v1.KeyPoolService/Acquire`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ pool: "no-such-pool" }),
    });
    expect(res.status).toBe(404);
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe("not_found");
    expect(body.message).toContain("no-such-pool");
  });

  it("rejects unknown fields and wrong types with invalid_argument naming the problem", async () => {
    for (const body of ['{"pool":"x","bogus":1}', '{"pool":17}', "{not json"]) {
      const res = await fetch(`${ts.httpUrl}/keymesh.v1.KeyPoolService/Acquire`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      const json = (await res.json()) as { code: string; message: string };
      expect(json.code, body).toBe("invalid_argument");
      expect(json.message.length).toBeGreaterThan(0);
    }
  });

  it("serves the same implementation: a JSON client sees state created over gRPC", async () => {
    const { name } = await poolWithKey();
    const json = connectJsonClients(ts.httpUrl);
    const { keys } = await json.admin.listKeys({ pool: name });
    expect(keys.map((k) => k.id)).toEqual(["k1"]);
    const lease = await json.pool.acquire({ pool: name });
    await json.pool.release({ leaseId: lease.leaseId });
  });

  it("rejects a message over the size limit with resource_exhausted", async () => {
    const res = await fetch(`${ts.httpUrl}/keymesh.v1.KeyPoolService/Acquire`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ pool: "x", holder: "h".repeat(100 * 1024) }),
    });
    expect(((await res.json()) as { code: string }).code).toBe("resource_exhausted");
  });

  it("serves /healthz, /readyz and /metrics", async () => {
    expect((await fetch(`${ts.httpUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${ts.httpUrl}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${ts.httpUrl}/metrics`)).text();
    expect(metrics).toContain("keymesh_acquire_duration_seconds");
  });
});

describe("HTTP/2 without TLS on the HTTP listener", () => {
  it("serves Connect (binary) and gRPC over h2c, bidi streams included", async () => {
    const { name } = await poolWithKey();
    for (const transport of [
      createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "2", useBinaryFormat: true }),
      createGrpcTransport({ baseUrl: ts.httpUrl }),
    ]) {
      const pool = createClient(KeyPoolService, transport);
      const lease = await pool.acquire({ pool: name });
      const input = new Channel<{ leaseId: string }>();
      input.push({ leaseId: lease.leaseId });
      const replies = pool.keepAlive(input.drain())[Symbol.asyncIterator]();
      expect((await replies.next()).value.result.case).toBe("renewed");
      input.close();
      expect((await replies.next()).done).toBe(true);
      await pool.release({ leaseId: lease.leaseId });
    }
  });
});

describe("plain @grpc/grpc-js client (wire interop)", () => {
  const definition = {
    acquire: {
      path: "/keymesh.v1.KeyPoolService/Acquire",
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  };
  const Ctor = grpc.makeGenericClientConstructor(definition, "KeyPoolService");
  const call = (client: grpc.Client, body: Buffer) =>
    new Promise<{ err: grpc.ServiceError | null; res?: Buffer }>((resolve) =>
      (client as unknown as { acquire: (b: Buffer, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void }).acquire(body, (err, res) =>
        resolve({ err, res }),
      ),
    );

  it("acquires with protobuf-es bytes and reads the reply", async () => {
    const { name } = await poolWithKey();
    const client = new Ctor(ts.grpcAddr, grpc.credentials.createInsecure());
    const { err, res } = await call(client, Buffer.from(toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: name }))));
    expect(err).toBeNull();
    const reply = fromBinary(AcquireResponseSchema, res!);
    expect(reply.keyId).toBe("k1");
    await ts.pool.release({ leaseId: reply.leaseId });
    client.close();
  });

  it("gets NOT_FOUND with ErrorDetail in grpc-status-details-bin", async () => {
    const client = new Ctor(ts.grpcAddr, grpc.credentials.createInsecure());
    const { err } = await call(client, Buffer.from(toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: "nope" }))));
    expect(err?.code).toBe(grpc.status.NOT_FOUND);
    const bin = err!.metadata.get("grpc-status-details-bin")[0] as Buffer;
    expect(bin).toBeInstanceOf(Buffer);
    // google.rpc.Status: field 3 holds Any{type_url, value}; find our ErrorDetail inside it.
    expect(bin.toString("latin1")).toContain("keymesh.v1.ErrorDetail");
    client.close();
  });

  it("answers undecodable bytes with INVALID_ARGUMENT and stays up", async () => {
    const client = new Ctor(ts.grpcAddr, grpc.credentials.createInsecure());
    const { err } = await call(client, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/malformed keymesh\.v1\.AcquireRequest/);
    const { err: tooBig } = await call(client, Buffer.alloc(100 * 1024, 0x20));
    expect(tooBig?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const { err: after } = await call(client, Buffer.from(toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: "nope" }))));
    expect(after?.code).toBe(grpc.status.NOT_FOUND);
    client.close();
  });
});

describe("reflection and health", () => {
  const reflectionProto = path.join(path.dirname(require.resolve("@grpc/reflection/package.json")), "build/proto/grpc/reflection/v1/reflection.proto");

  it("lists both KeyMesh services and grpc.health.v1.Health, and describes KeepAlive as a bidi stream", async () => {
    const pkg = grpc.loadPackageDefinition(loadSync(reflectionProto, { keepCase: true })) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(ts.grpcAddr, grpc.credentials.createInsecure());
    const stream = (client as unknown as { ServerReflectionInfo: () => grpc.ClientDuplexStream<object, Record<string, any>> }).ServerReflectionInfo();
    const replies: Record<string, any>[] = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on("data", (d) => replies.push(d));
      stream.on("end", resolve);
      stream.on("error", reject);
    });
    stream.write({ list_services: "" });
    stream.write({ file_containing_symbol: "keymesh.v1.KeyPoolService" });
    stream.end();
    await done;
    client.close();
    const services = replies[0].list_services_response.service.map((s: { name: string }) => s.name);
    expect(services).toEqual(expect.arrayContaining(["keymesh.v1.KeyPoolService", "keymesh.v1.PoolAdminService", "grpc.health.v1.Health"]));
    const files: Buffer[] = replies[1].file_descriptor_response.file_descriptor_proto;
    expect(Buffer.concat(files).toString("latin1")).toContain("KeepAlive");
  });

  it("reports SERVING on grpc.health.v1.Health", async () => {
    const { protoPath } = await import("grpc-health-check");
    const pkg = grpc.loadPackageDefinition(loadSync(protoPath, { enums: String })) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } };
    const client = new pkg.grpc.health.v1.Health(ts.grpcAddr, grpc.credentials.createInsecure());
    const status = await new Promise<string>((resolve, reject) =>
      (client as unknown as { check: (r: object, cb: (e: Error | null, r: { status: string }) => void) => void }).check({ service: "" }, (e, r) =>
        e ? reject(e) : resolve(r.status),
      ),
    );
    expect(status).toBe("SERVING");
    client.close();
  });
});
