// Fencing (DESIGN "Replicas"): every write a replica makes for a pool checks, in the same statement or
// transaction, that the pool is still its own under the term it holds. A write that finds another term
// changes nothing for that pool, and the replica is told to drop it.
import { StoreError } from "./errors.js";
import { lockTerms, type HeldTerm } from "./sql/pool-owners.js";
import type { Queryable } from "./sql/queryable.js";

/** What the store asks of ownership: the terms this replica holds, and where to report a lost pool. */
export interface Fence {
  /** This replica's id, the owner column of what it holds. */
  readonly owner: string;
  /** The term the pool is held under, or undefined when this replica does not hold it. */
  termOf(pool: string): number | undefined;
  /** Every pool held in memory with its term. */
  held(): HeldTerm[];
  /** A write found these pools under another term: stop serving them and drop them from memory now. */
  lost(pools: string[]): void;
}

/** Another replica took the pool over: nothing was written for it. Maps to UNAVAILABLE, OWNERSHIP_LOST. */
export class OwnershipLost extends StoreError {
  readonly code = "ownership_lost";

  constructor(readonly pools: string[]) {
    super(`ownership of ${pools.length === 1 ? `pool "${pools[0]}"` : `${pools.length} pools`} moved to another replica`);
    this.name = "OwnershipLost";
  }
}

/**
 * In a transaction: locks the ownership rows of `held` (a claim waits until this commits) and throws
 * OwnershipLost, after telling the fence, unless every one is still this replica's under its term.
 */
export async function checkTerms(tx: Queryable, fence: Fence, held: HeldTerm[]): Promise<void> {
  const kept = new Set(await lockTerms(tx, fence.owner, held));
  const lost = held.filter((h) => !kept.has(h.pool)).map((h) => h.pool);
  if (lost.length === 0) return;
  fence.lost(lost);
  throw new OwnershipLost(lost);
}
