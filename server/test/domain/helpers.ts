// Builders shared by the engine tests, and by the tests of its parts (a pool, a key, a lease on their own).
import { PoolSecrets } from "../../src/domain/redact.js";
import { validateKey, validatePool } from "../../src/domain/config.js";
import type { DomainError } from "../../src/domain/errors.js";
import { PoolEngine } from "../../src/domain/engine.js";
import { KeyEntry } from "../../src/domain/key.js";
import type { SnapshotChanges } from "../../src/domain/snapshot-changes.js";
import type { Lease, PoolEntry } from "../../src/domain/state.js";
import type { AcquireInput, DomainEvent, Grant, KeyInput, PoolInput } from "../../src/domain/types.js";
import { FakeClock } from "../fake-clock.js";

export interface Harness {
  clock: FakeClock;
  engine: PoolEngine;
  events: DomainEvent[];
}

export function harness(opts: { epoch?: number; random?: () => number; clock?: FakeClock; secret?: Uint8Array } = {}): Harness {
  const clock = opts.clock ?? new FakeClock();
  const events: DomainEvent[] = [];
  const engine = new PoolEngine({
    clock,
    leaseSecret: opts.secret ?? new TextEncoder().encode("test-lease-secret"),
    epoch: opts.epoch ?? 1,
    random: opts.random,
    onEvent: (e) => events.push(e),
  });
  return { clock, engine, events };
}

export function addPool(engine: PoolEngine, input: Partial<PoolInput> & { name?: string } = {}): string {
  const cfg = engine.preparePool({ name: "p", ...input });
  engine.createPool(cfg);
  return cfg.name;
}

export function addKeys(engine: PoolEngine, pool: string, ids: string[], extra: { maxConcurrency?: number; weight?: number; quotaGroup?: string } = {}): void {
  for (const id of ids) engine.addKey(engine.prepareKey({ pool, id, secret: `sk-${id}`, ...extra }));
}

export function req(pool = "p", extra: Partial<AcquireInput> = {}): AcquireInput {
  return { pool, waitTimeoutMs: 0, holder: "test", estimatedTokens: 0, excludeKeyIds: [], ...extra };
}

/** Acquire that must be granted at once (the synchronous fast path). */
export function grantNow(engine: PoolEngine, input: AcquireInput): Grant {
  const g = engine.acquire(input);
  if (g instanceof Promise) throw new Error("expected an immediate grant");
  return g;
}

/** Lets promise reactions run (no timers involved). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

/** The error fn throws; a test fails here when it throws none. */
export function thrown(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (e) {
    return e as DomainError;
  }
  throw new Error("expected the call to throw");
}

/** Observes a promise without awaiting it, so a test can advance the fake clock and then look. */
export function settle<T>(p: Promise<T>): { value?: T; error?: DomainError } {
  const out: { value?: T; error?: DomainError } = {};
  p.then(
    (v) => (out.value = v),
    (e: DomainError) => (out.error = e),
  );
  return out;
}

export function poolEntry(input: Partial<PoolInput> = {}, now = Date.UTC(2026, 0, 1)): PoolEntry {
  const cfg = validatePool({ name: "p", ...input }, undefined, now);
  const keyList: KeyEntry[] = [];
  const secrets = new PoolSecrets(() => keyList.map((k) => k.cfg.secret));
  return { cfg, keys: new Map(), keyList, cursor: 0, waitHead: undefined, waitTail: undefined, waiting: 0, active: 0, exhausted: false, parked: [], secrets };
}

/** A key added to `pool`, as the engine adds one. */
export function keyEntry(pool: PoolEntry, changes: SnapshotChanges, id: string, input: Partial<KeyInput> = {}): KeyEntry {
  const k = new KeyEntry(validateKey({ pool: pool.cfg.name, id, secret: `sk-${id}`, ...input }, undefined, Date.UTC(2026, 0, 1)), pool, changes);
  k.slot = pool.keyList.length;
  pool.keyList.push(k);
  pool.keys.set(id, k);
  return k;
}

export function leaseOn(k: KeyEntry, id: string, seq: number, expiresAt: number): Lease {
  const record = { leaseId: id, pool: k.pool.cfg.name, keyId: k.cfg.id, holder: "test", acquiredAt: expiresAt - 60_000, expiresAt, ttlMs: 60_000 };
  return { kind: "lease", at: 0, heapPos: -1, heapSeq: 0, id, epoch: 1, seq, key: k, record, probe: false };
}
