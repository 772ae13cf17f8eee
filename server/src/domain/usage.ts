// Usage accounting (issue 20): requests lent, tokens reported and how leases ended, counted the same
// way for a key, a quota group and a pool, in totals since each was created.
import type { LeaseOutcome, OutcomeCounts, UsageView } from "./types.js";

export function emptyUsage(): UsageView {
  return { requests: 0, inputTokens: 0, outputTokens: 0, successes: 0, rateLimited: 0, failures: 0, unreported: 0 };
}

/** A lease ended: what the holder reported, or nothing (expired, revoked). */
export function countOutcome(u: OutcomeCounts, outcome: LeaseOutcome | undefined): void {
  if (outcome === undefined) u.unreported++;
  else if (outcome === "success") u.successes++;
  else if (outcome === "rate_limited") u.rateLimited++;
  else u.failures++;
}

/** Restores counts a snapshot kept; fields it lacks (older snapshots) count from 0. */
export function usageFrom(u: Partial<UsageView> | undefined): UsageView {
  return { ...emptyUsage(), ...u };
}
