// Affinity (issue 20): an Acquire's `affinity` (a conversation id, say) is lent the key it was last lent
// while that key stays eligible, so provider prompt caches hit. Each pool remembers at most AFFINITY_CAP
// affinities, dropping the least recently used: memory stays bounded (~100 bytes an entry) whatever the
// callers send.
import type { KeyEntry } from "./key.js";

const AFFINITY_CAP = 10_000;

export class Affinities {
  /** Insertion order is recency: a hit moves its entry to the end. */
  private readonly map = new Map<string, KeyEntry>();

  constructor(private readonly cap = AFFINITY_CAP) {}

  get size(): number {
    return this.map.size;
  }

  /** The key last lent for `affinity`, if it is still in its pool; marks the entry recently used. */
  get(affinity: string): KeyEntry | undefined {
    const k = this.map.get(affinity);
    if (k === undefined) return undefined;
    this.map.delete(affinity);
    if (k.pool.keys.get(k.cfg.id) !== k) return undefined;
    this.map.set(affinity, k);
    return k;
  }

  /** Remembers `k` for `affinity`; true when that changed what is remembered. */
  set(affinity: string, k: KeyEntry): boolean {
    const before = this.map.get(affinity);
    this.map.delete(affinity);
    this.map.set(affinity, k);
    if (this.map.size > this.cap) this.map.delete(this.map.keys().next().value!);
    return before !== k;
  }

  /** Forgets every affinity to `k` (removed from its pool). */
  forget(k: KeyEntry): void {
    for (const [a, key] of this.map) if (key === k) this.map.delete(a);
  }

  /** Affinity and key id, least recently used first. */
  export(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (const [a, k] of this.map) out.push([a, k.cfg.id]);
    return out;
  }
}
