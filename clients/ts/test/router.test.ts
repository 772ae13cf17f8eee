// Several endpoints over real HTTP/2 (h2c) listeners on 127.0.0.1: failover on UNAVAILABLE, the owner
// header, the KeepAlive stream moving on, a host name's addresses. Behaviour shared by every client is in
// failover-vectors.test.ts; this checks the wiring.
import { createServer, type Http2Server, type Http2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createClient, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { KeyPoolService } from "../src/gen/keymesh/v1/pool_pb.js";
import { createKeyMeshClient } from "../src/index.js";
import { RoutingTransport } from "../src/router.js";
import { FakePool } from "./fake-pool.js";

interface Served {
  url: string;
  hostPort: string;
  calls: string[];
  close(): Promise<void>;
}

const open: Served[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

/** Serves impl on 127.0.0.1:0, recording the methods called; owner, when given, names the owner in every answer. */
async function serve(impl: Partial<ServiceImpl<typeof KeyPoolService>>, owner?: () => string, at = { host: "127.0.0.1", port: 0 }): Promise<Served> {
  const calls: string[] = [];
  const recorded = Object.fromEntries(
    Object.entries(impl).map(([name, fn]) => [
      name,
      (req: unknown, ctx: { responseHeader: Headers }) => {
        calls.push(name);
        if (owner) ctx.responseHeader.set("keymesh-owner", owner());
        return (fn as (r: unknown, c: unknown) => unknown)(req, ctx);
      },
    ]),
  ) as unknown as ServiceImpl<typeof KeyPoolService>;
  const server: Http2Server = createServer(connectNodeAdapter({ routes: (router) => router.service(KeyPoolService, recorded) }));
  const sessions = new Set<Http2Session>();
  server.on("session", (s) => sessions.add(s));
  await new Promise<void>((resolve) => server.listen(at.port, at.host, resolve));
  const hostPort = `${at.host}:${(server.address() as AddressInfo).port}`;
  let closed: Promise<void> | undefined;
  const served: Served = {
    url: `http://${hostPort}`,
    hostPort,
    calls,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      })),
  };
  open.push(served);
  return served;
}

const unavailable = (): Partial<ServiceImpl<typeof KeyPoolService>> => ({
  acquire: () => {
    throw new ConnectError("pool not served", Code.Unavailable);
  },
});

describe("several endpoints", () => {
  it("moves to the next endpoint on UNAVAILABLE and stays there", async () => {
    const a = await serve(unavailable());
    const b = await serve(new FakePool(["k1"]).impl());
    const client = createKeyMeshClient({ endpoints: [a.url, b.url] });
    await client.withKey("p", async (lease) => expect(lease.keyId).toBe("k1"));
    await client.withKey("p", async () => undefined);
    expect(a.calls).toEqual(["acquire"]);
    expect(b.calls).toEqual(["acquire", "release", "acquire", "release"]);
  });

  it("moves on from an endpoint that refuses connections", async () => {
    const dead = await serve(unavailable());
    await dead.close();
    const b = await serve(new FakePool(["k1"]).impl());
    const client = createKeyMeshClient({ endpoints: [dead.url, b.url] });
    await client.withKey("p", async () => undefined);
    expect(b.calls).toEqual(["acquire", "release"]);
  });

  it("follows the owner header: the pool's next calls, the lease's Release included, go straight to the owner", async () => {
    const owner = await serve(new FakePool(["k1"]).impl());
    const a = await serve(new FakePool(["k1"]).impl(), () => owner.hostPort);
    const client = createKeyMeshClient({ endpoints: [a.url] });
    await client.withKey("p", async () => undefined);
    await client.withKey("p", async () => undefined);
    expect(a.calls).toEqual(["acquire"]);
    expect(owner.calls).toEqual(["release", "acquire", "release"]);
    // Another pool is not routed by p's owner.
    await client.pool.acquire({ pool: "q" });
    expect(a.calls).toEqual(["acquire", "acquire"]);
  });

  it("ignores the owner header over the Connect transport (it names a gRPC listener)", async () => {
    const owner = await serve(new FakePool(["k1"]).impl());
    const a = await serve(new FakePool(["k1"]).impl(), () => owner.hostPort);
    const client = createKeyMeshClient({ endpoints: [a.url], transport: "connect" });
    await client.withKey("p", async () => undefined);
    expect(a.calls).toEqual(["acquire", "release"]);
    expect(owner.calls).toEqual([]);
  });

  it("moves the KeepAlive stream to the next endpoint when its endpoint goes away, re-sending the lease", async () => {
    const fakeA = new FakePool(["k1"]);
    const fakeB = new FakePool(["k1"]);
    const a = await serve(fakeA.impl());
    const b = await serve(fakeB.impl());
    const client = createKeyMeshClient({ endpoints: [a.url, b.url] });
    await client.withKey("p", async (lease) => {
      await fakeA.awaitRenewals(lease.leaseId, 1);
      await a.close();
      await fakeB.awaitRenewals(lease.leaseId, 2);
      expect(lease.signal.aborted).toBe(false);
    });
    expect(b.calls.filter((c) => c !== "keepAlive")).toEqual(["release"]);
  });

  it("takes a host name for every address it resolves to", async () => {
    const b = await serve(new FakePool(["k1"]).impl());
    const client = createKeyMeshClient({ baseUrl: b.url.replace("127.0.0.1", "localhost") });
    await client.withKey("p", async (lease) => expect(lease.keyId).toBe("k1"));
    expect(b.calls).toEqual(["acquire", "release"]);
  });

  it("refuses to follow an owner over plaintext with a token unless it is a loopback address", async () => {
    const a = await serve(new FakePool(["k1"]).impl(), () => "10.255.255.1:50051");
    const client = createKeyMeshClient({ endpoints: [a.url], token: "t" });
    await client.withKey("p", async () => undefined);
    await client.withKey("p", async () => undefined);
    expect(a.calls).toEqual(["acquire", "release", "acquire", "release"]);
  });

  it("resolves a host name again when every address it had is unavailable", async () => {
    const a = await serve(new FakePool(["k1"]).impl());
    const port = Number(a.hostPort.split(":")[1]);
    // Another loopback address, same port: the name's new address after a move.
    const b = await serve(new FakePool(["k1"]).impl(), undefined, { host: "127.0.0.2", port });
    let addresses = ["127.0.0.1"];
    const router = new RoutingTransport({
      seeds: [new URL(`http://keymesh.test:${port}`)],
      connect: (url, pinned) => createGrpcTransport({ baseUrl: `http://${pinned?.address ?? url.hostname}:${port}` }),
      mayFollow: () => true,
      defaultTimeoutMs: 5_000,
      lookup: async () => addresses.map((address) => ({ address, family: 4 })),
    });
    const pool = createClient(KeyPoolService, router);
    await pool.acquire({ pool: "p" });
    addresses = ["127.0.0.2"];
    await a.close();
    await pool.acquire({ pool: "p" });
    expect(a.calls).toEqual(["acquire"]);
    expect(b.calls).toEqual(["acquire"]);
  });
});
