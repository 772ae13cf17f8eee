// Bad input on both listeners and in every protocol, each case one that used to be answered INTERNAL,
// without an ErrorDetail, or not at all: undecodable and oversized messages, durations outside
// protobuf's range, strings Postgres cannot hold, inputs echoed back whole, and errors in streams.
import * as http2 from "node:http2";
import * as net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, toBinary, type DescMethod, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "../../server/src/gen/keymesh/v1/common_pb.js";
import { CreatePoolRequestSchema, PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { AcquireRequestSchema, KeepAliveRequestSchema, KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { ERROR_MESSAGE_MAX } from "../../server/src/rpc/limits.js";
import { httpCall, PROTOCOLS, RawGrpcClient, viaFetch, viaHttp2, type Outcome, type Protocol } from "../support/raw-rpc.js";
import { connectJsonClients, startTestServer, uniqueName, type TestServer } from "../support/server.js";

const method = (service: typeof KeyPoolService | typeof PoolAdminService, name: string) => service.methods.find((m) => m.name === name) as DescMethod;
const ACQUIRE = method(KeyPoolService, "Acquire");
const KEEPALIVE = method(KeyPoolService, "KeepAlive");
const WATCH = method(PoolAdminService, "WatchEvents");
const CREATE_POOL = method(PoolAdminService, "CreatePool");
const ENABLE_KEY = method(PoolAdminService, "EnableKey");
const CALL = { streamMs: 2000, timeoutMs: 10_000 };
const MAX_MESSAGE_BYTES = 64 * 1024;

let ts: TestServer;
let grpcPort: RawGrpcClient;
let h2cPort: RawGrpcClient;
let session: http2.ClientHttp2Session;

beforeAll(async () => {
  ts = await startTestServer({ KEYMESH_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES) });
  grpcPort = new RawGrpcClient(ts.grpcAddr);
  h2cPort = new RawGrpcClient(`127.0.0.1:${ts.server.httpPort}`);
  session = http2.connect(ts.httpUrl);
});

afterAll(async () => {
  session?.close();
  grpcPort?.close();
  h2cPort?.close();
  await ts?.stop();
});

/** One call of `m` over `protocol`; bidi streams and gRPC-Web/Connect go over h2c. */
function call(protocol: Protocol, m: DescMethod, messages: Uint8Array[]): Promise<Outcome> {
  if (protocol === "grpc") return grpcPort.call(m, messages, CALL);
  if (protocol === "grpc-h2c") return h2cPort.call(m, messages, CALL);
  return httpCall(m.methodKind === "bidi_streaming" ? viaHttp2(session) : viaFetch(ts.httpUrl), protocol, m, messages, CALL);
}

/** The message in the protocol's own encoding: JSON for Connect JSON, protobuf for the rest. */
function encode<T extends DescMethod["input"]>(protocol: Protocol, schema: T, init: MessageInitShape<T>, json: unknown = init): Uint8Array {
  return protocol === "connect-json" ? Buffer.from(JSON.stringify(json)) : toBinary(schema, create(schema, init));
}

function expectRefused(o: Outcome, code: Code, reason: ErrorReason, field = ""): void {
  expect({ code: Code[o.code as Code], reason: o.detail && ErrorReason[o.detail.reason], field: o.detail?.field }).toEqual({ code: Code[code], reason: ErrorReason[reason], field });
  expect(o.message.length).toBeLessThanOrEqual(ERROR_MESSAGE_MAX);
  if (o.httpStatus !== undefined) expect(o.httpStatus).toBeLessThan(500);
}

describe.each(PROTOCOLS)("over %s", (protocol) => {
  it("answers an undecodable message INVALID_ARGUMENT with MALFORMED_MESSAGE, and one over the size limit MESSAGE_TOO_LARGE", async () => {
    const garbage = protocol === "connect-json" ? Buffer.from('{"pool": ') : Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    expectRefused(await call(protocol, ACQUIRE, [garbage]), Code.InvalidArgument, ErrorReason.MALFORMED_MESSAGE);
    const invalidUtf8 = Uint8Array.from([0x0a, 0x02, 0xc3, 0x28]);
    if (protocol !== "connect-json") expectRefused(await call(protocol, ACQUIRE, [invalidUtf8]), Code.InvalidArgument, ErrorReason.MALFORMED_MESSAGE);
    // grpc-js refuses an oversized message itself, before KeyMesh sees it (README "Request limits").
    if (protocol !== "grpc") {
      const big = encode(protocol, AcquireRequestSchema, { pool: "p", holder: "h".repeat(MAX_MESSAGE_BYTES) });
      expectRefused(await call(protocol, ACQUIRE, [big]), Code.ResourceExhausted, ErrorReason.MESSAGE_TOO_LARGE);
    }
  });

  it("refuses durations outside protobuf's range, negative or zero TTLs, naming the field", async () => {
    const name = uniqueName("dur");
    const pool = (maxTtl: { seconds: bigint; nanos?: number }, json: string) =>
      encode(protocol, CreatePoolRequestSchema, { pool: { name, maxTtl } }, { pool: { name, maxTtl: json } });
    if (protocol !== "connect-json") {
      expectRefused(await call(protocol, CREATE_POOL, [pool({ seconds: 315_576_000_001n }, "")]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "pool.max_ttl");
      expectRefused(await call(protocol, CREATE_POOL, [pool({ seconds: 5n, nanos: 1_000_000_000 }, "")]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "pool.max_ttl");
      expectRefused(await call(protocol, CREATE_POOL, [pool({ seconds: 1n, nanos: -5 }, "")]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "pool.max_ttl");
    }
    expectRefused(await call(protocol, CREATE_POOL, [pool({ seconds: 3_155_760_001n }, "3155760001s")]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "pool.max_ttl");
    const acquire = (leaseTtl: { seconds: bigint; nanos: number }, json: string) =>
      encode(protocol, AcquireRequestSchema, { pool: name, leaseTtl }, { pool: name, leaseTtl: json });
    expectRefused(await call(protocol, ACQUIRE, [acquire({ seconds: 0n, nanos: -1 }, "-0.000000001s")]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "lease_ttl");
    expectRefused(await call(protocol, ACQUIRE, [acquire({ seconds: 0n, nanos: 0 }, "0s")]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "lease_ttl");
  });

  it("refuses NUL and strings over their bound naming the field, and never echoes more than a bounded prefix", async () => {
    expectRefused(await call(protocol, ACQUIRE, [encode(protocol, AcquireRequestSchema, { pool: "p", holder: "h\u0000" })]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "holder");
    const long = "p".repeat(8000);
    const enable = encode(protocol, ENABLE_KEY.input, { pool: long, keyId: "k" });
    expectRefused(await call(protocol, ENABLE_KEY, [enable]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "pool");
    if (protocol === "connect-json") {
      // protobuf-es quotes a value it cannot take; the answer quotes a bounded prefix of it.
      const o = await call(protocol, ACQUIRE, [Buffer.from(JSON.stringify({ pool: "p", [`x${"y".repeat(20_000)}`]: 1 }))]);
      expectRefused(o, Code.InvalidArgument, ErrorReason.MALFORMED_MESSAGE);
    }
  });

  it("ends streams with a shaped error: WatchEvents on an unknown pool, KeepAlive with a negative TTL", async () => {
    expectRefused(await call(protocol, WATCH, [encode(protocol, WATCH.input, { pool: "no-such-pool" })]), Code.NotFound, ErrorReason.POOL_NOT_FOUND);
    const renew = encode(protocol, KeepAliveRequestSchema, { leaseId: "lk1.x.y", ttl: { seconds: -1n } }, { leaseId: "lk1.x.y", ttl: "-1s" });
    expectRefused(await call(protocol, KEEPALIVE, [renew]), Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "ttl");
    expectRefused(await call(protocol, KEEPALIVE, [protocol === "connect-json" ? Buffer.from("[") : Uint8Array.from([0x0a, 0x05])]), Code.InvalidArgument, ErrorReason.MALFORMED_MESSAGE);
  });
});

describe("shared state and connections", () => {
  it("a holder with NUL is refused alone: the grants journaled with it succeed, and nothing fails to reach Postgres", async () => {
    const name = uniqueName("nul");
    await ts.admin.createPool({ pool: { name } });
    await ts.admin.addKey({ pool: name, key: { id: "k", maxConcurrency: 10 }, secret: "sk-nul-0123456789" });
    const results = await Promise.allSettled([
      ts.pool.acquire({ pool: name, holder: "h\u0000" }),
      ...Array.from({ length: 4 }, (_, i) => ts.pool.acquire({ pool: name, holder: `h${i}` })),
    ]);
    expect(ConnectError.from((results[0] as PromiseRejectedResult).reason).code).toBe(Code.InvalidArgument);
    expect(results.slice(1).map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "fulfilled"]);
    expect(ts.logs()).not.toContain("grant journal write failed");
  });

  it("refuses 60,000-character names over h2c without disturbing the ordinary calls on the same connection", async () => {
    const name = uniqueName("shared");
    await ts.admin.createPool({ pool: { name } });
    const json = connectJsonClients(ts.httpUrl);
    const calls: Array<Promise<Outcome>> = [];
    for (let i = 0; i < 200; i++) {
      // Just under this server's 64 KiB message limit: echoed whole, it made a trailer too large for the connection.
      const pool = i % 10 === 0 ? "n".repeat(60_000) : name;
      calls.push(httpCall(viaHttp2(session), "connect-proto", ENABLE_KEY, [toBinary(ENABLE_KEY.input, create(ENABLE_KEY.input, { pool, keyId: "k" }))], CALL));
    }
    const outcomes = await Promise.all(calls);
    expect(outcomes.filter((o, i) => i % 10 !== 0).every((o) => o.code === Code.NotFound)).toBe(true);
    expect(outcomes.filter((o, i) => i % 10 === 0).every((o) => o.code === Code.InvalidArgument && o.detail?.field === "pool")).toBe(true);
    expect((await json.admin.getPool({ name })).pool?.name).toBe(name);
  });

  it("answers an HTTP/1.0 request without Host 400 instead of ending the process", async () => {
    const answer = await new Promise<string>((resolve) => {
      let out = "";
      const socket = net.connect(ts.server.httpPort, "127.0.0.1", () =>
        socket.end("POST /keymesh.v1.KeyPoolService/Acquire HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"),
      );
      socket.on("data", (d: Buffer) => (out += d.toString("latin1")));
      socket.on("close", () => resolve(out));
    });
    expect(answer).toMatch(/^HTTP\/1\.[01] 400/);
    expect((await fetch(`${ts.httpUrl}/healthz`)).status).toBe(200);
  });
});
