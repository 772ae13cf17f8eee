// Domain events (DESIGN "The contract": WatchEvents, metrics, logs): built only when someone listens,
// delivered synchronously, and never able to break the engine.
import type { DomainEvent, EventType, LeaseOutcome } from "./types.js";
import type { EndReason } from "./ended-leases.js";

export class EventSink {
  constructor(private readonly onEvent: ((e: DomainEvent) => void) | undefined) {}

  emit(type: EventType, time: number, pool: string, keyId?: string, leaseId?: string, reason?: string, until?: number): void {
    if (!this.onEvent) return;
    const e: DomainEvent = { type, time, pool };
    if (keyId !== undefined) e.keyId = keyId;
    if (leaseId !== undefined) e.leaseId = leaseId;
    if (reason !== undefined) e.reason = reason;
    if (until !== undefined) e.until = until;
    this.deliver(e);
  }

  /** lease_ended, with the outcome the holder reported when a report ended the lease. */
  leaseEnded(time: number, pool: string, keyId: string, leaseId: string, ended: EndReason, outcome: LeaseOutcome | undefined): void {
    if (!this.onEvent) return;
    const e: DomainEvent = { type: "lease_ended", time, pool, keyId, leaseId, reason: endedInWords(ended, outcome) };
    if (outcome !== undefined) e.outcome = outcome;
    this.deliver(e);
  }

  private deliver(e: DomainEvent): void {
    try {
      this.onEvent!(e);
    } catch {
      // A subscriber's failure must not break the engine.
    }
  }
}

/** The event's reason in words, as WatchEvents shows it: "released", "rate_limited", "failed: <class>", "expired", "revoked". */
function endedInWords(ended: EndReason, outcome: LeaseOutcome | undefined): string {
  switch (outcome) {
    case undefined:
      return ended;
    case "success":
      return "released";
    case "rate_limited":
      return "rate_limited";
    default:
      return `failed: ${outcome}`;
  }
}
