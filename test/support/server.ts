// A real KeyMesh server for integration tests: port 0 on loopback, a fresh database of its own on the
// test Postgres (DATABASE_URL, started by scripts/test.sh) or, without one, the embedded database in a
// temporary directory.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { scratchDatabase } from "./database.js";
import { Writable } from "node:stream";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { startServer, type RunningServer } from "../../server/src/app/app.js";
import { configFromEnv } from "../../server/src/app/config.js";
import { createLogger } from "../../server/src/ops/logger.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";

export interface TestServer {
  server: RunningServer;
  grpcAddr: string;
  httpUrl: string;
  /** Connect clients over native gRPC (the grpc-js listener). */
  pool: Client<typeof KeyPoolService>;
  admin: Client<typeof PoolAdminService>;
  /** Everything the server logged, for redaction checks. */
  logs: () => string;
  databaseUrl?: string;
  dataDir: string;
  env: NodeJS.ProcessEnv;
  /** Graceful shutdown; the data directory is removed unless kept (for a restart on it). */
  stop(opts?: { keepData?: boolean }): Promise<void>;
}

/** A database of its own on `base` (default: the test Postgres); undefined when tests run without one. */
export async function freshDatabase(base = process.env.DATABASE_URL): Promise<string | undefined> {
  return base ? (await scratchDatabase(base, "keymesh_it")).url : undefined;
}

export async function startTestServer(
  overrides: NodeJS.ProcessEnv = {},
  reuse?: { databaseUrl?: string; dataDir: string },
): Promise<TestServer> {
  const dataDir = reuse?.dataDir ?? (await mkdtemp(path.join(tmpdir(), "keymesh-it-")));
  const databaseUrl = reuse ? reuse.databaseUrl : await freshDatabase();
  const env: NodeJS.ProcessEnv = {
    KEYMESH_HOST: "127.0.0.1",
    KEYMESH_GRPC_PORT: "0",
    KEYMESH_HTTP_PORT: "0",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
    KEYMESH_SNAPSHOT_INTERVAL: "100ms",
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    ...overrides,
  };
  let captured = "";
  const sink = new Writable({
    write(chunk, _enc, cb) {
      captured += chunk.toString();
      cb();
    },
  });
  const log = createLogger(env.KEYMESH_LOG_LEVEL ?? "info", sink);
  const server = await startServer(configFromEnv(env), log, env);
  const grpcAddr = `127.0.0.1:${server.grpcPort}`;
  const httpUrl = `http://127.0.0.1:${server.httpPort}`;
  const transport = createGrpcTransport({ baseUrl: `http://${grpcAddr}` });
  return {
    server,
    grpcAddr,
    httpUrl,
    pool: createClient(KeyPoolService, transport),
    admin: createClient(PoolAdminService, transport),
    logs: () => captured,
    databaseUrl,
    dataDir,
    env,
    async stop(opts = {}) {
      await server.shutdown();
      if (!reuse && !opts.keepData) await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

/** A Connect-protocol (JSON) client against the HTTP listener. */
export function connectJsonClients(httpUrl: string) {
  const transport = createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1", useBinaryFormat: false });
  return { pool: createClient(KeyPoolService, transport), admin: createClient(PoolAdminService, transport) };
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}
