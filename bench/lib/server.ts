// A KeyMesh server for the bench: the real startServer on loopback port 0, a database of its own (a
// fresh one on the bench Postgres, or the embedded database in a temporary directory), and on the same
// grpc-js server the bare echo method (the transport ceiling) and the lease-cycle floor.
import { randomBytes } from "node:crypto";
import { scratchDatabase } from "../../test/support/database.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { startServer, type RunningServer } from "../../server/src/app/app.js";
import { configFromEnv } from "../../server/src/app/config.js";
import { createLogger } from "../../server/src/ops/logger.js";
import { PoolAdminService, Strategy } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { addServiceToGrpc } from "../../server/src/transport/grpc-adapter.js";
import { poolWireCodecs } from "../../server/src/rpc/pool-service.js";
import type { AcquireReply } from "../../server/src/rpc/acquire-wire.js";
import { createErrorMapper } from "../../server/src/rpc/errors.js";
import { dur, ts } from "../../server/src/rpc/convert.js";
import { LeaseTokens } from "../../server/src/domain/lease-token.js";

const ECHO_PATH = "/keymesh.bench.v1.Echo/Echo";

const identity = (b: Buffer): Buffer => b;

/** The stack's own ceiling: a unary method that answers its request bytes, with no decoding at all. */
function mountEcho(server: grpc.Server): void {
  server.addService(
    {
      Echo: {
        path: ECHO_PATH,
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
        originalName: "Echo",
      },
    },
    {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
    },
  );
}

/**
 * KeyPoolService's Acquire and Release under another name, with the same messages, hand-written codecs and
 * adapter as the real ones, answering a fixed lease: what the lease cycle costs on this transport when
 * KeyMesh's own work (engine, lease token, journal, metrics) costs nothing.
 */
function mountFloor(server: grpc.Server): void {
  const now = Date.now();
  const reply: AcquireReply = {
    leaseId: new LeaseTokens(randomBytes(32)).issue({ pool: "bench", keyId: "b0", epoch: 1, seq: 1, issuedAt: now, ttlMs: 60_000 }),
    key: "sk-bench-b0-0123456789",
    keyId: "b0",
    keyLabel: "",
    keyMetadata: {},
    expiresAt: ts(now + 60_000),
    ttl: dur(60_000),
    renewInterval: dur(20_000),
    pool: "bench",
  };
  const service = {
    ...KeyPoolService,
    typeName: "keymesh.bench.v1.LeaseFloor",
    methods: KeyPoolService.methods.filter((m) => m.localName === "acquire" || m.localName === "release"),
  };
  const impl = { acquire: () => reply, release: () => ({}) };
  addServiceToGrpc(server, service as unknown as typeof KeyPoolService, impl as never, {
    mapError: createErrorMapper(() => undefined),
    shutdown: new AbortController().signal,
    codecs: poolWireCodecs,
  });
}

export interface BenchServer {
  server: RunningServer;
  addr: string;
  database: "postgres" | "embedded";
  admin: Client<typeof PoolAdminService>;
  stop(): Promise<void>;
}

export async function startBenchServer(opts: { postgresUrl?: string; snapshotInterval?: string }): Promise<BenchServer> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keymesh-bench-"));
  const db = opts.postgresUrl ? await scratchDatabase(opts.postgresUrl, "keymesh_bench") : undefined;
  const env: NodeJS.ProcessEnv = {
    KEYMESH_HOST: "127.0.0.1",
    KEYMESH_GRPC_PORT: "0",
    KEYMESH_HTTP_PORT: "0",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_MASTER_KEY: randomBytes(32).toString("base64"),
    KEYMESH_SNAPSHOT_INTERVAL: opts.snapshotInterval ?? "1s",
    KEYMESH_LOG_LEVEL: "warn",
    ...(db ? { DATABASE_URL: db.url } : {}),
  };
  const log = createLogger("warn");
  const server = await startServer(configFromEnv(env), log, env, {
    beforeListen: (grpcServer) => {
      mountEcho(grpcServer);
      mountFloor(grpcServer);
    },
  });
  const addr = `127.0.0.1:${server.grpcPort}`;
  const admin = createClient(PoolAdminService, createGrpcTransport({ baseUrl: `http://${addr}` }));
  return {
    server,
    addr,
    database: db ? "postgres" : "embedded",
    admin,
    async stop() {
      await server.shutdown();
      await db?.drop().catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

const seconds = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });

export interface PoolSpec {
  name: string;
  keys: Array<{ id: string; secret: string; maxConcurrency?: number }>;
  strategy?: Strategy;
  defaultCooldownMs?: number;
}

/** `n` keys with ids `${prefix}0`… and a `max_concurrency` (0: unlimited). */
export const benchKeys = (n: number, prefix: string, maxConcurrency = 0) =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, secret: `sk-bench-${prefix}${i}-0123456789`, maxConcurrency }));

export async function createPool(admin: Client<typeof PoolAdminService>, spec: PoolSpec): Promise<void> {
  await admin.createPool({
    pool: {
      name: spec.name,
      strategy: spec.strategy ?? Strategy.ROUND_ROBIN,
      ...(spec.defaultCooldownMs ? { defaultCooldown: seconds(spec.defaultCooldownMs) } : {}),
    },
  });
  for (const k of spec.keys) {
    await admin.addKey({ pool: spec.name, key: { id: k.id, label: k.id, maxConcurrency: k.maxConcurrency ?? 0 }, secret: k.secret });
  }
}
