// The pool engine: configuration, the lease lifecycle and fair waiting (DESIGN "Semantics", rules
// 1-12), over the keys (key.ts), their health (health.ts), the ended leases (ended-leases.ts), change
// tracking for snapshots (snapshot-changes.ts) and one timer scheduler (scheduler.ts). Pure and
// synchronous: no I/O, time only from the injected Clock.
import { randomInt } from "node:crypto";
import { budgetView, optionalCount } from "./budget.js";
import { validateKey, validatePool } from "./config.js";
import { EndedLeases, type EndReason } from "./ended-leases.js";
import { DomainError, invalidArgument } from "./errors.js";
import { EventSink } from "./events.js";
import { classifyStatus, Health } from "./health.js";
import { isEligible, KeyEntry, keyState, keyStateReason } from "./key.js";
import { LeaseTokens, type LeaseClaims } from "./lease-token.js";
import { joinGroup, joinTier, leaveTier, newPoolEntry, restorePool, syncGroups } from "./pool.js";
import { Scheduler } from "./scheduler.js";
import { SnapshotChanges } from "./snapshot-changes.js";
import type { PoolSecrets } from "./redact.js";
import type { Lease, PoolEntry, TimerItem, Waiter } from "./state.js";
import { chooseKey, earlierTierEligible } from "./strategies.js";
import { countOutcome } from "./usage.js";
import type {
  AcquireInput,
  Clock,
  DomainEvent,
  FailureClass,
  FailureReport,
  Grant,
  KeyConfig,
  KeyInput,
  KeyStatsView,
  KeyView,
  LeaseGoneReason,
  LeaseOutcome,
  LeaseRecord,
  PoolConfig,
  PoolInput,
  PoolStatsView,
  QuotaGroupStatsView,
  RateLimitedReport,
  Renewal,
  RuntimeChanges,
  RuntimeSnapshot,
  SuccessReport,
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
  /**
   * Whether this process may act on the pool's deadlines now (with several replicas: it holds the pool under
   * a term it still trusts). A deadline of a pool it does not serve waits for resumePool; default always.
   */
  serves?: (pool: string) => boolean;
  /** Called synchronously whenever a lease ends, however it ended (the journal records ends); must not throw. */
  onLeaseEnded?: (leaseId: string, pool: string, epoch: number, seq: number) => void;
  /** Most ended lease ids kept for the next export of changes (default 1,000,000); beyond it the next export is full. */
  maxEndedUnexported?: number;
  /** How many of this boot's latest grants remember why they ended (default 2^20, a byte each); older ones answer from the token. */
  endedReasons?: number;
}

export type PoolWithCount = PoolConfig & { keyCount: number };

/** The engine alone ends over 100,000 leases a second, and snapshots may come 10 s apart while the database is away. */
const ENDED_LEASES_CAP = 1_000_000;
const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
/** A pool is back on its first tier once that tier has lent every key for longer than this. */
const TIER_RETURN_MS = 1_000;

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

function tooManyTokens(pool: PoolEntry, tokens: number, estimated: boolean): DomainError {
  const what = estimated ? `${tokens} tokens` : `the pool's default estimate of ${tokens} tokens`;
  return invalidArgument("estimated_tokens", `${what} exceed every key's whole tokens_per_minute in pool "${pool.cfg.name}" (at most ${pool.tokenCapacity})`);
}

function checkMs(v: number, field: string): void {
  if (!Number.isFinite(v) || v < 0) throw invalidArgument(field, "must be a non-negative duration");
}

export class PoolEngine {
  private readonly clock: Clock;
  private readonly tokens: LeaseTokens;
  private readonly epoch: number;
  private readonly random: () => number;
  private readonly serves: (pool: string) => boolean;
  private readonly events: EventSink;
  private readonly onLeaseEnded: EngineOptions["onLeaseEnded"];
  private readonly timers: Scheduler<TimerItem>;
  private readonly health: Health;
  private readonly ended: EndedLeases;
  private readonly changes: SnapshotChanges;
  private readonly pools = new Map<string, PoolEntry>();
  private readonly live = new Map<string, Lease>();
  private seq = 0;
  private grantHighWater: Record<number, number> = {};
  private closed = false;

  constructor(opts: EngineOptions) {
    this.clock = opts.clock;
    this.tokens = new LeaseTokens(opts.leaseSecret);
    this.epoch = opts.epoch;
    this.random = opts.random ?? Math.random;
    this.serves = opts.serves ?? (() => true);
    this.events = new EventSink(opts.onEvent);
    this.onLeaseEnded = opts.onLeaseEnded;
    this.timers = new Scheduler<TimerItem>(opts.clock, (item, now) => this.fire(item, now));
    this.health = new Health(this.timers, this.events);
    this.ended = new EndedLeases(opts.epoch, opts.endedReasons ?? 2 ** 20);
    this.changes = new SnapshotChanges(opts.maxEndedUnexported ?? ENDED_LEASES_CAP);
  }

  /** Something in runtime state changed since markClean(). */
  get dirty(): boolean {
    return this.changes.dirty;
  }

  markClean(): void {
    this.changes.markClean();
  }

  // ---- configuration ------------------------------------------------------------------------

  preparePool(input: PoolInput, existing?: PoolConfig): PoolConfig {
    const cfg = validatePool(input, existing, this.clock.now());
    if (!existing && this.pools.has(cfg.name)) throw new DomainError("pool_exists", `pool "${cfg.name}" already exists`);
    const secrets = this.pools.get(cfg.name)?.secrets;
    return secrets ? { ...cfg, description: secrets.redact(cfg.description) } : cfg;
  }

  /** A key's configuration as it will be stored: validated, its text fields free of the pool's secrets and its own. */
  prepareKey(input: KeyInput, existing?: KeyConfig): KeyConfig {
    const now = this.clock.now();
    const pool = this.poolEntry(input.pool);
    if (existing) {
      if (input.id !== undefined && input.id !== existing.id) throw invalidArgument("key.id", "cannot be changed");
      return redactKey(validateKey({ ...input, id: existing.id }, existing, now), pool.secrets);
    }
    const cfg = validateKey({ ...input, id: input.id || this.newKeyId(pool) }, undefined, now);
    if (pool.keys.has(cfg.id)) throw new DomainError("key_exists", `key "${cfg.id}" already exists in pool "${pool.cfg.name}"`);
    return redactKey(cfg, pool.secrets);
  }

  /** `text` with every secret of the pool's keys masked: what a caller's text about the pool is stored and shown as. */
  redact(pool: string, text: string): string {
    return this.poolEntry(pool).secrets.redact(text);
  }

  createPool(cfg: PoolConfig): void {
    const now = this.timers.tick();
    if (this.pools.has(cfg.name)) throw new DomainError("pool_exists", `pool "${cfg.name}" already exists`);
    syncGroups(this.insertPool(cfg), now);
    this.events.emit("pool_created", now, cfg.name);
  }

  updatePool(cfg: PoolConfig): void {
    const now = this.timers.tick();
    const pool = this.poolEntry(cfg.name);
    pool.cfg = { ...cfg, quotaGroups: { ...cfg.quotaGroups } };
    syncGroups(pool, now);
    this.changes.poolChanged(pool);
    this.events.emit("pool_updated", now, cfg.name);
    this.pump(pool, now);
  }

  checkDeletePool(name: string, force: boolean): void {
    const pool = this.poolEntry(name);
    if (!force && pool.active > 0) {
      throw new DomainError("pool_has_leases", `pool "${name}" has ${pool.active} live leases; delete with force to revoke them`);
    }
  }

  deletePool(name: string): void {
    const now = this.timers.tick();
    const pool = this.poolEntry(name);
    for (const k of pool.keyList) {
      k.stopDraining();
      this.revokeAll(k, now, "pool deleted");
      this.health.cancelTimers(k);
      this.timers.cancel(pool.wake);
      this.changes.keyRemoved(name, k.cfg.id);
    }
    for (let w = pool.waitHead; w; w = pool.waitHead) {
      this.dropWaiter(w);
      w.reject(new DomainError("pool_not_found", `pool "${name}" was deleted`));
    }
    this.pools.delete(name);
    this.changes.poolDeleted();
    this.events.emit("pool_deleted", now, name);
  }

  getPool(name: string): PoolWithCount {
    const pool = this.poolEntry(name);
    return { ...pool.cfg, keyCount: pool.keyList.length };
  }

  listPools(): PoolWithCount[] {
    return [...this.pools.values()].map((p) => ({ ...p.cfg, keyCount: p.keyList.length }));
  }

  addKey(cfg: KeyConfig): void {
    const now = this.timers.tick();
    const pool = this.poolEntry(cfg.pool);
    if (pool.keys.has(cfg.id)) throw new DomainError("key_exists", `key "${cfg.id}" already exists in pool "${cfg.pool}"`);
    const k = this.insertKey(pool, cfg, now);
    joinGroup(pool, k);
    this.changes.keyChanged(k);
    this.events.emit("key_added", now, cfg.pool, cfg.id);
    this.pump(pool, now);
  }

  updateKey(cfg: KeyConfig): void {
    const now = this.timers.tick();
    const k = this.keyEntry(cfg.pool, cfg.id);
    const moves = cfg.priority !== k.cfg.priority;
    if (moves) leaveTier(k.pool, k);
    k.configure({ ...cfg, metadata: { ...cfg.metadata }, limits: { ...cfg.limits } }, now);
    if (moves) joinTier(k.pool, k);
    syncGroups(k.pool, now);
    k.pool.secrets.changed();
    this.events.emit("key_updated", now, cfg.pool, cfg.id);
    this.pump(k.pool, now);
  }

  /** With drain and live leases the key lends no more and is removed (event key_removed) when its last lease ends. */
  removeKey(pool: string, keyId: string, drain: boolean): { removedNow: boolean } {
    const now = this.timers.tick();
    const k = this.keyEntry(pool, keyId);
    if (drain && k.active > 0) {
      k.drain(true);
      this.events.emit("key_disabled", now, pool, keyId, undefined, "removing: draining");
      return { removedNow: false };
    }
    k.stopDraining();
    this.revokeAll(k, now, "key removed");
    this.dropKey(k, now);
    return { removedNow: true };
  }

  /** Clears a manual disable and an auto-disable (AUTH / QUOTA_EXHAUSTED). */
  enableKey(pool: string, keyId: string): KeyView {
    const now = this.timers.tick();
    const k = this.keyEntry(pool, keyId);
    if (k.draining?.remove) throw new DomainError("key_not_found", `key "${keyId}" is being removed`);
    k.enable();
    this.events.emit("key_enabled", now, pool, keyId);
    this.pump(k.pool, now);
    return this.view(k);
  }

  /** Manual disable; without drain its live leases are revoked now. */
  disableKey(pool: string, keyId: string, drain: boolean, reason: string): KeyView {
    const now = this.timers.tick();
    const k = this.keyEntry(pool, keyId);
    k.disable(reason);
    this.events.emit("key_disabled", now, pool, keyId, undefined, reason);
    if (drain && k.active > 0 && !k.draining) k.drain(false);
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
    const now = this.timers.tick();
    if (this.closed) throw new DomainError("cancelled", "the engine is shutting down");
    const pool = this.poolEntry(input.pool);
    checkMs(input.waitTimeoutMs, "wait_timeout");
    if (input.ttlMs !== undefined) checkMs(input.ttlMs, "lease_ttl");
    if (!Number.isFinite(input.estimatedTokens) || input.estimatedTokens < 0) {
      throw invalidArgument("estimated_tokens", "must not be negative");
    }
    if (pool.keyList.length === 0) throw new DomainError("pool_empty", `pool "${pool.cfg.name}" has no keys`);
    const tokens = input.estimatedTokens > 0 ? input.estimatedTokens : pool.cfg.defaultEstimatedTokens;
    if (tokens > pool.tokenCapacity) throw tooManyTokens(pool, tokens, input.estimatedTokens > 0);
    const exclude = input.excludeKeyIds.length > 0 ? new Set(input.excludeKeyIds) : undefined;
    // Queued waiters cannot use any eligible key (pump keeps that true, and the key the oldest holds is not eligible), so this never barges.
    const k = this.pick(pool, now, input, tokens, exclude);
    if (k) return this.grant(pool, k, input, tokens, now);
    if (!pool.exhausted) {
      pool.exhausted = true;
      this.events.emit("pool_exhausted", now, pool.cfg.name);
    }
    if (input.waitTimeoutMs <= 0) throw this.noKeyAvailable(pool, now, tokens, exclude);
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
        tokens,
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
      this.timers.schedule(w, now + input.waitTimeoutMs, now);
      if (pool.declaresBudgets) {
        if (!pool.claimant && tokens > 0) this.claimFor(pool, w, now);
        this.armWake(pool, this.budgetWakeFor(pool, w, now), now, true);
      }
      if (signal) {
        w.onAbort = () => {
          const claimed = pool.claimant === w;
          this.dropWaiter(w);
          reject(new DomainError("cancelled", "acquire was cancelled"));
          if (claimed) this.pump(pool, this.timers.tick());
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
    });
  }

  release(leaseId: string, report: SuccessReport): void {
    const now = this.timers.tick();
    // The late-report callback is only built off the hot path.
    const lease = this.live.get(leaseId) ?? this.findLease(leaseId, now, (k) => (this.health.success(k, report, now), this.countTokens(k, report)));
    const k = lease.key;
    this.endLease(lease, "released", now, "success");
    this.reconcile(lease, report, now);
    this.health.success(k, report, now);
    this.countTokens(k, report);
    this.pump(k.pool, now);
  }

  /** Ends the lease and applies the outcome class (given, or derived from httpStatus); returns the class applied. */
  markFailed(leaseId: string, failure: FailureReport): FailureClass | "rate_limited" {
    const now = this.timers.tick();
    const outcome = failure.reason ?? classifyStatus(failure.httpStatus, failure.message);
    const redacted = (k: KeyEntry): FailureReport => ({ ...failure, message: k.pool.secrets.redact(failure.message) });
    const lease = this.live.get(leaseId) ?? this.findLease(leaseId, now, (k) => this.health.failure(k, outcome, redacted(k), now));
    const k = lease.key;
    this.endLease(lease, "released", now, outcome);
    this.health.failure(k, outcome, redacted(k), now);
    this.pump(k.pool, now);
    return outcome;
  }

  markRateLimited(leaseId: string, report: RateLimitedReport): { cooldownUntil: number } {
    const now = this.timers.tick();
    const lease = this.live.get(leaseId) ?? this.findLease(leaseId, now, (k) => this.health.rateLimited(k, report, now));
    const k = lease.key;
    this.endLease(lease, "released", now, "rate_limited");
    const cooldownUntil = this.health.rateLimited(k, report, now);
    this.pump(k.pool, now);
    return { cooldownUntil };
  }

  /** Extends a live lease to now + ttl (clamped; default its current ttl). An ended lease is always an error. */
  renew(leaseId: string, ttlMs?: number): Renewal {
    const now = this.timers.tick();
    if (ttlMs !== undefined) checkMs(ttlMs, "ttl");
    const lease = this.findLease(leaseId, now);
    const cfg = lease.key.pool.cfg;
    const ttl = Math.min(Math.max(Math.floor(ttlMs ?? lease.record.ttlMs), cfg.minTtlMs), cfg.maxTtlMs);
    const expiresAt = now + ttl;
    lease.record = { ...lease.record, expiresAt, ttlMs: ttl };
    this.timers.schedule(lease, expiresAt, now);
    this.changes.leaseChanged(lease);
    return { leaseId, expiresAt, ttlMs: ttl, renewIntervalMs: Math.floor(ttl / 3) };
  }

  /** Ends a live lease now; returns it as it was. */
  revokeLease(leaseId: string, reason: string): LeaseRecord {
    const now = this.timers.tick();
    const lease = this.findLease(leaseId, now);
    const record = { ...lease.record };
    this.revoke(lease, now, lease.key.pool.secrets.redact(reason));
    this.pump(lease.key.pool, now);
    return record;
  }

  listLeases(pool: string, keyId?: string): LeaseRecord[] {
    this.timers.tick();
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
    const now = this.timers.tick();
    const p = this.poolEntry(pool);
    const keys = p.keyList.map((k) => this.keyStats(k, now));
    const quotaGroups: QuotaGroupStatsView[] = [...p.groups.values()].map((g) => ({
      name: g.name,
      limits: { ...g.limits },
      remaining: g.budget?.remaining(now) ?? {},
      usage: { ...g.usage },
      keys: g.members,
    }));
    const serving = p.tiers.find((t) => t.keys.some((k) => isEligible(k, now, 0, undefined))) ?? p.tiers[p.tiers.length - 1];
    return {
      pool,
      totalKeys: keys.length,
      eligibleKeys: keys.filter((k) => k.eligible).length,
      activeLeases: p.active,
      waiters: p.waiting,
      keys,
      usage: { ...p.usage },
      quotaGroups,
      servingPriority: serving?.priority ?? 0,
      affinities: p.affinities.size,
    };
  }

  /** Calls fn once if the lease ends by revocation; returns the unsubscribe function. Throws like renew for an ended lease. */
  watchLease(leaseId: string, fn: (reason: LeaseGoneReason, message: string) => void): () => void {
    const lease = this.findLease(leaseId, this.timers.tick());
    (lease.watchers ??= []).push(fn);
    return () => {
      const i = lease.watchers?.indexOf(fn) ?? -1;
      if (i >= 0) lease.watchers!.splice(i, 1);
    };
  }

  // ---- persistence --------------------------------------------------------------------------

  /** A consistent copy of runtime state and live leases (never secrets); lease records are shared and read-only. */
  exportRuntime(): RuntimeSnapshot {
    return this.changes.exportAll(this.pools.values(), this.live, this.clock.now());
  }

  /**
   * What changed since the previous export (of either kind), so a steady snapshot copies only that;
   * undefined when too much changed to keep track of: export in full instead.
   */
  exportChanges(): RuntimeChanges | undefined {
    return this.changes.exportSince(this.pools.values(), (k) => this.pools.get(k.pool.cfg.name)?.keys.get(k.cfg.id) === k, this.clock.now());
  }

  /** Restores configuration and the last snapshot before traffic starts; deadlines are absolute, so nothing resets. */
  load(pools: PoolConfig[], keys: KeyConfig[], runtime: RuntimeSnapshot | undefined, grantHighWater: Record<number, number>): void {
    const now = this.clock.now();
    this.grantHighWater = { ...grantHighWater };
    this.seq = Math.max(this.seq, grantHighWater[this.epoch] ?? 0);
    for (const p of pools) if (!this.pools.has(p.name)) this.insertPool(p);
    for (const cfg of keys) {
      const pool = this.pools.get(cfg.pool);
      if (pool && !pool.keys.has(cfg.id)) this.insertKey(pool, cfg, now);
    }
    for (const pool of this.pools.values()) syncGroups(pool, now);
    for (const r of runtime?.keys ?? []) {
      const k = this.pools.get(r.pool)?.keys.get(r.keyId);
      if (!k) continue;
      k.restore(r, now);
      this.health.restored(k, now);
    }
    for (const r of runtime?.pools ?? []) {
      const pool = this.pools.get(r.pool);
      if (pool) restorePool(pool, r, now);
    }
    for (const l of runtime?.leases ?? []) {
      const k = this.pools.get(l.pool)?.keys.get(l.keyId);
      const claims = this.claimsOf(l.leaseId);
      if (!k || !claims || this.live.has(l.leaseId)) continue;
      if (claims.epoch === this.epoch) this.seq = Math.max(this.seq, claims.seq);
      if (l.expiresAt <= now) {
        this.ended.remember(l.leaseId, claims, "expired", now);
        continue;
      }
      this.addLease(k, claims, { ...l }, false, now);
    }
    for (const pool of this.pools.values()) {
      for (const k of [...pool.keyList]) if (k.draining && k.active === 0) this.finishDrain(k, now);
    }
  }

  /** Whether the pool is in memory (with several replicas: this one holds it). */
  hasPool(name: string): boolean {
    return this.pools.has(name);
  }

  /**
   * This process stops serving the pool for now (it cannot renew its term): its waiters are answered
   * pool_not_served, and its deadlines wait (serves() says false) until resumePool or unloadPool.
   */
  suspendPool(name: string, retryAfterMs: number): void {
    const pool = this.pools.get(name);
    if (pool) this.rejectWaiters(pool, retryAfterMs);
  }

  /** Serves the pool again (its term renewed): deadlines that came meanwhile fire now. */
  resumePool(name: string): void {
    const pool = this.pools.get(name);
    if (!pool) return;
    const now = this.clock.now();
    const parked = pool.parked;
    pool.parked = [];
    for (const item of parked) {
      if (item.heapPos >= 0) continue;
      if (item.kind === "waiter") continue;
      if (item.kind === "lease" ? this.live.get(item.id) !== item : item.kind === "budget_wake" ? item.pool !== pool : pool.keys.get(item.key.cfg.id) !== item.key) continue;
      this.timers.schedule(item, item.at, now);
    }
  }

  /**
   * Drops the pool from memory without ending, expiring or revoking anything and without a trace in the next
   * snapshot: another replica owns it now and holds its state. Waiters are answered pool_not_served.
   */
  unloadPool(name: string, retryAfterMs: number): void {
    const pool = this.pools.get(name);
    if (!pool) return;
    this.rejectWaiters(pool, retryAfterMs);
    for (const k of pool.keyList) {
      for (const lease of k.leases) {
        this.live.delete(lease.id);
        this.timers.cancel(lease);
      }
      this.health.cancelTimers(k);
    }
    this.timers.cancel(pool.wake);
    pool.parked = [];
    this.changes.forgetPool(name);
    this.pools.delete(name);
  }

  /** Whether the lease is live (granted and not yet ended) in this engine. */
  isLive(leaseId: string): boolean {
    return this.live.has(leaseId);
  }

  /** Epoch and generation of an authentic lease id, live or not (a Grant carries its own). */
  leaseSeq(leaseId: string): { epoch: number; seq: number } | undefined {
    const lease = this.live.get(leaseId);
    if (lease) return { epoch: lease.epoch, seq: lease.seq };
    const c = this.claimsOf(leaseId);
    return c && { epoch: c.epoch, seq: c.seq };
  }

  /** Stops the timer and rejects every waiter with "cancelled". */
  close(): void {
    this.closed = true;
    this.timers.close();
    for (const pool of this.pools.values()) {
      for (let w = pool.waitHead; w; w = pool.waitHead) {
        this.dropWaiter(w);
        w.reject(new DomainError("cancelled", "the engine is shutting down"));
      }
    }
  }

  // ---- leases -------------------------------------------------------------------------------

  /** The key for this request: its affinity's while that stays eligible (and no earlier tier has one), else the strategy's. */
  private pick(pool: PoolEntry, now: number, input: AcquireInput, tokens: number, exclude: Set<string> | undefined): KeyEntry | undefined {
    const affinity = input.affinity;
    if (affinity) {
      const k = pool.affinities.get(affinity);
      if (k && isEligible(k, now, tokens, exclude) && !earlierTierEligible(pool, k.tier!, now, tokens, exclude)) return k;
    }
    return chooseKey(pool, now, tokens, exclude, this.random);
  }

  private grant(pool: PoolEntry, k: KeyEntry, input: AcquireInput, tokens: number, now: number): Grant {
    const cfg = pool.cfg;
    const ttl = Math.min(Math.max(Math.floor(input.ttlMs ?? cfg.defaultTtlMs), cfg.minTtlMs), cfg.maxTtlMs);
    const seq = ++this.seq;
    const claims: LeaseClaims = { pool: cfg.name, keyId: k.cfg.id, epoch: this.epoch, seq, issuedAt: now, ttlMs: ttl };
    const id = this.tokens.issue(claims);
    const probe = k.circuitState === "half_open";
    const record = { leaseId: id, pool: cfg.name, keyId: k.cfg.id, holder: pool.secrets.redact(input.holder), acquiredAt: now, expiresAt: now + ttl, ttlMs: ttl };
    const lease = this.addLease(k, claims, record, probe, now);
    lease.reserved = tokens;
    k.reservedTokens += tokens;
    k.spend(tokens, now);
    k.countGrant(now);
    pool.usage.requests++;
    if (k.group) k.group.usage.requests++;
    if (input.affinity) pool.affinities.set(input.affinity, k);
    this.changes.poolChanged(pool);
    this.health.lent(k, now);
    this.noteTier(pool, k, now);
    pool.exhausted = false;
    this.events.emit("lease_granted", now, cfg.name, k.cfg.id, id);
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
      record,
      epoch: this.epoch,
      seq,
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
      group: k.group,
      watchers: undefined,
    };
    this.live.set(record.leaseId, lease);
    k.leases.add(lease);
    k.active++;
    k.pool.active++;
    if (probe) k.probes++;
    this.timers.schedule(lease, record.expiresAt, now);
    this.changes.leaseChanged(lease);
    return lease;
  }

  /**
   * The only place a lease ends: frees its slot once and remembers why it ended, for late calls.
   * `outcome` is what the holder reported, when a report ended it.
   */
  private endLease(lease: Lease, reason: EndReason, now: number, outcome?: LeaseOutcome, message = ""): void {
    this.live.delete(lease.id);
    this.timers.cancel(lease);
    const k = lease.key;
    k.leases.delete(lease);
    k.active--;
    k.pool.active--;
    if (lease.probe) k.probes--;
    if (lease.reserved !== undefined) k.reservedTokens -= lease.reserved;
    k.countOutcome(outcome);
    countOutcome(k.pool.usage, outcome);
    if (lease.group) countOutcome(lease.group.usage, outcome);
    this.changes.poolChanged(k.pool);
    this.ended.remember(lease.id, lease, reason, now);
    this.changes.leaseEnded(lease);
    this.onLeaseEnded?.(lease.id, k.pool.cfg.name, lease.epoch, lease.seq);
    this.events.leaseEnded(now, k.pool.cfg.name, k.cfg.id, lease.id, reason, outcome);
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

  /** Release reported usage: the reservation is refunded where it was more, charged where it was less. */
  private reconcile(lease: Lease, report: SuccessReport, now: number): void {
    if (lease.reserved === undefined || (report.inputTokens === undefined && report.outputTokens === undefined)) return;
    const used = Math.max(0, report.inputTokens ?? 0) + Math.max(0, report.outputTokens ?? 0);
    if (!Number.isFinite(used)) return;
    const delta = used - lease.reserved;
    lease.key.adjustTokens(delta, now);
    lease.group?.budget?.adjustTokens(delta, now);
  }

  /** The tokens a success reported, for the key's quota group and its pool (the key counts its own). */
  private countTokens(k: KeyEntry, report: SuccessReport): void {
    const input = optionalCount(report.inputTokens) ?? 0;
    const output = optionalCount(report.outputTokens) ?? 0;
    if (input === 0 && output === 0) return;
    k.pool.usage.inputTokens += input;
    k.pool.usage.outputTokens += output;
    if (k.group) {
      k.group.usage.inputTokens += input;
      k.group.usage.outputTokens += output;
    }
    this.changes.poolChanged(k.pool);
  }

  /** Events when a pool starts lending a later tier, and when its first tier has lent alone for TIER_RETURN_MS. */
  private noteTier(pool: PoolEntry, k: KeyEntry, now: number): void {
    const first = pool.tiers[0]!;
    if (k.tier !== first) {
      if (pool.fallbackLastGrant === undefined) {
        this.events.emit("tier_fallback", now, pool.cfg.name, k.cfg.id, undefined, `lending priority ${k.cfg.priority}: no key of priority ${first.priority} is eligible`);
      }
      pool.fallbackLastGrant = now;
    } else if (pool.fallbackLastGrant !== undefined && now - pool.fallbackLastGrant > TIER_RETURN_MS) {
      pool.fallbackLastGrant = undefined;
      this.events.emit("tier_restored", now, pool.cfg.name, k.cfg.id, undefined, `lending priority ${first.priority} again`);
    }
  }

  private revoke(lease: Lease, now: number, message: string): void {
    const k = lease.key;
    this.endLease(lease, "revoked", now, undefined, message);
    this.events.emit("lease_revoked", now, k.pool.cfg.name, k.cfg.id, lease.id, message);
  }

  private revokeAll(k: KeyEntry, now: number, message: string): void {
    for (const lease of [...k.leases]) this.revoke(lease, now, message);
  }

  /**
   * The live lease for an id, re-adopting an authentic one granted before a crash; otherwise throws
   * the reason it is gone. `late` applies a late outcome report to the key of an expired or revoked lease.
   */
  private findLease(id: string, now: number, late?: (k: KeyEntry) => void): Lease {
    const lease = this.live.get(id);
    if (lease) return lease;
    const c = this.tokens.verify(id);
    if (!c) throw goneError("unknown");
    // A later epoch is another replica's: one this engine never heard of (it started after this one loaded) granted nothing in its pools.
    if (c.epoch === this.epoch ? c.seq > this.seq : c.epoch > this.epoch && !(c.epoch in this.grantHighWater)) throw goneError("unknown");
    const ended = this.ended.recall(id, c, this.seq, late && (() => this.reportLate(c.pool, c.keyId, late, now)));
    if (ended) throw goneError(ended);
    const endedBy: LeaseGoneReason = c.issuedAt + c.ttlMs <= now ? "expired" : "released";
    if (c.epoch === this.epoch) throw goneError(endedBy);
    const highWater = this.grantHighWater[c.epoch];
    if ((highWater !== undefined && c.seq <= highWater) || endedBy === "expired") throw goneError(endedBy);
    const adopted = this.adopt(id, c, now);
    if (!adopted) throw goneError("revoked", "its key is gone, disabled or full since the restart");
    return adopted;
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
    this.events.emit("lease_granted", now, c.pool, c.keyId, id, "re-adopted after restart");
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

  /**
   * Serves queued waiters, oldest first, while some key is eligible for them. The oldest waiter left with a
   * reservation claims the key it can use soonest (claimFor); others may pass it on every other key. With
   * declared budgets, one timer wakes the pool at the earliest refill a waiter left needs.
   */
  private pump(pool: PoolEntry, now: number): void {
    if (!pool.waitHead) return;
    this.releaseClaim(pool);
    let wakeAt = Infinity;
    // A waiter without exclusions left unserved: nobody without exclusions needing as many tokens can be served either.
    let blockedTokens = Infinity;
    let w: Waiter | undefined = pool.waitHead;
    while (w) {
      const next: Waiter | undefined = w.next;
      if (w.tokens > pool.tokenCapacity) {
        this.dropWaiter(w);
        w.reject(tooManyTokens(pool, w.tokens, w.input.estimatedTokens > 0));
        w = next;
        continue;
      }
      const hopeless = !w.exclude && w.tokens >= blockedTokens;
      const k = hopeless ? undefined : this.pick(pool, now, w.input, w.tokens, w.exclude);
      if (k) {
        this.dropWaiter(w);
        w.resolve(this.grant(pool, k, w.input, w.tokens, now));
      } else if (!hopeless) {
        if (!w.exclude) blockedTokens = w.tokens;
        if (pool.declaresBudgets) {
          if (!pool.claimant && w.tokens > 0) this.claimFor(pool, w, now);
          wakeAt = Math.min(wakeAt, this.budgetWakeFor(pool, w, now));
        }
        // Nothing is eligible for an unrestricted waiter with no reservation, so nothing is for anyone behind it.
        if (!w.exclude && w.tokens <= 0) break;
      }
      w = next;
    }
    this.armWake(pool, wakeAt, now, false);
  }

  /** The oldest waiter with a reservation left unserved holds the key it can use soonest, so smaller ones cannot starve it. */
  private claimFor(pool: PoolEntry, w: Waiter, now: number): void {
    let best: KeyEntry | undefined;
    let bestAt = Infinity;
    for (const k of pool.keyList) {
      if (w.exclude?.has(k.cfg.id)) continue;
      const at = this.availableAt(k, now, w.tokens);
      if (at !== undefined && at < bestAt) {
        best = k;
        bestAt = at;
      }
    }
    if (!best) return;
    pool.claimant = w;
    pool.claimed = best;
    best.claimed = true;
  }

  private releaseClaim(pool: PoolEntry): void {
    if (pool.claimed) pool.claimed.claimed = false;
    pool.claimant = undefined;
    pool.claimed = undefined;
  }

  /** The earliest instant after now a declared budget of a key this waiter may use refills enough for it (Infinity: none). */
  private budgetWakeFor(pool: PoolEntry, w: Waiter, now: number): number {
    let best = Infinity;
    for (const k of pool.keyList) {
      if (!k.lendable || (k.claimed && pool.claimant !== w) || w.exclude?.has(k.cfg.id)) continue;
      const at = Math.max(k.declared?.readyAt(w.tokens) ?? 0, k.groupBudget?.readyAt(w.tokens) ?? 0);
      if (at > now && at < best) best = at;
    }
    return best;
  }

  /** Arms the pool's budget wake-up at `at` (Infinity: none); `earlierOnly` keeps an earlier one already armed. */
  private armWake(pool: PoolEntry, at: number, now: number, earlierOnly: boolean): void {
    const armed = pool.wake.heapPos >= 0;
    if (earlierOnly && armed && pool.wake.at <= at) return;
    if (at === Infinity) {
      if (armed) this.timers.cancel(pool.wake);
      return;
    }
    this.timers.schedule(pool.wake, at, now);
  }

  private rejectWaiters(pool: PoolEntry, retryAfterMs: number): void {
    for (let w = pool.waitHead; w; w = pool.waitHead) {
      this.dropWaiter(w);
      w.reject(new DomainError("pool_not_served", `pool "${pool.cfg.name}" is not served by this replica now: retry`, { retryAfterMs }));
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
    this.timers.cancel(w);
    if (w.signal && w.onAbort) w.signal.removeEventListener("abort", w.onAbort);
    if (pool.claimant === w) this.releaseClaim(pool);
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
      if (exclude?.has(k.cfg.id)) continue;
      const at = this.availableAt(k, now, estimatedTokens);
      if (at !== undefined && (best === undefined || at < best)) best = at;
    }
    return best;
  }

  /** The earliest instant the key is known to become eligible for a request reserving `estimatedTokens`, if any. */
  private availableAt(k: KeyEntry, now: number, estimatedTokens: number): number | undefined {
    const pool = k.pool;
    {
      if (!k.lendable) return undefined;
      let at = now;
      if (k.cooldownUntil !== undefined) at = Math.max(at, k.cooldownUntil);
      if (k.circuitState === "open" && k.circuitOpenUntil !== undefined) at = Math.max(at, k.circuitOpenUntil);
      at = Math.max(at, k.requestsBlockedUntil);
      if (k.tokensLeft === 0 || k.tokensLeft < estimatedTokens) at = Math.max(at, k.tokensKnownUntil);
      at = Math.max(at, k.declared?.readyAt(estimatedTokens) ?? 0, k.groupBudget?.readyAt(estimatedTokens) ?? 0);
      if (at === Infinity) return undefined;
      const full = k.cfg.maxConcurrency > 0 && k.active >= k.cfg.maxConcurrency;
      const probesFull = k.circuitState === "half_open" && k.probes >= pool.cfg.halfOpenProbes;
      if (full || probesFull) {
        let firstExpiry = Infinity;
        for (const l of k.leases) if ((full || l.probe) && l.record.expiresAt < firstExpiry) firstExpiry = l.record.expiresAt;
        if (firstExpiry === Infinity) return undefined;
        at = Math.max(at, firstExpiry);
      }
      return at;
    }
  }

  // ---- timers -------------------------------------------------------------------------------

  private fire(item: TimerItem, now: number): void {
    if (item.kind !== "waiter") {
      const pool = item.kind === "budget_wake" ? item.pool : item.key.pool;
      if (!this.serves(pool.cfg.name)) {
        pool.parked.push(item);
        return;
      }
    }
    switch (item.kind) {
      case "lease": {
        const pool = item.key.pool;
        this.endLease(item, "expired", now);
        this.events.emit("lease_expired", now, pool.cfg.name, item.key.cfg.id, item.id);
        this.pump(pool, now);
        return;
      }
      case "waiter": {
        const claimed = item.pool.claimant === item;
        this.dropWaiter(item);
        item.reject(this.noKeyAvailable(item.pool, now, item.tokens, item.exclude));
        if (claimed) this.pump(item.pool, now);
        return;
      }
      case "budget_wake":
        this.pump(item.pool, now);
        return;
      case "cooldown":
        this.health.cooldownEnded(item.key, now);
        this.pump(item.key.pool, now);
        return;
      case "circuit":
        if (this.health.halfOpen(item.key, now)) this.pump(item.key.pool, now);
        return;
      case "budget":
        this.health.scheduleBudgetWake(item.key, now);
        this.pump(item.key.pool, now);
        return;
    }
  }

  // ---- pools and keys -----------------------------------------------------------------------

  private insertPool(cfg: PoolConfig): PoolEntry {
    const pool = newPoolEntry(cfg);
    this.pools.set(cfg.name, pool);
    return pool;
  }

  /** The caller links it to its quota group (joinGroup, or syncGroups for the whole pool). */
  private insertKey(pool: PoolEntry, cfg: KeyConfig, now: number): KeyEntry {
    const k = new KeyEntry({ ...cfg, metadata: { ...cfg.metadata }, limits: { ...cfg.limits } }, pool, this.changes, now);
    k.slot = pool.keyList.length;
    pool.keyList.push(k);
    pool.keys.set(cfg.id, k);
    joinTier(pool, k);
    pool.secrets.changed();
    return k;
  }

  private finishDrain(k: KeyEntry, now: number): void {
    if (k.draining?.remove) this.dropKey(k, now);
    else k.stopDraining();
  }

  private dropKey(k: KeyEntry, now: number): void {
    const pool = k.pool;
    this.health.cancelTimers(k);
    if (pool.claimed === k) this.releaseClaim(pool);
    const last = pool.keyList.pop()!;
    if (last !== k) {
      pool.keyList[k.slot] = last;
      last.slot = k.slot;
    }
    pool.keys.delete(k.cfg.id);
    leaveTier(pool, k);
    pool.affinities.forget(k);
    syncGroups(pool, now);
    this.changes.poolChanged(pool);
    pool.secrets.changed();
    this.changes.keyRemoved(pool.cfg.name, k.cfg.id);
    this.events.emit("key_removed", now, pool.cfg.name, k.cfg.id);
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
    return { config: { ...k.cfg, metadata: { ...k.cfg.metadata }, limits: { ...k.cfg.limits } }, state: keyState(k), stateReason: keyStateReason(k), usage: k.usage };
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
      successRate: k.successRate(now),
      consecutiveFailures: k.consecutiveFailures,
      circuitState: k.circuitState,
      circuitOpenUntil: k.circuitOpenUntil,
      cooldownUntil: k.cooldownUntil,
      cooldownRemainingMs: k.cooldownUntil !== undefined ? Math.max(0, k.cooldownUntil - now) : 0,
      budget: budgetView(k.budget, now),
      totalLeases: k.totalLeases,
      recentLeases: k.recentGrants(now),
      inputTokens: k.inputTokens,
      outputTokens: k.outputTokens,
      priority: k.cfg.priority,
      quotaGroup: k.cfg.quotaGroup,
      limits: { ...k.cfg.limits },
      remaining: k.declared?.remaining(now) ?? {},
      reservedTokens: k.reservedTokens,
      usage: k.usage,
    };
  }
}

/** A key's free text (label, quota group, metadata, disable reason) with its own secret and the pool's masked. */
function redactKey(cfg: KeyConfig, secrets: PoolSecrets): KeyConfig {
  const redact = (text: string) => secrets.redact(text, cfg.secret);
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(cfg.metadata)) metadata[redact(name)] = redact(value);
  return { ...cfg, label: redact(cfg.label), quotaGroup: redact(cfg.quotaGroup), metadata, disabledReason: redact(cfg.disabledReason) };
}
