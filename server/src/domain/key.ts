// A key of a pool: its configuration, its runtime state, and copies of both that the eligibility scan
// reads (DESIGN rule 6). The state is read-only outside this class: every change goes through a method
// here, which recomputes the copies and marks the key for the next snapshot, so no rule can forget either.
import { applyRequestsReport, applyTokensReport, debitRequest, DeclaredBudget, requestsBlockedUntil, type CountReport } from "./budget.js";
import type { SnapshotChanges } from "./snapshot-changes.js";
import { GrantWindow, OutcomeWindow, type KeyTimer, type Lease, type PoolEntry, type QuotaGroup, type Tier } from "./state.js";
import { countOutcome } from "./usage.js";
import type { CircuitState, KeyConfig, KeyRuntime, KeyState, LeaseOutcome, Limits, OutcomeCounts, ProviderBudget, UsageView } from "./types.js";

type Writable<T> = { -readonly [P in keyof T]: T[P] };

/** What the scan reads besides the state itself, derived from configuration, disable state and budget. */
interface EligibilityCopies {
  lendable: boolean;
  maxConcurrency: number;
  weight: number;
  requestsBlockedUntil: number;
  tokensKnownUntil: number;
  tokensLeft: number;
  declared: DeclaredBudget | undefined;
  groupBudget: DeclaredBudget | undefined;
}

function sameLimits(a: Limits, b: Limits): boolean {
  return a.requestsPerMinute === b.requestsPerMinute && a.tokensPerMinute === b.tokensPerMinute && a.requestsPerDay === b.requestsPerDay;
}

export class KeyEntry {
  /** Index in pool.keyList. */
  slot = -1;
  /** Live leases, kept by the engine's lease lifecycle; `probes` of them hold a half-open probe slot. */
  active = 0;
  readonly leases = new Set<Lease>();
  probes = 0;
  /** Smooth weighted round robin running weight. */
  swrrCurrent = 0;
  /** Its runtime state changed since the last export (SnapshotChanges). */
  unsaved = true;
  /** Its tier, and its index in the tier's keys, kept by the engine. */
  tier: Tier | undefined = undefined;
  tierSlot = -1;
  /** Held for the pool's oldest waiter (PoolEntry.claimant), kept by the engine. */
  claimed = false;
  /** Tokens reserved by live leases, kept by the engine's lease lifecycle. */
  reservedTokens = 0;
  /** Its quota group in the pool, linked by the engine (undefined without one). */
  readonly group: QuotaGroup | undefined = undefined;

  // Copies the scan reads, kept on the entry so a scan over 10,000 keys touches one object per key.
  readonly lendable: boolean = false;
  readonly maxConcurrency: number = 0;
  readonly weight: number = 1;
  /** The request budget allows no request before this instant (0 when it does). */
  readonly requestsBlockedUntil: number = 0;
  /** Tokens budget known until this instant (0 when unknown), with the tokens left. */
  readonly tokensKnownUntil: number = 0;
  readonly tokensLeft: number = 0;
  /** The key's declared budgets, and its quota group's (undefined when none is declared). */
  readonly declared: DeclaredBudget | undefined = undefined;
  readonly groupBudget: DeclaredBudget | undefined = undefined;

  // Runtime state, as KeyRuntime persists it.
  readonly autoDisabled: KeyRuntime["autoDisabled"] = undefined;
  readonly draining: KeyRuntime["draining"] = undefined;
  readonly cooldownUntil: number | undefined = undefined;
  readonly rateLimitStreak: number = 0;
  readonly rateLimitStreakStart: number | undefined = undefined;
  readonly circuitState: CircuitState = "closed";
  readonly circuitOpenUntil: number | undefined = undefined;
  readonly circuitOpenCount: number = 0;
  readonly consecutiveFailures: number = 0;
  readonly emaLatencyMs: number | undefined = undefined;
  readonly totalLeases: number = 0;
  readonly inputTokens: number = 0;
  readonly outputTokens: number = 0;
  private outcomeCounts: OutcomeCounts = { successes: 0, rateLimited: 0, failures: 0, unreported: 0 };
  private outcomes = new OutcomeWindow();
  private grants = new GrantWindow();
  private providerBudget: ProviderBudget = {};

  readonly cooldownTimer: KeyTimer = { kind: "cooldown", key: this, at: 0, heapPos: -1, heapSeq: 0 };
  readonly circuitTimer: KeyTimer = { kind: "circuit", key: this, at: 0, heapPos: -1, heapSeq: 0 };
  readonly budgetTimer: KeyTimer = { kind: "budget", key: this, at: 0, heapPos: -1, heapSeq: 0 };

  constructor(
    readonly cfg: KeyConfig,
    readonly pool: PoolEntry,
    private readonly changes: SnapshotChanges,
    now: number,
  ) {
    if (DeclaredBudget.declares(cfg.limits)) this.state().declared = new DeclaredBudget(cfg.limits, undefined, now);
    this.refresh();
  }

  /** Totals since the key was added. */
  get usage(): UsageView {
    return { requests: this.totalLeases, inputTokens: this.inputTokens, outputTokens: this.outputTokens, ...this.outcomeCounts };
  }

  get budget(): Readonly<ProviderBudget> {
    return this.providerBudget;
  }

  // ---- configuration and disable state (refresh the copies) ---------------------------------

  /** New configuration from an operator; new limits keep what each budget has left (up to its new limit). */
  configure(cfg: KeyConfig, now: number): void {
    const s = this.state();
    if (!sameLimits(cfg.limits, this.cfg.limits)) {
      if (!DeclaredBudget.declares(cfg.limits)) s.declared = undefined;
      else if (this.declared) this.declared.reconfigure(cfg.limits, now);
      else s.declared = new DeclaredBudget(cfg.limits, undefined, now);
      this.changed();
    }
    s.cfg = cfg;
    this.refresh();
  }

  /** Its quota group in the pool (the engine links it when the key or the pool's groups change). */
  linkGroup(group: QuotaGroup | undefined): void {
    this.state().group = group;
    this.state().groupBudget = group?.budget;
  }

  /** A manual disable. */
  disable(reason: string): void {
    this.state().cfg = { ...this.cfg, disabled: true, disabledReason: reason };
    this.refresh();
    this.changed();
  }

  /** Clears a manual disable, an auto-disable and draining. */
  enable(): void {
    const s = this.state();
    s.cfg = { ...this.cfg, disabled: false, disabledReason: "" };
    s.autoDisabled = undefined;
    s.draining = undefined;
    this.refresh();
    this.changed();
  }

  /** Lends no more; with `remove`, also shown disabled while its leases finish. */
  drain(remove: boolean): void {
    const s = this.state();
    s.draining = { remove };
    if (remove) s.cfg = { ...this.cfg, disabled: true, disabledReason: "removing: draining" };
    this.refresh();
    this.changed();
  }

  stopDraining(): void {
    this.state().draining = undefined;
    this.refresh();
    this.changed();
  }

  autoDisable(cause: "auth" | "quota", message: string, at: number): void {
    this.state().autoDisabled = { cause, message, at };
    this.refresh();
    this.changed();
  }

  // ---- health, cooldown and circuit ---------------------------------------------------------

  setEmaLatency(ms: number): void {
    this.state().emaLatencyMs = ms;
    this.changed();
  }

  /** A success: into the outcome window, ends the failure streak, adds the tokens used. */
  recordSuccess(now: number, inputTokens: number, outputTokens: number): void {
    const s = this.state();
    this.outcomes.record(now, 1);
    s.consecutiveFailures = 0;
    s.inputTokens += inputTokens;
    s.outputTokens += outputTokens;
    this.changed();
  }

  /** A failure: into the outcome window and, when it is the key's fault, the failure streak; returns the streak. */
  recordFailure(now: number, countsTowardBreaker: boolean): number {
    this.outcomes.record(now, 0);
    if (countsTowardBreaker) this.state().consecutiveFailures++;
    this.changed();
    return this.consecutiveFailures;
  }

  /** Share of successes in the window; ageing out is a change the next export carries, though it makes nothing to write by itself. */
  successRate(now: number): number {
    if (this.outcomes.prune(now)) this.unsaved = true;
    return this.outcomes.rate();
  }

  openCircuit(until: number): void {
    const s = this.state();
    s.circuitOpenCount++;
    s.circuitState = "open";
    s.circuitOpenUntil = until;
    this.changed();
  }

  halfOpenCircuit(): void {
    const s = this.state();
    s.circuitState = "half_open";
    s.circuitOpenUntil = undefined;
    this.changed();
  }

  closeCircuit(): void {
    const s = this.state();
    s.circuitState = "closed";
    s.circuitOpenUntil = undefined;
    s.circuitOpenCount = 0;
    this.changed();
  }

  coolDown(until: number): void {
    this.state().cooldownUntil = until;
    this.changed();
  }

  endCooldown(): void {
    this.state().cooldownUntil = undefined;
    this.changed();
  }

  /** 429s in the current doubling window and when the latest one came. */
  setRateLimitStreak(streak: number, at: number): void {
    const s = this.state();
    s.rateLimitStreak = streak;
    s.rateLimitStreakStart = at;
    this.changed();
  }

  // ---- budget and grants --------------------------------------------------------------------

  /** The provider's own view replaces the estimate; `fallbackResetAt` bounds an exhausted budget with no reset. */
  reportBudget(requests: CountReport, tokens: CountReport, now: number, fallbackResetAt: number): void {
    applyRequestsReport(this.providerBudget, requests, now, fallbackResetAt);
    applyTokensReport(this.providerBudget, tokens, now, fallbackResetAt);
    this.refresh();
    this.changed();
  }

  /** A grant spends one request of the estimate. */
  debitRequest(now: number, fallbackResetAt: number): void {
    debitRequest(this.providerBudget, now, fallbackResetAt);
    // Only this copy depends on the request estimate.
    (this as EligibilityCopies).requestsBlockedUntil = requestsBlockedUntil(this.providerBudget);
    this.changed();
  }

  /** When the budget next lets a waiter in: the request budget's next request, or the token budget's reset; Infinity if neither. */
  budgetWakeAt(now: number): number {
    const b = this.providerBudget;
    let at = Infinity;
    if (this.requestsBlockedUntil > now) at = this.requestsBlockedUntil;
    if (b.tokensRemaining !== undefined && b.tokensResetAt !== undefined && b.tokensResetAt > now) at = Math.min(at, b.tokensResetAt);
    return at;
  }

  /** A grant spends one request and reserves `tokens` of the declared budgets, the key's and its group's. */
  spend(tokens: number, now: number): void {
    if (this.declared) {
      this.declared.take(tokens, now);
      this.changed();
    }
    this.groupBudget?.take(tokens, now);
  }

  /** Release reconciled a reservation with the usage reported: charges a positive delta, refunds a negative one. */
  adjustTokens(delta: number, now: number): void {
    if (!this.declared) return;
    this.declared.adjustTokens(delta, now);
    this.changed();
  }

  /** A lease ended, with what its holder reported (undefined: expired or revoked). */
  countOutcome(outcome: LeaseOutcome | undefined): void {
    countOutcome(this.outcomeCounts, outcome);
    this.changed();
  }

  countGrant(now: number): void {
    this.state().totalLeases++;
    this.grants.add(now);
    // Pruning here keeps the window bounded whatever the strategy.
    this.recentGrants(now);
    this.changed();
  }

  /** Grants within the least_used window; drops older ones as it goes (a change the next export carries). */
  recentGrants(now: number): number {
    if (this.grants.prune(now)) this.unsaved = true;
    return this.grants.count;
  }

  // ---- snapshots ----------------------------------------------------------------------------

  toRuntime(now: number): KeyRuntime {
    return {
      pool: this.pool.cfg.name,
      keyId: this.cfg.id,
      autoDisabled: this.autoDisabled && { ...this.autoDisabled },
      draining: this.draining && { ...this.draining },
      cooldownUntil: this.cooldownUntil,
      rateLimitStreak: this.rateLimitStreak,
      rateLimitStreakStart: this.rateLimitStreakStart,
      circuitState: this.circuitState,
      circuitOpenUntil: this.circuitOpenUntil,
      circuitOpenCount: this.circuitOpenCount,
      consecutiveFailures: this.consecutiveFailures,
      emaLatencyMs: this.emaLatencyMs,
      outcomes: this.outcomes.export(),
      grantsPerSecond: this.grants.export(),
      budget: { ...this.providerBudget },
      declared: this.declared?.export(now),
      totalLeases: this.totalLeases,
      inputTokens: this.inputTokens,
      outputTokens: this.outputTokens,
      outcomeCounts: { ...this.outcomeCounts },
    };
  }

  /** The state a snapshot kept, before traffic starts; the key is new and unsaved already. */
  restore(r: KeyRuntime, now: number): void {
    const s = this.state();
    s.autoDisabled = r.autoDisabled && { ...r.autoDisabled };
    s.draining = r.draining && { ...r.draining };
    s.cooldownUntil = r.cooldownUntil;
    s.rateLimitStreak = r.rateLimitStreak;
    s.rateLimitStreakStart = r.rateLimitStreakStart;
    s.circuitState = r.circuitState;
    s.circuitOpenUntil = r.circuitOpenUntil;
    s.circuitOpenCount = r.circuitOpenCount;
    s.consecutiveFailures = r.consecutiveFailures;
    s.emaLatencyMs = r.emaLatencyMs;
    s.totalLeases = r.totalLeases;
    s.inputTokens = r.inputTokens;
    s.outputTokens = r.outputTokens;
    if (r.outcomeCounts !== undefined) this.outcomeCounts = { ...r.outcomeCounts };
    if (this.declared) s.declared = new DeclaredBudget(this.cfg.limits, r.declared, now);
    this.outcomes = OutcomeWindow.from(r.outcomes);
    this.grants = GrantWindow.from(r.grantsPerSecond);
    this.providerBudget = { ...r.budget };
    this.refresh();
  }

  // ---- internals ----------------------------------------------------------------------------

  /** The fields this class alone writes. */
  private state(): Writable<KeyEntry> {
    return this;
  }

  private changed(): void {
    this.changes.keyChanged(this);
  }

  private refresh(): void {
    const copies: EligibilityCopies = this;
    copies.lendable = !this.cfg.disabled && !this.autoDisabled && !this.draining;
    copies.maxConcurrency = this.cfg.maxConcurrency;
    copies.weight = this.cfg.weight;
    const b = this.providerBudget;
    copies.requestsBlockedUntil = requestsBlockedUntil(b);
    copies.tokensKnownUntil = b.tokensRemaining !== undefined ? (b.tokensResetAt ?? 0) : 0;
    copies.tokensLeft = b.tokensRemaining ?? 0;
  }
}

export function keyState(k: KeyEntry): KeyState {
  if (k.draining && (k.draining.remove || k.active > 0)) return "draining";
  if (k.cfg.disabled) return "disabled";
  if (k.autoDisabled) return k.autoDisabled.cause === "auth" ? "auto_disabled_auth" : "auto_disabled_quota";
  return "enabled";
}

export function keyStateReason(k: KeyEntry): string {
  if (k.draining?.remove) return "removing: draining";
  if (k.cfg.disabled) return k.cfg.disabledReason;
  if (k.autoDisabled) return k.autoDisabled.message;
  return "";
}

/** Rule 6. Pure: the scheduler has already applied every deadline up to `now`. */
export function isEligible(k: KeyEntry, now: number, estimatedTokens: number, exclude: Set<string> | undefined): boolean {
  if (!k.lendable) return false;
  if (k.maxConcurrency > 0 && k.active >= k.maxConcurrency) return false;
  if (k.cooldownUntil !== undefined && k.cooldownUntil > now) return false;
  if (k.circuitState !== "closed" && (k.circuitState === "open" || k.probes >= k.pool.cfg.halfOpenProbes)) return false;
  if (k.requestsBlockedUntil > now) return false;
  if (k.tokensKnownUntil > now && (k.tokensLeft === 0 || k.tokensLeft < estimatedTokens)) return false;
  if (k.declared !== undefined && k.declared.readyAt(estimatedTokens) > now) return false;
  if (k.groupBudget !== undefined && k.groupBudget.readyAt(estimatedTokens) > now) return false;
  if (k.claimed) return false;
  return exclude === undefined || !exclude.has(k.cfg.id);
}
