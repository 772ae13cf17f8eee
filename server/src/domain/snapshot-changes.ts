// Change tracking for snapshots (DESIGN "Persistence"): what changed in runtime state since the last
// export, so a steady snapshot copies only that. A key marks itself (KeyEntry); the lease lifecycle
// reports grants, renewals and ends here, and the engine reports removed keys.
import type { KeyEntry } from "./key.js";
import { poolRuntime } from "./pool.js";
import type { Lease, PoolEntry } from "./state.js";
import type { KeyRuntime, LeaseRecord, PoolRuntime, RuntimeChanges, RuntimeSnapshot } from "./types.js";

export class SnapshotChanges {
  private changed = false;
  /** Live leases granted or renewed since the last export. */
  private readonly leases = new Set<Lease>();
  private ended: string[] = [];
  private removed: Array<{ pool: string; keyId: string }> = [];
  /** More ended than `maxEnded` since the last export: only a full export is right. */
  private lost = false;

  /** `maxEnded`: most ended lease ids kept for the next export of changes; beyond it the next export is full. */
  constructor(private readonly maxEnded: number) {}

  /** Something in runtime state changed since markClean(). */
  get dirty(): boolean {
    return this.changed;
  }

  markClean(): void {
    this.changed = false;
  }

  keyChanged(k: KeyEntry): void {
    k.unsaved = true;
    this.changed = true;
  }

  /** A pool's own runtime state (usage, quota groups, affinities) changed. */
  poolChanged(pool: PoolEntry): void {
    pool.unsaved = true;
    this.changed = true;
  }

  keyRemoved(pool: string, keyId: string): void {
    this.removed.push({ pool, keyId });
    this.changed = true;
  }

  poolDeleted(): void {
    this.changed = true;
  }

  /** A pool dropped from memory (another replica owns it now): nothing of it goes into the next export. */
  forgetPool(name: string): void {
    for (const lease of this.leases) if (lease.key.pool.cfg.name === name) this.leases.delete(lease);
    this.removed = this.removed.filter((r) => r.pool !== name);
  }

  /** Granted or renewed: its record goes into the next export. */
  leaseChanged(lease: Lease): void {
    this.leases.add(lease);
    this.changed = true;
  }

  leaseEnded(lease: Lease): void {
    this.leases.delete(lease);
    this.changed = true;
    if (this.lost) return;
    if (this.ended.length < this.maxEnded) {
      this.ended.push(lease.id);
      return;
    }
    // Nobody exported for a long while (no snapshotter, or a long outage): stop keeping track.
    this.lost = true;
    this.ended = [];
    this.leases.clear();
    this.removed = [];
  }

  /** A consistent copy of every key's runtime state and every live lease; tracking starts afresh. */
  exportAll(pools: Iterable<PoolEntry>, live: Map<string, Lease>, takenAt: number): RuntimeSnapshot {
    const keys: KeyRuntime[] = [];
    const poolStates: PoolRuntime[] = [];
    for (const pool of pools) {
      for (const k of pool.keyList) {
        keys.push(k.toRuntime(takenAt));
        k.unsaved = false;
      }
      poolStates.push(poolRuntime(pool, takenAt));
      pool.unsaved = false;
    }
    const leases: LeaseRecord[] = new Array(live.size);
    let i = 0;
    for (const l of live.values()) leases[i++] = l.record;
    this.leases.clear();
    this.ended = [];
    this.removed = [];
    this.lost = false;
    return { takenAt, keys, leases, pools: poolStates };
  }

  /**
   * What changed since the previous export (of either kind); undefined when too much changed to keep track
   * of: export in full instead. `present` tells whether a key is still in its pool when the store reads it.
   */
  exportSince(pools: Iterable<PoolEntry>, present: (k: KeyEntry) => boolean, takenAt: number): RuntimeChanges | undefined {
    if (this.lost) return undefined;
    const changed: KeyEntry[] = [];
    const poolStates: PoolRuntime[] = [];
    for (const pool of pools) {
      if (pool.unsaved) {
        poolStates.push(poolRuntime(pool, takenAt));
        pool.unsaved = false;
      }
      for (const k of pool.keyList) {
        if (!k.unsaved) continue;
        changed.push(k);
        k.unsaved = false;
      }
    }
    const leases: LeaseRecord[] = [];
    for (const l of this.leases) leases.push(l.record);
    this.leases.clear();
    const changes = { takenAt, keys: readKeys(changed, present, takenAt), removedKeys: this.removed, leases, endedLeases: this.ended, pools: poolStates };
    this.ended = [];
    this.removed = [];
    return changes;
  }
}

/** Each key's runtime state when the store reads it, skipping keys removed (or whose pool was deleted) since. */
function* readKeys(changed: KeyEntry[], present: (k: KeyEntry) => boolean, takenAt: number): Generator<KeyRuntime> {
  for (const k of changed) if (present(k)) yield k.toRuntime(takenAt);
}
