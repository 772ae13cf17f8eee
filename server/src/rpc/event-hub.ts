// Fans domain events out to WatchEvents streams. Each watcher has a bounded backlog: a watcher that
// falls behind loses its backlog and gets one "lagged" marker instead, so a slow reader never slows
// the pool or grows memory without bound.
import type { AuditEntry } from "../domain/audit.js";
import type { DomainEvent } from "../domain/types.js";
import { Channel } from "./channel.js";

const leaseEvents = new Set<WatchItemType>(["lease_granted", "lease_ended"]);

export interface WatchFilter {
  /** Empty: every pool. */
  pool: string;
  includeLeaseEvents: boolean;
}

/** An admin change, as WatchEvents carries it beside the engine's events. */
export interface AdminChange {
  type: "admin_change";
  pool: string;
  entry: AuditEntry;
}

export type WatchItem = DomainEvent | AdminChange | "lagged";
type WatchItemType = (DomainEvent | AdminChange)["type"];

export class EventHub {
  private readonly watchers = new Set<{ filter: WatchFilter; channel: Channel<WatchItem> }>();

  constructor(private readonly backlog = 1024) {}

  publish(event: DomainEvent | AdminChange): void {
    for (const w of this.watchers) {
      if (w.filter.pool !== "" && w.filter.pool !== event.pool) continue;
      if (!w.filter.includeLeaseEvents && leaseEvents.has(event.type)) continue;
      if (w.channel.size >= this.backlog) w.channel.replaceAll("lagged");
      else w.channel.push(event);
    }
  }

  /** Yields matching events until the signal aborts. */
  async *watch(filter: WatchFilter, signal: AbortSignal): AsyncGenerator<WatchItem> {
    const watcher = { filter, channel: new Channel<WatchItem>() };
    this.watchers.add(watcher);
    try {
      yield* watcher.channel.drain(signal);
    } finally {
      this.watchers.delete(watcher);
    }
  }

  closeAll(): void {
    for (const w of this.watchers) w.channel.close();
  }
}
