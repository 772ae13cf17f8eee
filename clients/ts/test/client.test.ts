import { createServer, type Http2Server, type Http2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { PoolAdminService } from "../src/gen/keymesh/v1/admin_pb.js";
import { createKeyMeshClient } from "../src/index.js";

describe("createKeyMeshClient", () => {
  it("refuses a bearer token over plaintext to a non-loopback address", () => {
    for (const baseUrl of ["http://10.0.0.7:50051", "http://keymesh.internal:50051"]) {
      expect(() => createKeyMeshClient({ baseUrl, token: "t" })).toThrow(/loopback/);
    }
    for (const baseUrl of ["http://127.0.0.1:50051", "http://localhost:50051", "http://[::1]:50051", "https://keymesh.internal"]) {
      expect(() => createKeyMeshClient({ baseUrl, token: "t" })).not.toThrow();
    }
  });

  it.each(["grpc", "connect"] as const)("sends the bearer token on %s calls", async (transport) => {
    const seen: (string | null)[] = [];
    await withServer(
      (router) =>
        router.rpc(PoolAdminService.method.listPools, (_req, ctx) => {
          seen.push(ctx.requestHeader.get("authorization"));
          return { pools: [] };
        }),
      async (baseUrl) => {
        const client = createKeyMeshClient({ baseUrl, transport, token: "s3cret", defaultTimeoutMs: 2_000 });
        await client.admin.listPools({});
        expect(seen).toEqual(["Bearer s3cret"]);
      },
    );
  });

  it("bounds unary calls by defaultTimeoutMs", async () => {
    await withServer(
      (router) =>
        router.rpc(PoolAdminService.method.listPools, (_req, ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)))),
      async (baseUrl) => {
        const client = createKeyMeshClient({ baseUrl, defaultTimeoutMs: 100 });
        const err = await client.admin.listPools({}).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(ConnectError);
        expect((err as ConnectError).code).toBe(Code.DeadlineExceeded);
      },
    );
  });
});

/** Serves routes on a real HTTP/2 (h2c) listener on 127.0.0.1:0 for the duration of use. */
async function withServer(routes: (router: ConnectRouter) => void, use: (baseUrl: string) => Promise<void>): Promise<void> {
  const server: Http2Server = createServer(connectNodeAdapter({ routes }));
  const sessions = new Set<Http2Session>();
  server.on("session", (s) => sessions.add(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    await use(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    for (const s of sessions) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}
