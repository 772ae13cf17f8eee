// The provider's request budget as the engine estimates it between reports (DESIGN rule 6).
// OpenAI's x-ratelimit-reset-requests and Anthropic's requests-reset are the time until the bucket
// is full again, so a report (remaining R, limit L, reset in T) implies a refill of L per window
// W = T·L/(L−R). Each grant debits one; the next report replaces the estimate. Without a known
// refill the budget holds until its reset and is unknown after it.
import type { ProviderBudget } from "./types.js";

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
