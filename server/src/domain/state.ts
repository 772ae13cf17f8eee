// The engine's in-memory state besides the keys themselves (key.ts): pools, leases, waiters, the timer
// items, and the windows a key counts its outcomes and grants in.
import type { Affinities } from "./affinity.js";
import type { DeclaredBudget } from "./budget.js";
import type { PoolSecrets } from "./redact.js";
import type { KeyEntry } from "./key.js";
import type { Scheduled } from "./timer-heap.js";
import type { AcquireInput, Grant, KeyRuntime, LeaseGoneReason, LeaseRecord, Limits, PoolConfig, UsageView } from "./types.js";

/** One of a key's own deadlines on the timer heap. */
export interface KeyTimer extends Scheduled {
  kind: "cooldown" | "circuit" | "budget";
  key: KeyEntry;
}

export interface Lease extends Scheduled {
  kind: "lease";
  id: string;
  epoch: number;
  seq: number;
  key: KeyEntry;
  /** Never mutated, replaced on renewal, so snapshots share it instead of copying. */
  record: LeaseRecord;
  /** Granted while the key's circuit was half-open: holds one of its probe slots. */
  probe: boolean;
  /** Tokens reserved at grant, reconciled when Release reports usage; undefined for a lease granted before a restart. */
  reserved?: number;
  /** The key's quota group when granted: its reservation and outcome count there. */
  group?: QuotaGroup;
  watchers?: Array<(reason: LeaseGoneReason, message: string) => void>;
}

export interface Waiter extends Scheduled {
  kind: "waiter";
  pool: PoolEntry;
  queued: boolean;
  input: AcquireInput;
  /** Tokens the grant reserves: the estimate, or the pool's default. */
  tokens: number;
  exclude: Set<string> | undefined;
  resolve: (g: Grant) => void;
  reject: (e: Error) => void;
  prev: Waiter | undefined;
  next: Waiter | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** The pool's one wake-up for waiters held back by a declared budget: the earliest refill any of them needs. */
interface PoolTimer extends Scheduled {
  kind: "budget_wake";
  pool: PoolEntry;
}

export type TimerItem = Lease | Waiter | KeyTimer | PoolTimer;

/** The keys of one priority; strategies choose within a tier. */
export interface Tier {
  priority: number;
  keys: KeyEntry[];
  /** Where round_robin and tie rotation resume. */
  cursor: number;
}

/** A quota group of a pool: the budgets its keys share (when declared) and its usage. */
export interface QuotaGroup {
  name: string;
  limits: Limits;
  /** Undefined when the pool declares no limits for the group. */
  budget: DeclaredBudget | undefined;
  usage: UsageView;
  /** Keys of the pool in the group. */
  members: number;
}

export interface PoolEntry {
  cfg: PoolConfig;
  keys: Map<string, KeyEntry>;
  keyList: KeyEntry[];
  /** The keys by priority, earliest tier first; never an empty tier. */
  tiers: Tier[];
  groups: Map<string, QuotaGroup>;
  usage: UsageView;
  affinities: Affinities;
  /**
   * The oldest waiter that could not be served holds the key it can use soonest: nobody else is lent it
   * until that waiter is served or leaves, so a large reservation is not starved by small ones.
   */
  claimant: Waiter | undefined;
  claimed: KeyEntry | undefined;
  wake: PoolTimer;
  /** Largest reservation some key of the pool can ever hold (Infinity when one declares no token budget). */
  tokenCapacity: number;
  /** Whether any key or group declares a budget (otherwise waiting needs no budget wake-up). */
  declaresBudgets: boolean;
  /** Set while keys of a later tier are lent: when a later tier last lent one. */
  fallbackLastGrant: number | undefined;
  /** A runtime change (usage, groups, affinities) the next snapshot carries. */
  unsaved: boolean;
  waitHead: Waiter | undefined;
  waitTail: Waiter | undefined;
  waiting: number;
  active: number;
  /** Set when an acquire found no eligible key, cleared by the next grant: pool_exhausted fires once per episode. */
  exhausted: boolean;
  /** Deadlines that came while this replica did not serve the pool, kept for when it serves it again. */
  parked: TimerItem[];
  /** Its keys' secrets, masked in every text a caller gives about the pool. */
  secrets: PoolSecrets;
}

const LEAST_USED_WINDOW_MS = 60_000;
/** Seconds an instant in the least_used window can fall in: (now - 60 s, now] spans 61 of them. */
const GRANT_SLOTS = LEAST_USED_WINDOW_MS / 1000 + 1;
const OUTCOME_WINDOW = 100;
const OUTCOME_WINDOW_MS = 300_000;

/**
 * The success-rate window (DESIGN rule 8): the newest OUTCOME_WINDOW outcomes younger than
 * OUTCOME_WINDOW_MS, oldest first. Instants and results sit in two rings of plain numbers: an array
 * per outcome made 10,000 busy keys some 65 MB of small objects for every major GC to walk.
 */
export class OutcomeWindow {
  private readonly at: number[] = [];
  /** 1 success, 0 failure. */
  private readonly ok: number[] = [];
  private head = 0;
  private size = 0;
  private successes = 0;

  static from({ gaps, failed }: KeyRuntime["outcomes"]): OutcomeWindow {
    const w = new OutcomeWindow();
    const failures = new Set(failed);
    let at = 0;
    for (let i = 0; i < gaps.length; i++) {
      at += gaps[i]!;
      w.append(at, failures.has(i) ? 0 : 1);
    }
    return w;
  }

  record(now: number, ok: 0 | 1): void {
    this.append(now, ok);
    this.prune(now);
  }

  /** Drops outcomes that left the window by age; true when it dropped any. */
  prune(now: number): boolean {
    const before = this.size;
    while (this.size > 0 && this.at[this.head]! <= now - OUTCOME_WINDOW_MS) this.dropOldest();
    return this.size !== before;
  }

  /** Share of successes, 1 when the window is empty; prune first. */
  rate(): number {
    return this.size === 0 ? 1 : this.successes / this.size;
  }

  /** The window as KeyRuntime carries it: delta-coded instants, oldest first, and where the failures are. */
  export(): KeyRuntime["outcomes"] {
    const gaps: number[] = [];
    const failed: number[] = [];
    let previous = 0;
    for (let i = 0; i < this.size; i++) {
      const slot = (this.head + i) % OUTCOME_WINDOW;
      gaps.push(this.at[slot]! - previous);
      previous = this.at[slot]!;
      if (this.ok[slot] === 0) failed.push(i);
    }
    return { gaps, failed };
  }

  private append(at: number, ok: 0 | 1): void {
    if (this.size === OUTCOME_WINDOW) this.dropOldest();
    const slot = (this.head + this.size) % OUTCOME_WINDOW;
    // The rings grow to their capacity only as outcomes arrive: most keys never fill them.
    if (slot === this.at.length) {
      this.at.push(at);
      this.ok.push(ok);
    } else {
      this.at[slot] = at;
      this.ok[slot] = ok;
    }
    this.size++;
    this.successes += ok;
  }

  private dropOldest(): void {
    this.successes -= this.ok[this.head]!;
    this.head = (this.head + 1) % OUTCOME_WINDOW;
    this.size--;
  }
}

/**
 * Grants in the least_used window, counted per second of their instant in a ring of GRANT_SLOTS counters:
 * recording one allocates nothing, and memory and snapshot rows stay a few dozen numbers however busy the
 * key (as instants they grew to 30,000 a minute on a key lent 500 times a second). The window's edge moves
 * a second at a time.
 */
export class GrantWindow {
  /** Second s counts in slot s mod GRANT_SLOTS, for s from `oldest` to `newest`; every other slot is 0. */
  private readonly counts: number[] = new Array<number>(GRANT_SLOTS).fill(0);
  private oldest = 0;
  private newest = 0;
  private total = 0;

  static from({ until, counts }: KeyRuntime["grantsPerSecond"]): GrantWindow {
    const w = new GrantWindow();
    for (let i = 0; i < counts.length; i++) w.addCount(until - counts.length + 1 + i, counts[i]!);
    return w;
  }

  add(now: number): void {
    this.addCount(Math.floor(now / 1000), 1);
  }

  /** Counts `n` grants in `second`; a second a whole window older than the newest one counted is left out. */
  addCount(second: number, n: number): void {
    if (!(n > 0)) return;
    if (this.total > 0 && second > this.newest) {
      this.drop(second - GRANT_SLOTS + 1);
      if (this.total > 0) this.newest = second;
    }
    if (this.total === 0) {
      this.oldest = second;
      this.newest = second;
    } else if (second <= this.newest - GRANT_SLOTS) {
      return;
    } else if (second < this.oldest) {
      this.oldest = second;
    }
    this.counts[slotOf(second)]! += n;
    this.total += n;
  }

  /** Drops the seconds that left the window (every instant of them at or before now - LEAST_USED_WINDOW_MS); true when it dropped any. */
  prune(now: number): boolean {
    return this.drop(Math.floor((now - LEAST_USED_WINDOW_MS + 1) / 1000));
  }

  get count(): number {
    return this.total;
  }

  /** The window as KeyRuntime carries it: a count per second up to the newest, from the oldest with grants. */
  export(): KeyRuntime["grantsPerSecond"] {
    if (this.total === 0) return { until: 0, counts: [] };
    let from = this.oldest;
    while (this.counts[slotOf(from)] === 0) from++;
    const counts: number[] = [];
    for (let s = from; s <= this.newest; s++) counts.push(this.counts[slotOf(s)]!);
    return { until: this.newest, counts };
  }

  /** Clears the seconds before `first`; true when that dropped grants. */
  private drop(first: number): boolean {
    if (this.total === 0 || first <= this.oldest) return false;
    const before = this.total;
    const last = Math.min(first - 1, this.newest);
    for (let s = this.oldest; s <= last; s++) {
      const slot = slotOf(s);
      this.total -= this.counts[slot]!;
      this.counts[slot] = 0;
    }
    this.oldest = first;
    return this.total !== before;
  }
}

function slotOf(second: number): number {
  return ((second % GRANT_SLOTS) + GRANT_SLOTS) % GRANT_SLOTS;
}
