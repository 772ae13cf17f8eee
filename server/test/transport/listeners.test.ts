// Both listeners with a stub service: grpc.health.v1 statuses, and HTTP/2 keepalive pings that drop a
// peer which stops answering while leaving one that answers alone.
import * as http2 from "node:http2";
import * as net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { file_keymesh_v1_pool, KeyPoolService } from "../../src/gen/keymesh/v1/pool_pb.js";
import { DATABASE_HEALTH_SERVICE, Listeners, type Keepalive } from "../../src/transport/listeners.js";
import { healthStatus } from "../../../test/support/health.js";

const stub = Object.fromEntries(
  KeyPoolService.methods.map((m) => [
    m.localName,
    () => {
      throw new ConnectError("not served here", Code.Unimplemented);
    },
  ]),
) as unknown as ServiceImpl<DescService>;

let open: Listeners | undefined;

async function listen(keepalive?: Keepalive) {
  const listeners = new Listeners({
    services: [{ service: KeyPoolService, impl: stub }],
    files: [file_keymesh_v1_pool],
    mapError: (e) => ConnectError.from(e),
    checkRequest: () => {},
    maxMessageBytes: 64 * 1024,
    keepalive,
    healthz: () => ({ status: 200, body: "ok\n" }),
    readyz: async () => ({ status: 200, body: "ready\n" }),
    metrics: async () => ({ contentType: "text/plain", body: "" }),
    site: { get: () => undefined },
  });
  open = listeners;
  return { listeners, ...(await listeners.listen("127.0.0.1", 0, 0)) };
}

afterEach(async () => {
  await open?.shutdown(100);
  open = undefined;
});

describe("grpc.health.v1", () => {
  const names = ["", KeyPoolService.typeName, DATABASE_HEALTH_SERVICE];

  it("serves the server and its services while it lends, and the database name only while the database answers", async () => {
    const { listeners, grpcPort } = await listen();
    expect(await healthStatus(`127.0.0.1:${grpcPort}`, ...names)).toEqual(["NOT_SERVING", "NOT_SERVING", "NOT_SERVING"]);
    listeners.setServing(true);
    expect(await healthStatus(`127.0.0.1:${grpcPort}`, ...names)).toEqual(["SERVING", "SERVING", "SERVING"]);
    listeners.setDatabaseReachable(false);
    expect(await healthStatus(`127.0.0.1:${grpcPort}`, ...names)).toEqual(["SERVING", "SERVING", "NOT_SERVING"]);
    listeners.setDatabaseReachable(true);
    expect(await healthStatus(`127.0.0.1:${grpcPort}`, ...names)).toEqual(["SERVING", "SERVING", "SERVING"]);
    listeners.setServing(false);
    expect(await healthStatus(`127.0.0.1:${grpcPort}`, ...names)).toEqual(["NOT_SERVING", "NOT_SERVING", "NOT_SERVING"]);
  });
});

/** Opens an HTTP/2 connection that sends the preface and its SETTINGS, then never answers anything; resolves when the server closes it. */
function frozenPeer(port: number): { closed: Promise<number> } {
  const started = Date.now();
  const socket = net.connect(port, "127.0.0.1", () => {
    // Preface, then an empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
    socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
  });
  // Whatever the server sends (its SETTINGS, then PINGs) is read and never acknowledged.
  socket.on("data", () => undefined);
  socket.on("error", () => undefined);
  return { closed: new Promise((resolve) => socket.once("close", () => resolve(Date.now() - started))) };
}

describe("HTTP/2 keepalive", () => {
  const keepalive = { intervalMs: 200, timeoutMs: 300 };

  it("closes a connection whose peer stops answering pings, on both listeners", async () => {
    const { grpcPort, httpPort } = await listen(keepalive);
    const [grpcClosed, httpClosed] = await Promise.all([frozenPeer(grpcPort).closed, frozenPeer(httpPort).closed]);
    // One interval, then the timeout: well within ten of each, however loaded the machine.
    for (const ms of [grpcClosed, httpClosed]) expect(ms).toBeLessThan(10 * (keepalive.intervalMs + keepalive.timeoutMs));
  });

  it("keeps a connection whose peer answers, across many pings", async () => {
    const { httpPort } = await listen(keepalive);
    const session = http2.connect(`http://127.0.0.1:${httpPort}`);
    let closed = false;
    session.on("close", () => (closed = true));
    let pings = 0;
    session.on("ping", () => pings++);
    const deadline = Date.now() + 20_000;
    while (pings < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(pings).toBeGreaterThanOrEqual(5);
    expect(closed).toBe(false);
    const res = await new Promise<number>((resolve, reject) => {
      const req = session.request({ ":path": "/healthz" });
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", reject);
      req.end();
    });
    expect(res).toBe(200);
    session.close();
  });
});
