// The provider's request budget as the engine estimates it between reports (DESIGN rule 6).
// OpenAI's x-ratelimit-reset-requests and Anthropic's requests-reset are the time until the bucket
// is full again, so a report (remaining R, limit L, reset in T) implies a refill of L per window
// W = T·L/(L−R). Each grant debits one; the next report replaces the estimate. Without a known
// refill the budget holds until its reset and is unknown after it.
import type { BucketLevel, BudgetRemaining, DeclaredBudgetState, Limits, ProviderBudget } from "./types.js";

/** Float error in a refill that should land on a whole millisecond must not cost one more. */
const EPSILON_MS = 1e-6;

function ceilMs(t: number): number {
  return Math.ceil(t - EPSILON_MS);
}

/** Requests the provider refills per ms (a limit per window), or 0 when no refill is known. */
function refillPerMs(b: ProviderBudget): number {
  const limit = b.requestsLimit;
  const windowMs = b.requestsWindowMs;
  return limit !== undefined && limit > 0 && windowMs !== undefined && windowMs > 0 ? limit / windowMs : 0;
}

/** The estimate at `now`, refilled since it was counted (the limit caps the refill, not a reported excess). */
function refilled(b: ProviderBudget, remaining: number, rate: number, now: number): number {
  const limit = b.requestsLimit!;
  if (remaining >= limit) return remaining;
  return Math.min(limit, remaining + Math.max(0, now - (b.requestsCountedAt ?? now)) * rate);
}

/** One budget (requests or tokens) as a report gives it; the reset is relative (ms). */
export interface CountReport {
  remaining: number | undefined;
  limit: number | undefined;
  resetMs: number | undefined;
}

/** A reported count, when it is one: a non-negative safe integer. */
export function optionalCount(v: number | null | undefined): number | undefined {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

/** A report is the source of truth and replaces the estimate; `fallbackResetAt` bounds a 0 with no reset. */
export function applyRequestsReport(b: ProviderBudget, r: CountReport, now: number, fallbackResetAt: number): void {
  if (r.limit !== undefined) b.requestsLimit = r.limit;
  if (r.remaining === undefined) {
    if (r.resetMs !== undefined) b.requestsResetAt = now + r.resetMs;
    return;
  }
  b.requestsRemaining = r.remaining;
  b.requestsCountedAt = now;
  // A budget read as exhausted with no reset is trusted for one default cooldown.
  b.requestsResetAt = r.resetMs !== undefined ? now + r.resetMs : r.remaining === 0 ? fallbackResetAt : undefined;
  const limit = b.requestsLimit;
  // A full bucket (R = L, T = 0) says nothing about the rate: the window learned before stays.
  if (r.resetMs !== undefined && r.resetMs > 0 && limit !== undefined && limit > r.remaining) {
    b.requestsWindowMs = (r.resetMs * limit) / (limit - r.remaining);
  }
}

/** The token budget holds what the provider last said until its reset; `fallbackResetAt` bounds a 0 with no reset. */
export function applyTokensReport(b: ProviderBudget, r: CountReport, now: number, fallbackResetAt: number): void {
  if (r.remaining !== undefined) {
    b.tokensRemaining = r.remaining;
    b.tokensResetAt = r.resetMs !== undefined ? now + r.resetMs : r.remaining === 0 ? fallbackResetAt : undefined;
  } else if (r.resetMs !== undefined) {
    b.tokensResetAt = now + r.resetMs;
  }
  if (r.limit !== undefined) b.tokensLimit = r.limit;
}

/** One request lent against the budget; `fallbackResetAt` bounds an estimate run out with no reset known. */
export function debitRequest(b: ProviderBudget, now: number, fallbackResetAt: number): void {
  const remaining = b.requestsRemaining;
  if (remaining === undefined) return;
  const rate = refillPerMs(b);
  if (rate > 0) {
    b.requestsRemaining = refilled(b, remaining, rate, now) - 1;
    b.requestsCountedAt = now;
    return;
  }
  // Past its reset a budget with no known refill is unknown until the next report.
  if (b.requestsResetAt !== undefined && b.requestsResetAt <= now) return;
  b.requestsRemaining = remaining - 1;
  b.requestsCountedAt = now;
  if (b.requestsRemaining < 1 && b.requestsResetAt === undefined) b.requestsResetAt = fallbackResetAt;
}

/** The instant (whole ms) the budget next allows one request; 0 when it allows one now or is unknown. */
export function requestsBlockedUntil(b: ProviderBudget): number {
  const remaining = b.requestsRemaining;
  if (remaining === undefined || remaining >= 1) return 0;
  const rate = refillPerMs(b);
  if (rate > 0) return ceilMs((b.requestsCountedAt ?? 0) + (1 - remaining) / rate);
  return b.requestsResetAt ?? 0;
}

/** The budget as of now for stats: whole requests left and, with a known refill, when the bucket is full. */
export function budgetView(b: ProviderBudget, now: number): ProviderBudget {
  const view = { ...b };
  const remaining = b.requestsRemaining;
  const rate = refillPerMs(b);
  if (remaining === undefined || rate === 0) return view;
  const level = refilled(b, remaining, rate, now);
  view.requestsRemaining = Math.max(0, Math.floor(level + EPSILON_MS));
  view.requestsCountedAt = now;
  view.requestsResetAt = now + Math.max(0, ceilMs((b.requestsLimit! - level) / rate));
  return view;
}

// ---- declared budgets ------------------------------------------------------------------------
// An operator's limits (Limits), metered the way providers meter: a bucket of `limit` that refills
// continuously at limit/window, full when first declared. Grants take from it, so over any span of
// time T a budget never lends more than limit + T·limit/window. Levels are kept as (level, instant),
// so a restart refills exactly what the time away refilled.

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;

/** One refilling budget: `level` left at instant `at`; it may go below 0 when usage exceeded a reservation. */
class Bucket {
  level: number;
  at: number;

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    state: BucketLevel | undefined,
    now: number,
  ) {
    this.level = state ? Math.min(limit, state.level) : limit;
    this.at = state ? state.at : now;
  }

  levelAt(now: number): number {
    if (this.level >= this.limit) return this.limit;
    return Math.min(this.limit, this.level + (Math.max(0, now - this.at) * this.limit) / this.windowMs);
  }

  /** Takes `n` (a negative n gives back, up to the limit). */
  take(n: number, now: number): void {
    this.level = Math.min(this.limit, this.levelAt(now) - n);
    this.at = now;
  }

  /** The first whole ms at which the level reaches `n`: `at` when it already has, Infinity when n exceeds the limit. */
  readyAt(n: number): number {
    if (this.level >= n) return this.at;
    if (n > this.limit) return Infinity;
    return ceilMs(this.at + ((n - this.level) * this.windowMs) / this.limit);
  }

  /** The level to persist; undefined once full again by `now`. */
  state(now: number): BucketLevel | undefined {
    return this.levelAt(now) >= this.limit ? undefined : { level: this.level, at: this.at };
  }
}

/** A key's or a quota group's declared budgets: requests per minute and per day, tokens per minute. */
export class DeclaredBudget {
  private rpm: Bucket | undefined;
  private rpd: Bucket | undefined;
  private tpm: Bucket | undefined;
  /** The instant the request budgets next allow one request (they only refill between grants). */
  requestsReadyAt = 0;

  constructor(limits: Limits, state: DeclaredBudgetState | undefined, now: number) {
    this.configure(limits, state ?? {}, now);
  }

  /** Whether any limit is declared. */
  static declares(l: Limits): boolean {
    return l.requestsPerMinute > 0 || l.tokensPerMinute > 0 || l.requestsPerDay > 0;
  }

  /** New limits: a budget keeps what it has left (up to its new limit); a new one starts full. */
  reconfigure(limits: Limits, now: number): void {
    for (const b of [this.rpm, this.tpm, this.rpd]) b?.take(0, now);
    this.configure(limits, this.export(now) ?? {}, now);
  }

  /** The largest reservation the token budget can ever hold (Infinity when none is declared). */
  get tokenCapacity(): number {
    return this.tpm ? this.tpm.limit : Infinity;
  }

  /** The first instant (ms) at which one request reserving `tokens` fits; at or before now when it fits now. */
  readyAt(tokens: number): number {
    const t = this.tpm;
    if (t === undefined) return this.requestsReadyAt;
    // A reservation needs the budget to hold it, and any request one not overdrawn (usage beyond a reservation charges below 0).
    const at = t.readyAt(tokens > 0 ? tokens : 0);
    return at > this.requestsReadyAt ? at : this.requestsReadyAt;
  }

  /** A grant: one request, and `tokens` reserved. */
  take(tokens: number, now: number): void {
    this.rpm?.take(1, now);
    this.rpd?.take(1, now);
    if (tokens > 0) this.tpm?.take(tokens, now);
    this.requestsReadyAt = Math.max(this.rpm?.readyAt(1) ?? 0, this.rpd?.readyAt(1) ?? 0);
  }

  /** Reconciles a reservation with the usage reported: a positive `delta` charges more, a negative one refunds. */
  adjustTokens(delta: number, now: number): void {
    if (delta !== 0) this.tpm?.take(delta, now);
  }

  remaining(now: number): BudgetRemaining {
    const whole = (b: Bucket | undefined) => (b === undefined ? undefined : Math.max(0, Math.floor(b.levelAt(now) + EPSILON_MS)));
    return { requestsPerMinute: whole(this.rpm), tokensPerMinute: whole(this.tpm), requestsPerDay: whole(this.rpd) };
  }

  /** The levels to persist (each at its own instant, so reading them never moves one); undefined when every budget is full. */
  export(now: number): DeclaredBudgetState | undefined {
    const out: DeclaredBudgetState = {};
    let any = false;
    for (const [name, b] of [["requestsPerMinute", this.rpm], ["tokensPerMinute", this.tpm], ["requestsPerDay", this.rpd]] as const) {
      if (b === undefined) continue;
      const s = b.state(now);
      if (s) {
        out[name] = s;
        any = true;
      }
    }
    return any ? out : undefined;
  }

  private configure(limits: Limits, state: DeclaredBudgetState, now: number): void {
    const bucket = (limit: number, windowMs: number, s: BucketLevel | undefined) => (limit > 0 ? new Bucket(limit, windowMs, s, now) : undefined);
    this.rpm = bucket(limits.requestsPerMinute, MINUTE_MS, state.requestsPerMinute);
    this.tpm = bucket(limits.tokensPerMinute, MINUTE_MS, state.tokensPerMinute);
    this.rpd = bucket(limits.requestsPerDay, DAY_MS, state.requestsPerDay);
    this.requestsReadyAt = Math.max(this.rpm?.readyAt(1) ?? 0, this.rpd?.readyAt(1) ?? 0);
  }
}
