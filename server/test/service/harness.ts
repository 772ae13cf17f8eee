// The services in memory: the real engine on a fake clock, Lending and Admin over a recording journal and
// config store, and the RPC classes on connect's router transport (errors mapped as the listeners map them).
import { createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { PoolEngine } from "../../src/domain/engine.js";
import type { KeyConfig, PoolConfig } from "../../src/domain/types.js";
import { PoolAdminService } from "../../src/gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "../../src/gen/keymesh/v1/pool_pb.js";
import type { AuditChange, AuditEntry } from "../../src/domain/audit.js";
import { createAuthorizer, type Authorizer } from "../../src/ops/auth.js";
import { scrubSecrets } from "../../src/ops/logger.js";
import { PoolAdminServiceImpl } from "../../src/rpc/admin-service.js";
import { createErrorMapper } from "../../src/rpc/errors.js";
import { EventHub } from "../../src/rpc/event-hub.js";
import { createGuard } from "../../src/rpc/guard.js";
import { KeyPoolServiceImpl } from "../../src/rpc/pool-service.js";
import { Admin } from "../../src/service/admin.js";
import { Lending } from "../../src/service/lending.js";
import type { AuditQuery, AuditTrail } from "../../src/store/audit-trail.js";
import type { ConfigStore } from "../../src/store/config-store.js";
import type { Queryable } from "../../src/store/sql/queryable.js";
import type { GrantJournal, JournaledGrant } from "../../src/store/journal.js";
import { FakeClock } from "../fake-clock.js";

/** Records each grant and end; a durable grant resolves when the test says so (all at once by default), or fails with `refuse`. */
class FakeJournal implements GrantJournal {
  readonly durable: JournaledGrant[] = [];
  readonly behind: JournaledGrant[] = [];
  readonly ends: Array<{ leaseId: string; pool: string; epoch: number; seq: number }> = [];
  /** While true, record() stays pending until release(). */
  hold = false;
  /** The error the next durable grant fails with. */
  refuse: Error | undefined;
  #held: Array<() => void> = [];

  record(grant: JournaledGrant): Promise<void> {
    this.durable.push(grant);
    const refused = this.refuse;
    this.refuse = undefined;
    if (refused) return Promise.reject(refused);
    if (!this.hold) return Promise.resolve();
    return new Promise((resolve) => this.#held.push(resolve));
  }

  recordEnd(leaseId: string, pool: string, epoch: number, seq: number): number {
    this.ends.push({ leaseId, pool, epoch, seq });
    return this.ends.length;
  }

  /** Resolves at once, or once release() is called while `hold` is set. */
  endDurable(): Promise<void> {
    if (!this.hold) return Promise.resolve();
    return new Promise((resolve) => this.#held.push(resolve));
  }

  recordBehind(grant: JournaledGrant): void {
    this.behind.push(grant);
  }

  release(): void {
    for (const resolve of this.#held.splice(0)) resolve();
  }
}

/** Every committed write in order; fails the next write with `failNext` when set, and a transaction's writes commit together. */
class MemoryConfigStore implements ConfigStore {
  readonly writes: Array<{ op: string; value: PoolConfig | KeyConfig | string }> = [];
  failNext: Error | undefined;
  /** The writes of the transaction in progress. */
  #pending: Array<{ op: string; value: PoolConfig | KeyConfig | string }> | undefined;
  readonly #onCommit: Array<() => void> = [];

  async transaction<T>(work: (db: Queryable) => Promise<T>): Promise<T> {
    this.#pending = [];
    try {
      const result = await work(undefined as unknown as Queryable);
      this.writes.push(...this.#pending);
      for (const commit of this.#onCommit.splice(0)) commit();
      return result;
    } finally {
      this.#pending = undefined;
      this.#onCommit.length = 0;
    }
  }

  /** Runs `commit` when the transaction in progress commits, or now outside one. */
  afterCommit(commit: () => void): void {
    if (this.#pending) this.#onCommit.push(commit);
    else commit();
  }

  async insertPool(pool: PoolConfig): Promise<number> {
    this.#write("insertPool", pool);
    return 1;
  }

  async updatePool(pool: PoolConfig): Promise<void> {
    this.#write("updatePool", pool);
  }

  async deletePool(name: string): Promise<void> {
    this.#write("deletePool", name);
  }

  async insertKey(key: KeyConfig): Promise<void> {
    this.#write("insertKey", key);
  }

  async updateKey(key: KeyConfig): Promise<void> {
    this.#write("updateKey", key);
  }

  async deleteKey(pool: string, keyId: string): Promise<void> {
    this.#write("deleteKey", `${pool}/${keyId}`);
  }

  /** Fails with `failNext` when set. */
  check(): void {
    const failure = this.failNext;
    this.failNext = undefined;
    if (failure) throw failure;
  }

  #write(op: string, value: PoolConfig | KeyConfig | string): void {
    this.check();
    (this.#pending ?? this.writes).push({ op, value });
  }
}

/** The audit trail beside the memory store: an entry is kept only when the store's transaction commits. */
class MemoryAuditTrail implements AuditTrail {
  readonly entries: AuditEntry[] = [];
  #nextId = 1;

  constructor(private readonly store: MemoryConfigStore) {}

  async append(change: AuditChange): Promise<AuditEntry> {
    this.store.check();
    const entry = { id: this.#nextId++, ...change };
    this.store.afterCommit(() => this.entries.push(entry));
    return entry;
  }

  async list(q: AuditQuery): Promise<AuditEntry[]> {
    return this.entries
      .filter((e) => (q.pool === "" || e.pool === q.pool) && e.at >= (q.since ?? 0) && e.id < (q.beforeId ?? Infinity))
      .reverse()
      .slice(0, q.limit);
  }
}

export function services(options: { authorizer?: Authorizer } = {}) {
  const clock = new FakeClock();
  const journal = new FakeJournal();
  const config = new MemoryConfigStore();
  const warnings: object[] = [];
  const engine: PoolEngine = new PoolEngine({
    clock,
    leaseSecret: new TextEncoder().encode("test-lease-secret"),
    epoch: 7,
    onEvent: (e) => {
      events.publish(e);
      lending.onEngineEvent(e);
    },
    onLeaseEnded: (leaseId, pool, epoch, seq) => lending.leaseEnded(leaseId, pool, epoch, seq),
  });
  const events = new EventHub();
  const lending = new Lending({ engine, journal, config, observer: { observeAcquire() {} }, log: { warn: (obj) => void warnings.push(obj) } });
  const audit = new MemoryAuditTrail(config);
  const logged: object[] = [];
  const admin = new Admin({
    engine,
    store: config,
    audit,
    now: () => clock.now(),
    replica: "test-host:1",
    endsDurable: () => lending.endsDurable(),
    claims: { now: () => 0, created() {}, deleted() {} },
    log: { info: (obj) => void logged.push(obj), error: (obj) => void logged.push(obj) },
    onRecorded: (entry) => events.publish({ type: "admin_change", pool: entry.pool, entry }),
  });
  const guard = createGuard(options.authorizer ?? createAuthorizer([]), () => undefined);
  const internal: unknown[] = [];
  const mapError = createErrorMapper((err) => void internal.push(err));
  const mapErrors: Interceptor = (next) => async (req) => {
    try {
      return await next(req);
    } catch (e) {
      throw mapError(e);
    }
  };
  const transport = createRouterTransport(
    (router) => {
      router.service(KeyPoolService, new KeyPoolServiceImpl({ lending, guard, scrub: scrubSecrets }));
      router.service(PoolAdminService, new PoolAdminServiceImpl({ engine, admin, audit, events, guard, now: () => clock.now(), listPools: async () => engine.listPools(), replicas: { address: "test:1", termOf: () => 1, knows: () => false, locate: async () => {}, describe: async () => [] } }));
    },
    { router: { interceptors: [mapErrors] } },
  );
  return {
    clock,
    engine,
    journal,
    config,
    lending,
    admin,
    audit,
    /** What Admin logged: each change once committed, a revocation it could not record. */
    logged,
    warnings,
    /** Errors the mapper found unexpected (answered INTERNAL). */
    internal,
    pool: createClient(KeyPoolService, transport),
    adminClient: createClient(PoolAdminService, transport),
  };
}

/** Lets the in-memory transport's promise chains run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
