// Wiring: database, engine, services and both listeners, started in order and stopped in reverse.
// Nothing here listens until start() is called, and ports 0 pick free ports (tests use that).
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import * as grpc from "@grpc/grpc-js";
import { CONFIG_FILE_ACTOR } from "../domain/audit.js";
import { PoolEngine } from "../domain/engine.js";
import { LeaseTokens } from "../domain/lease-token.js";
import { systemClock } from "../domain/system-clock.js";
import type { DomainEvent } from "../domain/types.js";
import { file_keymesh_v1_admin, PoolAdminService } from "../gen/keymesh/v1/admin_pb.js";
import { file_keymesh_v1_pool, KeyPoolService } from "../gen/keymesh/v1/pool_pb.js";
import { checkAuthBinding, createAuthorizer, loadTlsFiles, parseAuthTokensEnv } from "../ops/auth.js";
import { applyConfig, configReloader, loadConfigFile, type BootstrapApi, type DeclarativeConfig, type ReloadResult } from "../ops/config.js";
import { scrubSecrets, type Logger } from "../ops/logger.js";
import { createMetrics, type Metrics } from "../ops/metrics.js";
import { settlesWithin, STOP_BOUNDS } from "../ops/stop.js";
import { PoolAdminServiceImpl } from "../rpc/admin-service.js";
import { createErrorMapper } from "../rpc/errors.js";
import { EventHub } from "../rpc/event-hub.js";
import { createGuard } from "../rpc/guard.js";
import { checkRequest } from "../rpc/limits.js";
import { KeyPoolServiceImpl, poolWireCodecs } from "../rpc/pool-service.js";
import { Admin } from "../service/admin.js";
import { Lending } from "../service/lending.js";
import { AuditRetention, PostgresAuditTrail } from "../store/audit-trail.js";
import { Availability } from "../store/availability.js";
import { PostgresConfigStore } from "../store/config-store.js";
import { openDatabase, type Database } from "../store/database.js";
import { PostgresGrantJournal } from "../store/journal.js";
import { migrate } from "../store/migrate.js";
import { beginEpoch, compactLeases } from "../store/restore.js";
import { loadSecretBox } from "../store/secrets.js";
import { PostgresSnapshotStore } from "../store/snapshot-writer.js";
import { Snapshotter } from "../store/snapshotter.js";
import { Listeners, serviceEntry, type BoundPorts } from "../transport/listeners.js";
import { Router } from "../rpc/routing.js";
import { Replicas, type OwnershipChange } from "../service/replicas.js";
import type { Fence } from "../store/fence.js";
import { PostgresOwnershipStore } from "../store/ownership.js";
import { randomUUID } from "node:crypto";
import { loadStaticSite } from "../transport/static-site.js";
import type { ServerConfig } from "./config.js";

/** The embedded database's process owns its pools for good: its claims last a century. */
const SOLE_OWNERSHIP_TTL_MS = 100 * 365 * 24 * 3600 * 1000;

/** The ownership changes that are events; stopping and resuming serving are metrics and log lines only. */
const ownershipEvents: Partial<Record<OwnershipChange, DomainEvent["type"]>> = {
  claimed: "pool_claimed",
  took_over: "pool_claimed",
  handed_over: "pool_handed_over",
  lost: "pool_lost",
};

/** Ends between two vacuums of the embedded database's leases table: it stays within a few MB of its live rows. */
const EMBEDDED_VACUUM_EVERY = 10_000;

// The same relative path from server/src/app and server/dist/app, in a checkout and in an installed package.
const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** How often an idle server checks that its database answers (keymesh_database_up, /readyz). */
const DATABASE_HEARTBEAT_MS = 10_000;

export interface RunningServer extends BoundPorts {
  engine: PoolEngine;
  metrics: Metrics;
  /** Graceful stop: listeners, open streams, final snapshot, database. */
  shutdown(): Promise<void>;
  /** Reads KEYMESH_CONFIG again and applies it (SIGHUP); a bad file changes nothing. Resolves to what changed. */
  reload(): Promise<ReloadResult>;
}

export interface StartHooks {
  /** Called with the grpc-js server before it binds (the benchmark mounts its echo baseline here). */
  beforeListen?(grpcServer: grpc.Server): void;
}

export async function startServer(
  cfg: ServerConfig,
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
  hooks: StartHooks = {},
): Promise<RunningServer> {
  // grpc-js writes its own diagnostics to stderr; they belong in the structured log, at debug.
  grpc.setLogger({ error: (...args: unknown[]) => log.debug({ grpc: args.map(String).join(" ") }, "grpc-js") } as Partial<Console>);
  const declared: DeclarativeConfig | undefined = cfg.configFile ? loadConfigFile(cfg.configFile, env) : undefined;
  const authorizer = createAuthorizer([...parseAuthTokensEnv(env.KEYMESH_AUTH_TOKENS), ...(declared?.tokens ?? [])]);
  checkAuthBinding(cfg.host, authorizer.enabled);
  if (!authorizer.enabled) log.warn({ host: cfg.host }, "auth is off: no tokens configured; serving on loopback only");
  const tls = loadTlsFiles(env);

  const db: Database = await openDatabase({ databaseUrl: cfg.databaseUrl, dataDir: cfg.dataDir, log, statementTimeoutMs: cfg.statementTimeoutMs });
  try {
    return await startOnDatabase(cfg, log, env, db, { declared, authorizer, tls, hooks });
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
}

async function startOnDatabase(
  cfg: ServerConfig,
  log: Logger,
  env: NodeJS.ProcessEnv,
  db: Database,
  opts: { declared?: DeclarativeConfig; authorizer: ReturnType<typeof createAuthorizer>; tls?: { cert: Buffer; key: Buffer }; hooks: StartHooks },
): Promise<RunningServer> {
  await migrate(db.sql, { log });
  const box = await loadSecretBox({ env, dataDir: cfg.dataDir, embedded: db.embedded, log });
  const availability = new Availability(db.sql, log);
  const epoch = await beginEpoch(db.sql, availability, systemClock.now());

  const metrics = createMetrics({ maxKeysPerPool: cfg.metricsMaxKeys, version: PACKAGE_VERSION });
  const events = new EventHub();
  const leaseSecret = box.deriveKey("keymesh lease tokens v1");
  const onEvent = (e: DomainEvent) => {
    events.publish(e);
    lending.onEngineEvent(e);
    if (e.type === "lease_expired") metrics.countLeaseExpiries(e.pool);
    if (e.type === "lease_ended" && e.outcome) metrics.countOutcome(e.pool, e.keyId!, e.outcome);
    if (e.type === "key_auto_disabled" || e.type === "circuit_opened" || e.type === "lease_expired") {
      log.info({ event: e.type, pool: e.pool, keyId: e.keyId, reason: e.reason }, e.type.replace("_", " "));
    }
  };
  // Which pools this process serves. The engine asks it before acting on a deadline, the store fences every write with it.
  // The embedded database is one process by construction (its data directory is locked): it owns every pool for good.
  const serves = (pool: string) => replicas.serves(pool);
  const engine = new PoolEngine({
    clock: systemClock,
    leaseSecret,
    epoch,
    onEvent,
    serves,
    onLeaseEnded: (leaseId, pool, e, seq) => lending.leaseEnded(leaseId, pool, e, seq),
  });
  const replicaId = randomUUID();
  const ownershipTtlMs = db.embedded ? SOLE_OWNERSHIP_TTL_MS : cfg.ownershipTtlMs;
  const replicas: Replicas = new Replicas({
    id: replicaId,
    store: new PostgresOwnershipStore(db.sql, box, availability),
    engine,
    // A hand-over writes the pools out, their ends included, before it resigns: the next owner loads no ended lease.
    flush: async () => {
      await snapshotter.flush();
      await journal.endDurable();
    },
    loaded: () => snapshots.reconcileNext(),
    log,
    sole: db.embedded,
    ttlMs: ownershipTtlMs,
    renewEveryMs: Math.max(100, Math.floor(ownershipTtlMs / 5)),
    onChange: (pool, change, term) => {
      metrics.countOwnershipChange(change);
      const type = ownershipEvents[change];
      if (type) events.publish({ type, time: Date.now(), pool, replica: replicas.address, term });
      if (change !== "resumed" && change !== "claimed") log.info({ pool, term, change }, `pool ${change.replace("_", " ")}`);
    },
  });
  const fence: Fence = {
    get owner() {
      return replicas.owner;
    },
    termOf: (pool) => replicas.termOf(pool),
    held: () => replicas.held(),
    lost: (pools) => {
      metrics.countFenceRejection();
      replicas.lost(pools);
    },
  };
  const config = new PostgresConfigStore(db.sql, box, availability, systemClock, fence, ownershipTtlMs);
  await config.verifyMasterKey();
  // PGlite runs no autovacuum: the journal vacuums the leases table itself, and a start compacts it first.
  if (db.embedded) await compactLeases(db.sql, availability);
  const journal = new PostgresGrantJournal(db.sql, availability, log, {
    epoch,
    isLive: (leaseId) => engine.isLive(leaseId),
    fence,
    lendFromMemory: db.embedded,
    vacuumEvery: db.embedded ? EMBEDDED_VACUUM_EVERY : undefined,
  });
  // PGlite runs on the event loop, so each snapshot statement there is a stall: keep them small.
  const snapshots = new PostgresSnapshotStore(db.sql, availability, journal, fence, { snapshotChunk: db.embedded ? 250 : 2000 });
  const lending = new Lending({ engine, journal, config, observer: metrics, log });
  const audit = new PostgresAuditTrail(db.sql, availability);
  const retention = new AuditRetention({ trail: audit, retentionMs: cfg.auditRetentionMs, clock: systemClock, log });
  const admin = new Admin({
    engine,
    store: config,
    audit,
    now: Date.now,
    replica: `${hostname()}:${process.pid}`,
    log,
    endsDurable: () => lending.endsDurable(),
    claims: { now: () => replicas.now(), created: (p, t, at) => replicas.created(p, t, at), deleted: (p) => replicas.deleted(p) },
    onRecorded: (entry) => events.publish({ type: "admin_change", pool: entry.pool, entry }),
  });

  // With several replicas each applies the config file to the pools it holds; a pool another one holds is left to it.
  const held = (pool: string, change: () => Promise<unknown>): Promise<unknown> => {
    if (replicas.serves(pool) || !replicas.knows(pool)) return change();
    log.info({ pool }, "config file: pool held by another replica; its changes are applied there");
    return Promise.resolve();
  };
  const by = CONFIG_FILE_ACTOR;
  const configApi: BootstrapApi = {
    createPool: (p) => held(p.name, () => admin.createPool(by, p)),
    updatePool: (p) => held(p.name, () => admin.updatePool(by, p)),
    addKey: (k) => held(k.pool, () => admin.addKey(by, k)),
    updateKey: (k) => held(k.pool, () => admin.updateKey(by, { ...k, id: k.id! })),
    enableKey: (pool, id) => held(pool, () => admin.enableKey(by, pool, id)),
    disableKey: (pool, id, reason) => held(pool, () => admin.disableKey(by, pool, id, false, reason)),
    removeKey: (pool, id) => held(pool, () => admin.removeKey(by, pool, id, false)),
  };
  const currentConfig = () => ({ pools: engine.listPools(), keys: engine.listPools().flatMap((p) => engine.listKeys(p.name).map((k) => k.config)) });

  const tokens = new LeaseTokens(leaseSecret);
  const leasePool = (leaseId: string) => {
    try {
      return tokens.verify(leaseId)?.pool;
    } catch {
      return undefined;
    }
  };
  const declared = configReloader({ file: cfg.configFile, host: cfg.host, env, authorizer: opts.authorizer, api: configApi, current: currentConfig, log });
  const guard = createGuard(declared.authorizer, leasePool);
  const router = new Router({ placement: { get address() { return replicas.address; }, serves, ownerOf: (p) => replicas.ownerOf(p), knows: (p) => replicas.knows(p), locate: () => replicas.locate(), peers: () => replicas.peers() }, leasePool, onForward: (m) => metrics.countForwarded(m) });
  const services = [
    serviceEntry(KeyPoolService, router.wrap(KeyPoolService, new KeyPoolServiceImpl({ lending, guard, scrub: scrubSecrets })), poolWireCodecs),
    serviceEntry(PoolAdminService, router.wrap(PoolAdminService, new PoolAdminServiceImpl({ engine, admin, audit, events, guard, now: Date.now, listPools: db.embedded ? async () => engine.listPools() : () => config.listPools(), replicas }))),
  ];

  const snapshotter = new Snapshotter({
    store: snapshots,
    source: engine,
    intervalMs: cfg.snapshotIntervalMs,
    log,
    onSnapshot: (durationMs: number) => metrics.observeSnapshot(durationMs),
    onFailure: () => metrics.countSnapshotFailure(),
  });
  metrics.setSource({
    pools: () => engine.listPools().map((p) => p.name),
    poolStats: (pool) => {
      try {
        return engine.stats(pool);
      } catch {
        return undefined;
      }
    },
    unwrittenSince: () => snapshotter.unwrittenSince,
  });
  metrics.setDatabaseUp(true);
  availability.onAvailability((up) => metrics.setDatabaseUp(up));

  let ready = false;
  const listeners = new Listeners({
    services,
    files: [file_keymesh_v1_pool, file_keymesh_v1_admin],
    mapError: createErrorMapper((err) => log.error({ err }, "unexpected error in a handler")),
    checkRequest,
    observeRpc: (listener, method, code, durationMs) => metrics.observeRpc(listener, method.parent.typeName, method.name, code, durationMs),
    maxMessageBytes: cfg.maxMessageBytes,
    tls: opts.tls,
    healthz: () => ({ status: 200, body: "ok\n" }),
    readyz: async () => {
      if (!ready) return { status: 503, body: "starting\n" };
      if (!availability.up) return { status: 503, body: "database unreachable; lending from memory\n" };
      return { status: 200, body: "ready\n" };
    },
    metrics: async () => ({ contentType: metrics.contentType, body: await metrics.metricsText() }),
    site: loadStaticSite(),
  });
  opts.hooks.beforeListen?.(listeners.grpc);
  const ports = await listeners.listen(cfg.host, cfg.grpcPort, cfg.httpPort);
  try {
    await replicas.start(cfg.advertiseAddress ?? `${cfg.host}:${ports.grpcPort}`);
  } catch (e) {
    await listeners.shutdown(0);
    throw e;
  }
  log.info({ epoch, replica: replicaId, address: replicas.address, pools: engine.listPools().length }, "state loaded");
  if (opts.declared) await applyConfig(opts.declared, currentConfig(), configApi, log);
  snapshotter.start();
  retention.start();
  availability.startHeartbeat(DATABASE_HEARTBEAT_MS);
  availability.onAvailability((up) => listeners.setDatabaseReachable(up));
  listeners.setServing(true);
  ready = true;
  log.info({ host: cfg.host, grpcPort: ports.grpcPort, httpPort: ports.httpPort, database: db.embedded ? "embedded" : "postgres" }, "listening");

  let stopping: Promise<void> | undefined;
  return {
    ...ports,
    engine,
    metrics,
    reload: declared.reload,
    shutdown: () =>
      (stopping ??= (async () => {
        ready = false;
        events.closeAll();
        await listeners.shutdown(STOP_BOUNDS.callsMs);
        router.close();
        await retention.stop();
        if (!(await settlesWithin(snapshotter.stop(), STOP_BOUNDS.snapshotMs))) {
          log.error({ boundMs: STOP_BOUNDS.snapshotMs, pendingGrants: journal.pending }, "final snapshot not written in time: runtime state since the last snapshot is lost");
        }
        engine.close();
        const closing = (async () => {
          await journal.close();
          await replicas.stop();
          availability.close();
          await db.close();
        })().catch((err: unknown) => log.warn({ err: (err as Error).message }, "database close failed"));
        // The embedded database closes its files here, so it is never cut off; a remote one may hang after an outage.
        if (db.embedded) await closing;
        else if (!(await settlesWithin(closing, STOP_BOUNDS.closeMs))) {
          log.warn({ boundMs: STOP_BOUNDS.closeMs, pendingGrants: journal.pending }, "database connections not closed in time: exiting without them");
        }
        log.info({}, "stopped");
      })()),
  };
}
