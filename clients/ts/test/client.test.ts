import { createServer, type Http2Session } from "node:http2";
import type { AddressInfo } from "node:net";
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
    const handler = connectNodeAdapter({
      routes: (router) =>
        router.rpc(PoolAdminService.method.listPools, (_req, ctx) => {
          seen.push(ctx.requestHeader.get("authorization"));
          return { pools: [] };
        }),
    });
    const server = createServer(handler);
    const sessions = new Set<Http2Session>();
    server.on("session", (s) => sessions.add(s));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const client = createKeyMeshClient({ baseUrl: `http://127.0.0.1:${port}`, transport, token: "s3cret", defaultTimeoutMs: 2_000 });
      await client.admin.listPools({});
      expect(seen).toEqual(["Bearer s3cret"]);
    } finally {
      for (const s of sessions) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
