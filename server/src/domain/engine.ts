// The pool engine: leases, strategies, health, cooldowns, circuit breakers and fair waiting
// (DESIGN "Semantics", rules 1-12). Pure and synchronous: no I/O, time only from the injected Clock,
// and every deadline on one heap driving one clock timer.
import { randomInt } from "node:crypto";
import { applyRequestsReport, budgetView, debitRequest, requestsBlockedUntil } from "./budget.js";
import { validateKey, validatePool } from "./config.js";
import { DomainError, invalidArgument } from "./errors.js";
import { LeaseTokens, type LeaseClaims } from "./lease-token.js";
import { parseRateLimitHeaders } from "./rate-limit-headers.js";
import {
  GrantWindow,
  isEligible,
  keyState,
  keyStateReason,
  newKeyEntry,
  OutcomeWindow,
  recentGrants,
  refreshHot,
  type KeyEntry,
  type KeyTimer,
  type Lease,
  type PoolEntry,
  type TimerItem,
  type Waiter,
} from "./state.js";
import { chooseKey } from "./strategies.js";
import { TimerHeap } from "./timer-heap.js";
import type {
  AcquireInput,
  Clock,
  DomainEvent,
  EventType,
  FailureClass,
  FailureReport,
  Grant,
  KeyConfig,
  KeyInput,
  KeyRuntime,
  KeyStatsView,
  KeyView,
  LeaseGoneReason,
  LeaseRecord,
  PoolConfig,
  PoolInput,
  PoolStatsView,
  RateLimitedReport,
  RateLimitReport,
  Renewal,
  RuntimeChanges,
  RuntimeSnapshot,
  SuccessReport,
  TimerHandle,
} from "./types.js";

export interface EngineOptions {
  clock: Clock;
  /** HMAC key for lease tokens. */
  leaseSecret: Uint8Array;
  /** Server boot number; part of every lease id. */
  epoch: number;
  /** For latency exploration and id generation; default Math.random. */
  random?: () => number;
  /** Called synchronously for every event; exceptions are swallowed. */
  onEvent?: (e: DomainEvent) => void;
  /** Most ended lease ids kept for the next export of changes (default 1,000,000); beyond it the next export is full. */
  maxEndedUnexported?: number;
  /** How many of this boot's latest grants remember why they ended (default 2^20, a byte each); older ones answer from the token. */
  endedReasons?: number;
}

export type PoolWithCount = PoolConfig & { keyCount: number };

interface Tombstone {
  reason: LeaseGoneReason;
  at: number;
  pool: string;
  keyId: string;
  /** A late outcome report on an expired or revoked lease updates health once. */
  lateReported: boolean;
}

const EMA_ALPHA = 0.2;
const TOMBSTONE_MAX_AGE_MS = 3_600_000;
const TOMBSTONE_CAP = 100_000;
/** How a lease ended: every gone reason but "unknown". */
type EndReason = Exclude<LeaseGoneReason, "unknown">;
/** An ended-reason byte: the reason's index in the low bits (0: none known), and a flag once a late outcome report was applied. */
const ENDED_REASONS: ReadonlyArray<EndReason | undefined> = [undefined, "released", "expired", "revoked"];
const LATE_REPORTED = 4;
/** The engine alone ends over 100,000 leases a second, and snapshots may come 10 s apart while the database is away. */
const ENDED_LEASES_CAP = 1_000_000;
/** Node clamps longer timer delays to 1 ms; longer deadlines re-arm when this fires. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;
const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

/** Server-side classification of MarkFailed with no reason (RULES.md). */
function classifyStatus(status: number): FailureClass | "rate_limited" {
  if (status === 401 || status === 403) return "auth";
  if (status === 402) return "quota_exhausted";
  if (status === 429) return "rate_limited";
  if (status === 529 || status === 503) return "overloaded";
  if (status === 0 || status === 408 || (status >= 500 && status <= 599)) return "transient";
  return "client_error";
}

function goneError(reason: LeaseGoneReason, message?: string): DomainError {
  switch (reason) {
    case "expired":
      return new DomainError("lease_expired", "lease expired before this call");
    case "released":
      return new DomainError("lease_released", "lease was already ended by release or an outcome report");
    case "revoked":
      return new DomainError("lease_revoked", message ? `lease was revoked: ${message}` : "lease was revoked");
    case "unknown":
      return new DomainError("lease_unknown", "lease id was not granted by this server");
  }
}

function optionalCount(v: number | null | undefined): number | undefined {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

function checkMs(v: number, field: string): void {
  if (!Number.isFinite(v) || v < 0) throw invalidArgument(field, "must be a non-negative duration");
}

export class PoolEngine {
  private readonly clock: Clock;
  private readonly tokens: LeaseTokens;
  private readonly epoch: number;
  private readonly random: () => number;
  private readonly onEvent: ((e: DomainEvent) => void) | undefined;
  private readonly maxEndedUnexported: number;
  private readonly pools = new Map<string, PoolEntry>();
  private readonly live = new Map<string, Lease>();
  /** Leases of earlier boots that ended here; this boot's own are in `endedBySeq`. */
  private readonly tombstones = new Map<string, Tombstone>();
  private readonly tombstoneOrder: string[] = [];
  private tombstoneHead = 0;
  /** Why this boot's lease `seq` ended, at seq mod its length: no object per ended lease for the GC to keep. */
  private readonly endedBySeq: Uint8Array;
  private readonly heap = new TimerHeap<TimerItem>();
  private armed: TimerHandle | undefined;
  private armedAt: number | undefined;
  private seq = 0;
  private grantHighWater: Record<number, number> = {};
  private changed = false;
  // Changes since the last export, besides each changed key's `unsaved` mark.
  private touchedLeases = new Set<Lease>();
  private endedLeases: string[] = [];
  private removedKeys: Array<{ pool: string; keyId: string }> = [];
  /** More ended than ENDED_LEASES_CAP since the last export: only a full export is right. */
  private changesLost = false;
  private closed = false;

  constructor(opts: EngineOptions) {
    this.clock = opts.clock;
    this.tokens = new LeaseTokens(opts.leaseSecret);
    this.epoch = opts.epoch;
    this.random = opts.random ?? Math.random;
    this.onEvent = opts.onEvent;
    this.maxEndedUnexported = opts.maxEndedUnexported ?? ENDED_LEASES_CAP;
    this.endedBySeq = new Uint8Array(opts.endedReasons ?? 2 ** 20);
  }

  /** Something in runtime state changed since markClean(). */
  get dirty(): boolean {
    return this.changed;
  }

  markClean(): void {
    this.changed = false;
  }

  // ---- configuration ------------------------------------------------------------------------

  preparePool(input: PoolInput, existing?: PoolConfig): PoolConfig {
    const cfg = validatePool(input, existing, this.clock.now());
    if (!existing && this.pools.has(cfg.name)) throw new DomainError("pool_exists", `pool "${cfg.name}" already exists`);
    return cfg;
  }

  prepareKey(input: KeyInput, existing?: KeyConfig): KeyConfig {
    const now = this.clock.now();
    const pool = this.poolEntry(input.pool);
    if (existing) {
      if (input.id !== undefined && input.id !== existing.id) throw invalidArgument("key.id", "cannot be changed");
      return validateKey({ ...input, id: existing.id }, existing, now);
    }
    const cfg = validateKey({ ...input, id: input.id || this.newKeyId(pool) }, undefined, now);
    if (pool.keys.has(cfg.id)) throw new DomainError("key_exists", `key "${cfg.id}" already exists in pool "${pool.cfg.name}"`);
    return cfg;
  }

  createPool(cfg: PoolConfig): void {
    const now = this.tick();
    if (this.pools.has(cfg.name)) throw new DomainError("pool_exists", `pool "${cfg.name}" already exists`);
    this.insertPool(cfg);
    this.emit("pool_created", now, cfg.name);
  }

  updatePool(cfg: PoolConfig): void {
    const now = this.tick();
    const pool = this.poolEntry(cfg.name);
    pool.cfg = { ...cfg };
    this.emit("pool_updated", now, cfg.name);
    this.pump(pool, now);
  }

  checkDeletePool(name: string, force: boolean): void {
    const pool = this.poolEntry(name);
    if (!force && pool.active > 0) {
      throw new DomainError("pool_has_leases", `pool "${name}" has ${pool.active} live leases; delete with force to revoke them`);
    }
  }

  deletePool(name: string): void {
    const now = this.tick();
    const pool = this.poolEntry(name);
    for (const k of pool.keyList) {
      k.draining = undefined;
      refreshHot(k);
      this.revokeAll(k, now, "pool deleted");
      this.cancelKeyTimers(k);
      this.removedKeys.push({ pool: name, keyId: k.cfg.id });
    }
    for (let w = pool.waitHead; w; w = pool.waitHead) {
      this.dropWaiter(w);
      w.reject(new DomainError("pool_not_found", `pool "${name}" was deleted`));
    }
    this.pools.delete(name);
    this.changed = true;
    this.emit("pool_deleted", now, name);
  }

  getPool(name: string): PoolWithCount {
    const pool = this.poolEntry(name);
    return { ...pool.cfg, keyCount: pool.keyList.length };
  }

  listPools(): PoolWithCount[] {
    return [...this.pools.values()].map((p) => ({ ...p.cfg, keyCount: p.keyList.length }));
  }

  addKey(cfg: KeyConfig): void {
    const now = this.tick();
    const pool = this.poolEntry(cfg.pool);
    if (pool.keys.has(cfg.id)) throw new DomainError("key_exists", `key "${cfg.id}" already exists in pool "${cfg.pool}"`);
    this.insertKey(pool, cfg);
    this.changed = true;
    this.emit("key_added", now, cfg.pool, cfg.id);
    this.pump(pool, now);
  }

  updateKey(cfg: KeyConfig): void {
    const now = this.tick();
    const k = this.keyEntry(cfg.pool, cfg.id);
    k.cfg = { ...cfg, metadata: { ...cfg.metadata } };
    refreshHot(k);
    this.emit("key_updated", now, cfg.pool, cfg.id);
    this.pump(k.pool, now);
  }

  /** With drain and live leases the key lends no more and is removed (event key_removed) when its last lease ends. */
  removeKey(pool: string, keyId: string, drain: boolean): { removedNow: boolean } {
    const now = this.tick();
    const k = this.keyEntry(pool, keyId);
    if (drain && k.active > 0) {
      k.draining = { remove: true };
      k.cfg = { ...k.cfg, disabled: true, disabledReason: "removing: draining" };
      refreshHot(k);
      this.touch(k);
      this.emit("key_disabled", now, pool, keyId, undefined, "removing: draining");
      return { removedNow: false };
    }
    k.draining = undefined;
    refreshHot(k);
    this.revokeAll(k, now, "key removed");
    this.dropKey(k, now);
    return { removedNow: true };
  }

  /** Clears a manual disable and an auto-disable (AUTH / QUOTA_EXHAUSTED). */
  enableKey(pool: string, keyId: string): KeyView {
    const now = this.tick();
    const k = this.keyEntry(pool, keyId);
    if (k.draining?.remove) throw new DomainError("key_not_found", `key "${keyId}" is being removed`);
    k.cfg = { ...k.cfg, disabled: false, disabledReason: "" };
    k.autoDisabled = undefined;
    k.draining = undefined;
    refreshHot(k);
    this.touch(k);
    this.emit("key_enabled", now, pool, keyId);
    this.pump(k.pool, now);
    return this.view(k);
  }

  /** Manual disable; without drain its live leases are revoked now. */
  disableKey(pool: string, keyId: string, drain: boolean, reason: string): KeyView {
    const now = this.tick();
    const k = this.keyEntry(pool, keyId);
    k.cfg = { ...k.cfg, disabled: true, disabledReason: reason };
    this.touch(k);
    this.emit("key_disabled", now, pool, keyId, undefined, reason);
    if (drain && k.active > 0 && !k.draining) k.draining = { remove: false };
    refreshHot(k);
    if (!drain) {
      this.revokeAll(k, now, `key disabled: ${reason}`);
    }
    return this.view(k);
  }

  getKey(pool: string, keyId: string): KeyView {
    return this.view(this.keyEntry(pool, keyId));
  }

  listKeys(pool: string): KeyView[] {
    return this.poolEntry(pool).keyList.map((k) => this.view(k));
  }

  getKeyConfig(pool: string, keyId: string): KeyConfig {
    const cfg = this.keyEntry(pool, keyId).cfg;
    return { ...cfg, metadata: { ...cfg.metadata } };
  }

  // ---- hot path -----------------------------------------------------------------------------

  /**
   * A Grant when a key is eligible now; otherwise a promise that waits first-in first-out up to
   * waitTimeoutMs. Failures decided at once (unknown pool, no keys, wait 0) throw synchronously.
   * `cancellation` is only called when the caller must queue (making a signal costs the fast path).
   */
  acquire(input: AcquireInput, cancellation?: () => AbortSignal): Grant | Promise<Grant> {
    const now = this.tick();
    if (this.closed) throw new DomainError("cancelled", "the engine is shutting down");
    const pool = this.poolEntry(input.pool);
    checkMs(input.waitTimeoutMs, "wait_timeout");
    if (input.ttlMs !== undefined) checkMs(input.ttlMs, "lease_ttl");
    if (!Number.isFinite(input.estimatedTokens) || input.estimatedTokens < 0) {
      throw invalidArgument("estimated_tokens", "must not be negative");
    }
    if (pool.keyList.length === 0) throw new DomainError("pool_empty", `pool "${pool.cfg.name}" has no keys`);
    const exclude = input.excludeKeyIds.length > 0 ? new Set(input.excludeKeyIds) : undefined;
    // Queued waiters cannot use any eligible key (pump keeps that true), so this never barges.
    const k = chooseKey(pool, now, input.estimatedTokens, exclude, this.random);
    if (k) return this.grant(pool, k, input, now);
    if (!pool.exhausted) {
      pool.exhausted = true;
      this.emit("pool_exhausted", now, pool.cfg.name);
    }
    if (input.waitTimeoutMs <= 0) throw this.noKeyAvailable(pool, now, input.estimatedTokens, exclude);
    const signal = cancellation?.();
    if (signal?.aborted) throw new DomainError("cancelled", "acquire was cancelled");
    return new Promise<Grant>((resolve, reject) => {
      const w: Waiter = {
        kind: "waiter",
        at: 0,
        heapPos: -1,
        heapSeq: 0,
        pool,
        queued: true,
        input,
        exclude,
        resolve,
        reject,
        prev: pool.waitTail,
        next: undefined,
        signal,
        onAbort: undefined,
      };
      if (pool.waitTail) pool.waitTail.next = w;
      else pool.waitHead = w;
      pool.waitTail = w;
      pool.waiting++;
      this.schedule(w, now + input.waitTimeoutMs, now);
      if (signal) {
        w.onAbort = () => {
          this.dropWaiter(w);
          reject(new DomainError("cancelled", "acquire was cancelled"));
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
    });
  }

  release(leaseId: string, report: SuccessReport): void {
    const now = this.tick();
    // The late-report callback is only built off the hot path.
    const lease = this.live.get(leaseId) ?? this.findLease(leaseId, now, (k) => this.recordSuccess(k, report, now));
    const k = lease.key;
    this.endLease(lease, "released", "released", now);
    this.recordSuccess(k, report, now);
    this.pump(k.pool, now);
  }

  /** Ends the lease and applies the outcome class (given, or derived from httpStatus); returns the class applied. */
  markFailed(leaseId: string, report: FailureReport): FailureClass | "rate_limited" {
    const now = this.tick();
    const outcome = report.reason ?? classifyStatus(report.httpStatus);
    const lease = this.live.get(leaseId) ?? this.findLease(leaseId, now, (k) => this.recordFailure(k, outcome, report, now));
    const k = lease.key;
    this.endLease(lease, "released", outcome === "rate_limited" ? "rate_limited" : `failed: ${outcome}`, now);
    this.recordFailure(k, outcome, report, now);
    this.pump(k.pool, now);
    return outcome;
  }

  markRateLimited(leaseId: string, report: RateLimitedReport): { cooldownUntil: number } {
    const now = this.tick();
    const lease = this.live.get(leaseId) ?? this.findLease(leaseId, now, (k) => this.recordRateLimit(k, report, now));
    const k = lease.key;
    this.endLease(lease, "released", "rate_limited", now);
    const cooldownUntil = this.recordRateLimit(k, report, now);
    this.pump(k.pool, now);
    return { cooldownUntil };
  }

  /** Extends a live lease to now + ttl (clamped; default its current ttl). An ended lease is always an error. */
  renew(leaseId: string, ttlMs?: number): Renewal {
    const now = this.tick();
    if (ttlMs !== undefined) checkMs(ttlMs, "ttl");
    const lease = this.findLease(leaseId, now);
    const cfg = lease.key.pool.cfg;
    const ttl = Math.min(Math.max(Math.floor(ttlMs ?? lease.record.ttlMs), cfg.minTtlMs), cfg.maxTtlMs);
    const expiresAt = now + ttl;
    lease.record = { ...lease.record, expiresAt, ttlMs: ttl };
    this.schedule(lease, expiresAt, now);
    this.touchedLeases.add(lease);
    this.changed = true;
    return { leaseId, expiresAt, ttlMs: ttl, renewIntervalMs: Math.floor(ttl / 3) };
  }

  revokeLease(leaseId: string, reason: string): void {
    const now = this.tick();
    const lease = this.findLease(leaseId, now);
    this.revoke(lease, now, reason);
    this.pump(lease.key.pool, now);
  }

  listLeases(pool: string, keyId?: string): LeaseRecord[] {
    this.tick();
    const keys = keyId ? [this.keyEntry(pool, keyId)] : this.poolEntry(pool).keyList;
    const out: LeaseRecord[] = [];
    for (const k of keys) {
      for (const l of k.leases) {
        out.push({ ...l.record });
      }
    }
    return out;
  }

  stats(pool: string): PoolStatsView {
    const now = this.tick();
    const p = this.poolEntry(pool);
    const keys = p.keyList.map((k) => this.keyStats(k, now));
    return {
      pool,
      totalKeys: keys.length,
      eligibleKeys: keys.filter((k) => k.eligible).length,
      activeLeases: p.active,
      waiters: p.waiting,
      keys,
    };
  }

  /** Calls fn once if the lease ends by revocation; returns the unsubscribe function. Throws like renew for an ended lease. */
  watchLease(leaseId: string, fn: (reason: LeaseGoneReason, message: string) => void): () => void {
    const lease = this.findLease(leaseId, this.tick());
    (lease.watchers ??= []).push(fn);
    return () => {
      const i = lease.watchers?.indexOf(fn) ?? -1;
      if (i >= 0) lease.watchers!.splice(i, 1);
    };
  }

  // ---- persistence --------------------------------------------------------------------------

  /** A consistent copy of runtime state and live leases (never secrets); lease records are shared and read-only. */
  exportRuntime(): RuntimeSnapshot {
    const keys: KeyRuntime[] = [];
    for (const pool of this.pools.values()) {
      for (const k of pool.keyList) {
        keys.push(this.keyRuntime(k));
        k.unsaved = false;
      }
    }
    const leases: LeaseRecord[] = new Array(this.live.size);
    let i = 0;
    for (const l of this.live.values()) leases[i++] = l.record;
    this.touchedLeases.clear();
    this.endedLeases = [];
    this.removedKeys = [];
    this.changesLost = false;
    return { takenAt: this.clock.now(), keys, leases };
  }

  /**
   * What changed since the previous export (of either kind), so a steady snapshot copies only that;
   * undefined when too much changed to keep track of: export in full instead.
   */
  exportChanges(): RuntimeChanges | undefined {
    if (this.changesLost) return undefined;
    const changed: KeyEntry[] = [];
    for (const pool of this.pools.values()) {
      for (const k of pool.keyList) {
        if (!k.unsaved) continue;
        changed.push(k);
        k.unsaved = false;
      }
    }
    const leases: LeaseRecord[] = [];
    for (const l of this.touchedLeases) leases.push(l.record);
    this.touchedLeases.clear();
    const changes = { takenAt: this.clock.now(), keys: this.readKeys(changed), removedKeys: this.removedKeys, leases, endedLeases: this.endedLeases };
    this.endedLeases = [];
    this.removedKeys = [];
    return changes;
  }

  /** Restores configuration and the last snapshot before traffic starts; deadlines are absolute, so nothing resets. */
  load(pools: PoolConfig[], keys: KeyConfig[], runtime: RuntimeSnapshot | undefined, grantHighWater: Record<number, number>): void {
    const now = this.clock.now();
    this.grantHighWater = { ...grantHighWater };
    this.seq = Math.max(this.seq, grantHighWater[this.epoch] ?? 0);
    for (const p of pools) if (!this.pools.has(p.name)) this.insertPool(p);
    for (const cfg of keys) {
      const pool = this.pools.get(cfg.pool);
      if (pool && !pool.keys.has(cfg.id)) this.insertKey(pool, cfg);
    }
    for (const r of runtime?.keys ?? []) {
      const k = this.pools.get(r.pool)?.keys.get(r.keyId);
      if (k) this.restoreKey(k, r, now);
    }
    for (const l of runtime?.leases ?? []) {
      const k = this.pools.get(l.pool)?.keys.get(l.keyId);
      const claims = this.claimsOf(l.leaseId);
      if (!k || !claims || this.live.has(l.leaseId)) continue;
      if (claims.epoch === this.epoch) this.seq = Math.max(this.seq, claims.seq);
      if (l.expiresAt <= now) {
        this.noteGone(l.leaseId, claims, "expired", now, k);
        continue;
      }
      this.addLease(k, claims, { ...l }, false, now);
    }
    for (const pool of this.pools.values()) {
      for (const k of [...pool.keyList]) if (k.draining && k.active === 0) this.finishDrain(k, now);
    }
    this.arm(now);
  }

  /** Whether the lease is live (granted and not yet ended) in this engine. */
  isLive(leaseId: string): boolean {
    return this.live.has(leaseId);
  }

  /** Epoch and generation of an authentic lease id, for the store's grant journal. */
  leaseSeq(leaseId: string): { epoch: number; seq: number } | undefined {
    const lease = this.live.get(leaseId);
    if (lease) return { epoch: lease.epoch, seq: lease.seq };
    const c = this.claimsOf(leaseId);
    return c && { epoch: c.epoch, seq: c.seq };
  }

  /** Stops the timer and rejects every waiter with "cancelled". */
  close(): void {
    this.closed = true;
    if (this.armed !== undefined) this.clock.clearTimeout(this.armed);
    this.armed = undefined;
    this.armedAt = undefined;
    for (const pool of this.pools.values()) {
      for (let w = pool.waitHead; w; w = pool.waitHead) {
        this.dropWaiter(w);
        w.reject(new DomainError("cancelled", "the engine is shutting down"));
      }
    }
  }

  // ---- leases -------------------------------------------------------------------------------

  private grant(pool: PoolEntry, k: KeyEntry, input: AcquireInput, now: number): Grant {
    const cfg = pool.cfg;
    const ttl = Math.min(Math.max(Math.floor(input.ttlMs ?? cfg.defaultTtlMs), cfg.minTtlMs), cfg.maxTtlMs);
    const seq = ++this.seq;
    const claims: LeaseClaims = { pool: cfg.name, keyId: k.cfg.id, epoch: this.epoch, seq, issuedAt: now, ttlMs: ttl };
    const id = this.tokens.issue(claims);
    const probe = k.circuitState === "half_open";
    const record = { leaseId: id, pool: cfg.name, keyId: k.cfg.id, holder: input.holder, acquiredAt: now, expiresAt: now + ttl, ttlMs: ttl };
    this.addLease(k, claims, record, probe, now);
    this.touch(k);
    k.totalLeases++;
    k.grants.add(now);
    if (k.budget.requestsRemaining !== undefined) this.debitBudget(k, now);
    // Pruning here keeps the window bounded whatever the strategy.
    recentGrants(k, now);
    pool.exhausted = false;
    this.emit("lease_granted", now, cfg.name, k.cfg.id, id);
    return {
      leaseId: id,
      pool: cfg.name,
      keyId: k.cfg.id,
      keyLabel: k.cfg.label,
      secret: k.cfg.secret,
      // Shared, not copied: a key's configuration is replaced on update, never mutated.
      metadata: k.cfg.metadata,
      expiresAt: now + ttl,
      ttlMs: ttl,
      renewIntervalMs: Math.floor(ttl / 3),
      maxConcurrency: k.cfg.maxConcurrency,
    };
  }

  private addLease(k: KeyEntry, claims: LeaseClaims, record: LeaseRecord, probe: boolean, now: number): Lease {
    const lease: Lease = {
      kind: "lease",
      at: 0,
      heapPos: -1,
      heapSeq: 0,
      id: record.leaseId,
      epoch: claims.epoch,
      seq: claims.seq,
      key: k,
      record,
      probe,
      watchers: undefined,
    };
    this.live.set(record.leaseId, lease);
    k.leases.add(lease);
    k.active++;
    k.pool.active++;
    if (probe) k.probes++;
    this.schedule(lease, record.expiresAt, now);
    this.touchedLeases.add(lease);
    this.changed = true;
    return lease;
  }

  /** The only place a lease ends: frees its slot once and notes why it ended, for late calls. */
  private endLease(lease: Lease, reason: EndReason, cause: string, now: number, message = ""): void {
    this.live.delete(lease.id);
    this.heap.cancel(lease);
    const k = lease.key;
    k.leases.delete(lease);
    k.active--;
    k.pool.active--;
    if (lease.probe) k.probes--;
    this.noteGone(lease.id, lease, reason, now, k);
    this.touchedLeases.delete(lease);
    this.noteEnded(lease.id);
    this.changed = true;
    this.emit("lease_ended", now, k.pool.cfg.name, k.cfg.id, lease.id, cause);
    if (reason === "revoked" && lease.watchers) {
      for (const fn of lease.watchers) {
        try {
          fn("revoked", message);
        } catch {
          // A watcher's failure must not stop the engine.
        }
      }
    }
    if (k.draining && k.active === 0) this.finishDrain(k, now);
  }

  /** The key's runtime state changed: it goes into the next snapshot. */
  private touch(k: KeyEntry): void {
    k.unsaved = true;
    this.changed = true;
  }

  private noteEnded(leaseId: string): void {
    if (this.changesLost) return;
    if (this.endedLeases.length < this.maxEndedUnexported) {
      this.endedLeases.push(leaseId);
      return;
    }
    // Nobody exported for a long while (no snapshotter, or a long outage): stop keeping track.
    this.changesLost = true;
    this.endedLeases = [];
    this.touchedLeases.clear();
    this.removedKeys = [];
  }

  private revoke(lease: Lease, now: number, message: string): void {
    const k = lease.key;
    this.endLease(lease, "revoked", "revoked", now, message);
    this.emit("lease_revoked", now, k.pool.cfg.name, k.cfg.id, lease.id, message);
  }

  private revokeAll(k: KeyEntry, now: number, message: string): void {
    for (const lease of [...k.leases]) this.revoke(lease, now, message);
  }

  /** Remembers why a lease ended, for late calls on it. */
  private noteGone(id: string, { epoch, seq }: { epoch: number; seq: number }, reason: EndReason, now: number, k: KeyEntry): void {
    if (epoch === this.epoch) this.endedBySeq[seq % this.endedBySeq.length] = ENDED_REASONS.indexOf(reason);
    else this.tombstone(id, reason, now, k);
  }

  private tombstone(id: string, reason: LeaseGoneReason, now: number, k: KeyEntry): void {
    const t = this.tombstones;
    const order = this.tombstoneOrder;
    t.set(id, { reason, at: now, pool: k.pool.cfg.name, keyId: k.cfg.id, lateReported: false });
    order.push(id);
    // Oldest first from a queue: iterating the Map itself would skip ever more deleted entries.
    let head = this.tombstoneHead;
    while (head < order.length) {
      const oldest = t.get(order[head]!);
      if (oldest && t.size <= TOMBSTONE_CAP && oldest.at > now - TOMBSTONE_MAX_AGE_MS) break;
      t.delete(order[head]!);
      head++;
    }
    if (head > 4096 && head * 2 > order.length) {
      order.splice(0, head);
      head = 0;
    }
    this.tombstoneHead = head;
  }

  /**
   * The live lease for an id, re-adopting an authentic one granted before a crash; otherwise throws
   * the reason it is gone. `late` applies a late outcome report to the key of an expired or revoked lease.
   */
  private findLease(id: string, now: number, late?: (k: KeyEntry) => void): Lease {
    const lease = this.live.get(id);
    if (lease) return lease;
    const tomb = this.tombstones.get(id);
    if (tomb) {
      if (late && !tomb.lateReported && tomb.reason !== "released") {
        tomb.lateReported = true;
        this.reportLate(tomb.pool, tomb.keyId, late, now);
      }
      throw goneError(tomb.reason);
    }
    const c = this.tokens.verify(id);
    if (!c) throw goneError("unknown");
    const endedBy: LeaseGoneReason = c.issuedAt + c.ttlMs <= now ? "expired" : "released";
    if (c.epoch > this.epoch || (c.epoch === this.epoch && c.seq > this.seq)) throw goneError("unknown");
    if (c.epoch === this.epoch) throw goneError(this.endedReason(c, now, late) ?? endedBy);
    const highWater = this.grantHighWater[c.epoch];
    if ((highWater !== undefined && c.seq <= highWater) || endedBy === "expired") throw goneError(endedBy);
    const adopted = this.adopt(id, c, now);
    if (!adopted) throw goneError("revoked", "its key is gone, disabled or full since the restart");
    return adopted;
  }

  /** Why a lease of this boot ended, if it is among the latest remembered; applies a late outcome report once. */
  private endedReason(c: LeaseClaims, now: number, late: ((k: KeyEntry) => void) | undefined): EndReason | undefined {
    if (c.seq <= this.seq - this.endedBySeq.length) return undefined;
    const slot = c.seq % this.endedBySeq.length;
    const code = this.endedBySeq[slot]!;
    const reason = ENDED_REASONS[code & 3];
    if (late && reason !== undefined && reason !== "released" && !(code & LATE_REPORTED)) {
      this.endedBySeq[slot] = code | LATE_REPORTED;
      this.reportLate(c.pool, c.keyId, late, now);
    }
    return reason;
  }

  /** Applies a late outcome report to the key an ended lease was on, if the key is still there. */
  private reportLate(pool: string, keyId: string, late: (k: KeyEntry) => void, now: number): void {
    const k = this.pools.get(pool)?.keys.get(keyId);
    if (!k) return;
    late(k);
    this.pump(k.pool, now);
  }

  /** A lease granted in an earlier boot that no snapshot or journal recorded (e.g. the database was down). */
  private adopt(id: string, c: LeaseClaims, now: number): Lease | undefined {
    const k = this.pools.get(c.pool)?.keys.get(c.keyId);
    if (!k || k.cfg.disabled || k.autoDisabled || (k.cfg.maxConcurrency > 0 && k.active >= k.cfg.maxConcurrency)) return undefined;
    const record = { leaseId: id, pool: c.pool, keyId: c.keyId, holder: "", acquiredAt: c.issuedAt, expiresAt: c.issuedAt + c.ttlMs, ttlMs: c.ttlMs };
    const lease = this.addLease(k, c, record, false, now);
    this.emit("lease_granted", now, c.pool, c.keyId, id, "re-adopted after restart");
    return lease;
  }

  private claimsOf(leaseId: string): LeaseClaims | undefined {
    try {
      return this.tokens.verify(leaseId);
    } catch {
      return undefined;
    }
  }

  // ---- waiting ------------------------------------------------------------------------------

  /** Serves queued waiters, oldest first, while some key is eligible for them. */
  private pump(pool: PoolEntry, now: number): void {
    let w = pool.waitHead;
    while (w) {
      const next = w.next;
      const k = chooseKey(pool, now, w.input.estimatedTokens, w.exclude, this.random);
      if (k) {
        this.dropWaiter(w);
        w.resolve(this.grant(pool, k, w.input, now));
      } else if (!w.exclude && w.input.estimatedTokens <= 0) {
        // Nothing is eligible for an unrestricted waiter, so nothing is for anyone behind it.
        return;
      }
      w = next;
    }
  }

  private dropWaiter(w: Waiter): void {
    if (!w.queued) return;
    w.queued = false;
    const pool = w.pool;
    if (w.prev) w.prev.next = w.next;
    else pool.waitHead = w.next;
    if (w.next) w.next.prev = w.prev;
    else pool.waitTail = w.prev;
    w.prev = w.next = undefined;
    pool.waiting--;
    this.heap.cancel(w);
    if (w.signal && w.onAbort) w.signal.removeEventListener("abort", w.onAbort);
  }

  private noKeyAvailable(pool: PoolEntry, now: number, estimatedTokens: number, exclude: Set<string> | undefined): DomainError {
    const at = this.earliestAvailability(pool, now, estimatedTokens, exclude);
    return new DomainError(
      "no_key_available",
      `no key of pool "${pool.cfg.name}" became available in time`,
      at === undefined ? {} : { retryAfterMs: Math.max(0, at - now) },
    );
  }

  /** The earliest instant some key this caller may use is known to become eligible, if any. */
  private earliestAvailability(pool: PoolEntry, now: number, estimatedTokens: number, exclude: Set<string> | undefined): number | undefined {
    let best: number | undefined;
    for (const k of pool.keyList) {
      if (!k.lendable || exclude?.has(k.cfg.id)) continue;
      let at = now;
      if (k.cooldownUntil !== undefined) at = Math.max(at, k.cooldownUntil);
      if (k.circuitState === "open" && k.circuitOpenUntil !== undefined) at = Math.max(at, k.circuitOpenUntil);
      at = Math.max(at, k.requestsBlockedUntil);
      if (k.tokensLeft === 0 || k.tokensLeft < estimatedTokens) at = Math.max(at, k.tokensKnownUntil);
      const full = k.cfg.maxConcurrency > 0 && k.active >= k.cfg.maxConcurrency;
      const probesFull = k.circuitState === "half_open" && k.probes >= pool.cfg.halfOpenProbes;
      if (full || probesFull) {
        let firstExpiry = Infinity;
        for (const l of k.leases) if ((full || l.probe) && l.record.expiresAt < firstExpiry) firstExpiry = l.record.expiresAt;
        if (firstExpiry === Infinity) continue;
        at = Math.max(at, firstExpiry);
      }
      if (best === undefined || at < best) best = at;
    }
    return best;
  }

  // ---- health, cooldowns, circuit breaker ---------------------------------------------------

  private recordSuccess(k: KeyEntry, report: SuccessReport, now: number): void {
    this.recordLatency(k, report.latencyMs);
    this.recordOutcome(k, 1, now);
    k.consecutiveFailures = 0;
    k.inputTokens += optionalCount(report.inputTokens) ?? 0;
    k.outputTokens += optionalCount(report.outputTokens) ?? 0;
    this.applyBudget(k, report.rateLimit, now);
    if (k.circuitState === "half_open") this.closeCircuit(k, now);
  }

  private recordFailure(k: KeyEntry, outcome: FailureClass | "rate_limited", report: FailureReport, now: number): void {
    this.recordLatency(k, report.latencyMs);
    switch (outcome) {
      case "rate_limited":
        this.recordRateLimit(k, {}, now);
        return;
      case "auth":
      case "quota_exhausted":
        this.recordOutcome(k, 0, now);
        this.autoDisable(k, outcome === "auth" ? "auth" : "quota", report.message || `provider answered ${report.httpStatus}`, now);
        return;
      case "transient":
        this.recordOutcome(k, 0, now);
        k.consecutiveFailures++;
        if (k.circuitState === "half_open") this.openCircuit(k, now);
        else if (k.circuitState === "closed" && k.consecutiveFailures >= k.pool.cfg.failureThreshold) this.openCircuit(k, now);
        return;
      case "overloaded":
      case "client_error":
        // Provider-wide overload and the caller's own bad request say nothing about this key.
        return;
    }
  }

  /** Applies a 429 to the key and its quota group; returns the key's cooldown end. */
  private recordRateLimit(k: KeyEntry, report: RateLimitedReport, now: number): number {
    const cfg = k.pool.cfg;
    const fromHeaders = this.applyBudget(k, report.rateLimit, now);
    // The doubling window is max_cooldown long and restarts at every 429, so a steady stream of 429s reaches the cap.
    const continues = k.rateLimitStreakStart !== undefined && now - k.rateLimitStreakStart <= cfg.maxCooldownMs;
    k.rateLimitStreak = continues ? k.rateLimitStreak + 1 : 1;
    k.rateLimitStreakStart = now;
    const retryAfter = report.retryAfterMs !== undefined && report.retryAfterMs >= 0 ? report.retryAfterMs : fromHeaders;
    const wait = retryAfter ?? Math.min(cfg.defaultCooldownMs * 2 ** Math.min(k.rateLimitStreak - 1, 30), cfg.maxCooldownMs);
    const until = now + Math.floor(wait);
    this.coolDown(k, until, now);
    if (k.cfg.quotaGroup !== "") {
      for (const other of k.pool.keyList) if (other !== k && other.cfg.quotaGroup === k.cfg.quotaGroup) this.coolDown(other, until, now);
    }
    this.touch(k);
    return k.cooldownUntil ?? until;
  }

  private recordLatency(k: KeyEntry, latencyMs: number | undefined): void {
    if (latencyMs === undefined || !Number.isFinite(latencyMs) || latencyMs < 0) return;
    k.emaLatencyMs = k.emaLatencyMs === undefined ? latencyMs : k.emaLatencyMs + EMA_ALPHA * (latencyMs - k.emaLatencyMs);
    this.touch(k);
  }

  private recordOutcome(k: KeyEntry, ok: 0 | 1, now: number): void {
    k.outcomes.record(now, ok);
    this.touch(k);
  }

  private successRate(k: KeyEntry, now: number): number {
    // Ageing out is a change the next export carries, though it makes nothing to write by itself.
    if (k.outcomes.prune(now)) k.unsaved = true;
    return k.outcomes.rate();
  }

  private autoDisable(k: KeyEntry, cause: "auth" | "quota", message: string, now: number): void {
    if (k.autoDisabled) return;
    k.autoDisabled = { cause, message, at: now };
    refreshHot(k);
    this.touch(k);
    this.emit("key_auto_disabled", now, k.pool.cfg.name, k.cfg.id, undefined, `${cause}: ${message}`);
  }

  /** Cooldowns only grow: the later of the current end and `until` wins. */
  private coolDown(k: KeyEntry, until: number, now: number): void {
    if (k.cooldownUntil !== undefined && k.cooldownUntil >= until) return;
    k.cooldownUntil = until;
    this.schedule(k.cooldownTimer, until, now);
    this.touch(k);
    this.emit("cooldown_started", now, k.pool.cfg.name, k.cfg.id, undefined, undefined, until);
  }

  private openCircuit(k: KeyEntry, now: number): void {
    const cfg = k.pool.cfg;
    k.circuitOpenCount++;
    const duration = Math.min(cfg.openDurationMs * 2 ** Math.min(k.circuitOpenCount - 1, 30), cfg.maxOpenDurationMs);
    k.circuitState = "open";
    k.circuitOpenUntil = now + duration;
    this.schedule(k.circuitTimer, k.circuitOpenUntil, now);
    this.touch(k);
    this.emit("circuit_opened", now, cfg.name, k.cfg.id, undefined, undefined, k.circuitOpenUntil);
  }

  private closeCircuit(k: KeyEntry, now: number): void {
    k.circuitState = "closed";
    k.circuitOpenUntil = undefined;
    k.circuitOpenCount = 0;
    this.heap.cancel(k.circuitTimer);
    this.touch(k);
    this.emit("circuit_closed", now, k.pool.cfg.name, k.cfg.id);
  }

  /** Records the provider's view (typed fields win over headers); returns the headers' retry-after. */
  private applyBudget(k: KeyEntry, report: RateLimitReport | undefined, now: number): number | undefined {
    if (!report) return undefined;
    const h = report.headers && Object.keys(report.headers).length > 0 ? parseRateLimitHeaders(report.headers, now) : undefined;
    const b = k.budget;
    const fallbackReset = now + k.pool.cfg.defaultCooldownMs;
    applyRequestsReport(
      b,
      {
        remaining: optionalCount(report.requestsRemaining) ?? optionalCount(h?.requestsRemaining),
        limit: optionalCount(report.requestsLimit) ?? optionalCount(h?.requestsLimit),
        resetMs: optionalCount(report.requestsResetMs) ?? optionalCount(h?.requestsResetMs),
      },
      now,
      fallbackReset,
    );
    const tokensRemaining = optionalCount(report.tokensRemaining) ?? optionalCount(h?.tokensRemaining);
    const tokensReset = optionalCount(report.tokensResetMs) ?? optionalCount(h?.tokensResetMs);
    const tokensLimit = optionalCount(report.tokensLimit) ?? optionalCount(h?.tokensLimit);
    if (tokensRemaining !== undefined) {
      b.tokensRemaining = tokensRemaining;
      b.tokensResetAt = tokensReset !== undefined ? now + tokensReset : tokensRemaining === 0 ? fallbackReset : undefined;
    } else if (tokensReset !== undefined) {
      b.tokensResetAt = now + tokensReset;
    }
    if (tokensLimit !== undefined) b.tokensLimit = tokensLimit;
    refreshHot(k);
    this.scheduleBudgetWake(k, now);
    this.touch(k);
    return optionalCount(h?.retryAfterMs);
  }

  /** A grant spends one request of the estimate; running it out arms the wake for the next one. */
  private debitBudget(k: KeyEntry, now: number): void {
    debitRequest(k.budget, now, now + k.pool.cfg.defaultCooldownMs);
    k.requestsBlockedUntil = requestsBlockedUntil(k.budget);
    if (k.requestsBlockedUntil > now) this.scheduleBudgetWake(k, now);
  }

  /** Wakes waiters when the request budget next allows one, or at the next token budget reset. */
  private scheduleBudgetWake(k: KeyEntry, now: number): void {
    const b = k.budget;
    let at = Infinity;
    if (k.requestsBlockedUntil > now) at = k.requestsBlockedUntil;
    if (b.tokensRemaining !== undefined && b.tokensResetAt !== undefined && b.tokensResetAt > now) at = Math.min(at, b.tokensResetAt);
    if (at === Infinity) this.heap.cancel(k.budgetTimer);
    else this.schedule(k.budgetTimer, at, now);
  }

  // ---- timers -------------------------------------------------------------------------------

  /** Applies every deadline due by now, so no call ever sees a stale lease, cooldown or circuit. */
  private tick(): number {
    const now = this.clock.now();
    const top = this.heap.peek();
    if (top && top.at <= now) this.runDue(now);
    return now;
  }

  private readonly onTimer = (): void => {
    this.armed = undefined;
    this.armedAt = undefined;
    if (!this.closed) this.runDue(this.clock.now());
  };

  private runDue(now: number): void {
    for (let item = this.heap.peek(); item && item.at <= now; item = this.heap.peek()) {
      this.heap.pop();
      this.fire(item, now);
    }
    this.arm(now);
  }

  private fire(item: TimerItem, now: number): void {
    switch (item.kind) {
      case "lease": {
        const pool = item.key.pool;
        this.endLease(item, "expired", "expired", now);
        this.emit("lease_expired", now, pool.cfg.name, item.key.cfg.id, item.id);
        this.pump(pool, now);
        return;
      }
      case "waiter":
        this.dropWaiter(item);
        item.reject(this.noKeyAvailable(item.pool, now, item.input.estimatedTokens, item.exclude));
        return;
      case "cooldown":
        this.onCooldownEnd(item, now);
        return;
      case "circuit":
        this.onCircuitTimer(item, now);
        return;
      case "budget":
        this.scheduleBudgetWake(item.key, now);
        this.pump(item.key.pool, now);
        return;
    }
  }

  private onCooldownEnd(t: KeyTimer, now: number): void {
    const k = t.key;
    k.cooldownUntil = undefined;
    this.touch(k);
    this.emit("cooldown_ended", now, k.pool.cfg.name, k.cfg.id);
    this.pump(k.pool, now);
  }

  private onCircuitTimer(t: KeyTimer, now: number): void {
    const k = t.key;
    if (k.circuitState !== "open") return;
    k.circuitState = "half_open";
    k.circuitOpenUntil = undefined;
    this.touch(k);
    this.emit("circuit_half_opened", now, k.pool.cfg.name, k.cfg.id);
    this.pump(k.pool, now);
  }

  private schedule(item: TimerItem, at: number, now: number): void {
    this.heap.schedule(item, at);
    if (this.armedAt === undefined || at < this.armedAt) this.arm(now);
  }

  /** Keeps one clock timer armed for the earliest deadline; a later-armed timer is left alone and re-arms when it fires. */
  private arm(now: number): void {
    if (this.closed) return;
    const top = this.heap.peek();
    if (!top) return;
    if (this.armedAt !== undefined && this.armedAt <= top.at) return;
    if (this.armed !== undefined) this.clock.clearTimeout(this.armed);
    const delay = Math.min(Math.max(0, top.at - now), MAX_TIMER_DELAY_MS);
    this.armedAt = now + delay;
    this.armed = this.clock.setTimeout(this.onTimer, delay);
  }

  // ---- pools and keys -----------------------------------------------------------------------

  private insertPool(cfg: PoolConfig): PoolEntry {
    const pool: PoolEntry = {
      cfg: { ...cfg },
      keys: new Map(),
      keyList: [],
      cursor: 0,
      waitHead: undefined,
      waitTail: undefined,
      waiting: 0,
      active: 0,
      exhausted: false,
    };
    this.pools.set(cfg.name, pool);
    return pool;
  }

  private insertKey(pool: PoolEntry, cfg: KeyConfig): KeyEntry {
    const k = newKeyEntry({ ...cfg, metadata: { ...cfg.metadata } }, pool);
    k.slot = pool.keyList.length;
    pool.keyList.push(k);
    pool.keys.set(cfg.id, k);
    return k;
  }

  /** Each key's runtime state when the store reads it, skipping keys removed (or whose pool was deleted) since. */
  private *readKeys(changed: KeyEntry[]): Generator<KeyRuntime> {
    for (const k of changed) {
      if (this.pools.get(k.pool.cfg.name)?.keys.get(k.cfg.id) === k) yield this.keyRuntime(k);
    }
  }

  private keyRuntime(k: KeyEntry): KeyRuntime {
    return {
      pool: k.pool.cfg.name,
      keyId: k.cfg.id,
      autoDisabled: k.autoDisabled && { ...k.autoDisabled },
      draining: k.draining && { ...k.draining },
      cooldownUntil: k.cooldownUntil,
      rateLimitStreak: k.rateLimitStreak,
      rateLimitStreakStart: k.rateLimitStreakStart,
      circuitState: k.circuitState,
      circuitOpenUntil: k.circuitOpenUntil,
      circuitOpenCount: k.circuitOpenCount,
      consecutiveFailures: k.consecutiveFailures,
      emaLatencyMs: k.emaLatencyMs,
      outcomes: k.outcomes.export(),
      grantsPerSecond: k.grants.export(),
      budget: { ...k.budget },
      totalLeases: k.totalLeases,
      inputTokens: k.inputTokens,
      outputTokens: k.outputTokens,
    };
  }

  private restoreKey(k: KeyEntry, r: KeyRuntime, now: number): void {
    k.autoDisabled = r.autoDisabled && { ...r.autoDisabled };
    k.draining = r.draining && { ...r.draining };
    k.rateLimitStreak = r.rateLimitStreak;
    k.rateLimitStreakStart = r.rateLimitStreakStart;
    k.circuitState = r.circuitState;
    k.circuitOpenUntil = r.circuitOpenUntil;
    k.circuitOpenCount = r.circuitOpenCount;
    k.consecutiveFailures = r.consecutiveFailures;
    k.emaLatencyMs = r.emaLatencyMs;
    k.outcomes = OutcomeWindow.from(r.outcomes);
    k.grants = GrantWindow.from(r.grantsPerSecond);
    k.budget = { ...r.budget };
    refreshHot(k);
    k.totalLeases = r.totalLeases;
    k.inputTokens = r.inputTokens;
    k.outputTokens = r.outputTokens;
    if (r.cooldownUntil !== undefined) {
      k.cooldownUntil = r.cooldownUntil;
      this.heap.schedule(k.cooldownTimer, r.cooldownUntil);
    }
    if (k.circuitState === "open") this.heap.schedule(k.circuitTimer, k.circuitOpenUntil ?? now);
    this.scheduleBudgetWake(k, now);
  }

  private finishDrain(k: KeyEntry, now: number): void {
    if (k.draining?.remove) {
      this.dropKey(k, now);
      return;
    }
    k.draining = undefined;
    refreshHot(k);
    this.touch(k);
  }

  private dropKey(k: KeyEntry, now: number): void {
    const pool = k.pool;
    this.cancelKeyTimers(k);
    const last = pool.keyList.pop()!;
    if (last !== k) {
      pool.keyList[k.slot] = last;
      last.slot = k.slot;
    }
    pool.keys.delete(k.cfg.id);
    this.removedKeys.push({ pool: pool.cfg.name, keyId: k.cfg.id });
    this.changed = true;
    this.emit("key_removed", now, pool.cfg.name, k.cfg.id);
  }

  private cancelKeyTimers(k: KeyEntry): void {
    this.heap.cancel(k.cooldownTimer);
    this.heap.cancel(k.circuitTimer);
    this.heap.cancel(k.budgetTimer);
  }

  /** "k_" and 8 base32 characters from the injected random source; crypto takes over if it keeps colliding. */
  private newKeyId(pool: PoolEntry): string {
    for (let attempt = 0; ; attempt++) {
      let id = "k_";
      for (let i = 0; i < 8; i++) {
        const r = attempt < 8 ? this.random() : randomInt(ID_ALPHABET.length) / ID_ALPHABET.length;
        id += ID_ALPHABET[Math.min(ID_ALPHABET.length - 1, Math.floor(r * ID_ALPHABET.length))];
      }
      if (!pool.keys.has(id)) return id;
    }
  }

  private poolEntry(name: string): PoolEntry {
    const pool = this.pools.get(name);
    if (!pool) throw new DomainError("pool_not_found", `pool "${name}" not found`);
    return pool;
  }

  private keyEntry(pool: string, keyId: string): KeyEntry {
    const k = this.poolEntry(pool).keys.get(keyId);
    if (!k) throw new DomainError("key_not_found", `key "${keyId}" not found in pool "${pool}"`);
    return k;
  }

  private view(k: KeyEntry): KeyView {
    return { config: { ...k.cfg, metadata: { ...k.cfg.metadata } }, state: keyState(k), stateReason: keyStateReason(k) };
  }

  private keyStats(k: KeyEntry, now: number): KeyStatsView {
    return {
      keyId: k.cfg.id,
      label: k.cfg.label,
      state: keyState(k),
      eligible: isEligible(k, now, 0, undefined),
      activeLeases: k.active,
      maxConcurrency: k.cfg.maxConcurrency,
      emaLatencyMs: k.emaLatencyMs,
      successRate: this.successRate(k, now),
      consecutiveFailures: k.consecutiveFailures,
      circuitState: k.circuitState,
      circuitOpenUntil: k.circuitOpenUntil,
      cooldownUntil: k.cooldownUntil,
      cooldownRemainingMs: k.cooldownUntil !== undefined ? Math.max(0, k.cooldownUntil - now) : 0,
      budget: budgetView(k.budget, now),
      totalLeases: k.totalLeases,
      recentLeases: recentGrants(k, now),
      inputTokens: k.inputTokens,
      outputTokens: k.outputTokens,
    };
  }

  private emit(type: EventType, time: number, pool: string, keyId?: string, leaseId?: string, reason?: string, until?: number): void {
    if (!this.onEvent) return;
    const e: DomainEvent = { type, time, pool };
    if (keyId !== undefined) e.keyId = keyId;
    if (leaseId !== undefined) e.leaseId = leaseId;
    if (reason !== undefined) e.reason = reason;
    if (until !== undefined) e.until = until;
    try {
      this.onEvent(e);
    } catch {
      // A subscriber's failure must not break the engine.
    }
  }
}
