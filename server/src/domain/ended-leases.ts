// Why leases ended, so a late call on one gets the right "gone" reason (DESIGN rule 3) and a late
// outcome report updates its key's health once. This boot's leases are remembered by sequence number
// in a ring of bytes (no object per ended lease for the GC to keep); earlier boots' by id, for an hour.
import type { LeaseGoneReason } from "./types.js";

/** How a lease ended: every gone reason but "unknown". */
export type EndReason = Exclude<LeaseGoneReason, "unknown">;

/** A lease as its id names it: the boot that granted it and its sequence number there. */
export interface LeaseIdentity {
  epoch: number;
  seq: number;
}

/** A remembered end: the reason's index in the low bits (0: none known), and a flag once a late outcome report was applied. */
const REASONS: ReadonlyArray<EndReason | undefined> = [undefined, "released", "expired", "revoked"];
const REASON_MASK = 3;
const LATE_REPORTED = 4;
const TOMBSTONE_MAX_AGE_MS = 3_600_000;
const TOMBSTONE_CAP = 100_000;

/** A late outcome report counts once, and only for an end that was not the holder's own report. */
function takesLateReport(code: number): boolean {
  const reason = REASONS[code & REASON_MASK];
  return reason !== undefined && reason !== "released" && !(code & LATE_REPORTED);
}

interface Tombstone {
  code: number;
  at: number;
}

export class EndedLeases {
  /** This boot's lease `seq` ended for the reason at seq mod its length. */
  private readonly recent: Uint8Array;
  private readonly tombstones = new Map<string, Tombstone>();
  private readonly tombstoneOrder: string[] = [];
  private tombstoneHead = 0;

  /** `recentCapacity`: how many of this boot's latest grants remember why they ended; older ones answer from the token. */
  constructor(
    private readonly epoch: number,
    recentCapacity: number,
  ) {
    this.recent = new Uint8Array(recentCapacity);
  }

  remember(id: string, lease: LeaseIdentity, reason: EndReason, now: number): void {
    const code = REASONS.indexOf(reason);
    if (lease.epoch === this.epoch) this.recent[lease.seq % this.recent.length] = code;
    else this.tombstone(id, code, now);
  }

  /**
   * Why the lease ended, if it is remembered. `latestSeq` is this boot's latest grant. `onLateReport`, when
   * given, runs the first time a late outcome report arrives for a lease that expired or was revoked.
   */
  recall(id: string, lease: LeaseIdentity, latestSeq: number, onLateReport?: () => void): EndReason | undefined {
    if (lease.epoch !== this.epoch) {
      const tomb = this.tombstones.get(id);
      if (!tomb) return undefined;
      const code = tomb.code;
      if (onLateReport && takesLateReport(code)) {
        tomb.code = code | LATE_REPORTED;
        onLateReport();
      }
      return REASONS[code & REASON_MASK];
    }
    if (lease.seq <= latestSeq - this.recent.length) return undefined;
    const slot = lease.seq % this.recent.length;
    const code = this.recent[slot]!;
    if (onLateReport && takesLateReport(code)) {
      this.recent[slot] = code | LATE_REPORTED;
      onLateReport();
    }
    return REASONS[code & REASON_MASK];
  }

  private tombstone(id: string, code: number, now: number): void {
    const t = this.tombstones;
    const order = this.tombstoneOrder;
    t.set(id, { code, at: now });
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
}
