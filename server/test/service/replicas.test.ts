// The replica coordinator on a fake store and a fake monotonic clock: trust windows, stepping down,
// resuming, placement by rendezvous hashing, hand-over and takeover.
import { describe, expect, it } from "vitest";
import { PoolEngine } from "../../src/domain/engine.js";
import type { PoolConfig } from "../../src/domain/types.js";
import { Replicas, type OwnershipChange } from "../../src/service/replicas.js";
import type { HeldTerm, OwnerRow, OwnershipStore, ReplicaRow } from "../../src/store/ownership.js";
import type { LoadedState } from "../../src/store/restore.js";
import { FakeClock } from "../fake-clock.js";
import { flush } from "../domain/helpers.js";

const TTL = 5000;

/** Ownership rows in memory, as the statements of store/sql/pool-owners.ts keep them (expiry on `dbNow`). */
class FakeOwnershipStore implements OwnershipStore {
  dbNow = 0;
  rows = new Map<string, { owner: string; term: number; expiresAt: number }>();
  members_: ReplicaRow[] = [];
  pools: PoolConfig[] = [];
  /** When set, the next renewal waits for it (a slow database). */
  renewGate: Promise<void> | undefined;
  down = false;
  wake: (() => void) | undefined;

  async heartbeat(): Promise<void> {
    this.#check();
  }
  async leave(): Promise<void> {}
  async members(): Promise<ReplicaRow[]> {
    this.#check();
    return this.members_;
  }
  async owners(): Promise<OwnerRow[]> {
    this.#check();
    return this.pools.map((p) => {
      const r = this.rows.get(p.name);
      const live = r !== undefined && r.expiresAt > this.dbNow;
      return { pool: p.name, owner: r?.owner ?? "", term: r?.term ?? 0, live, expired_ms: r && !live ? this.dbNow - r.expiresAt : 0, address: r ? `${r.owner}:1` : null };
    });
  }
  async claim(pool: string, owner: string, ttlMs: number): Promise<number | undefined> {
    this.#check();
    const r = this.rows.get(pool);
    if (r && r.expiresAt > this.dbNow) return undefined;
    const term = (r?.term ?? 0) + 1;
    this.rows.set(pool, { owner, term, expiresAt: this.dbNow + ttlMs });
    return term;
  }
  async claimAll(): Promise<HeldTerm[]> {
    return [];
  }
  async renew(owner: string, held: HeldTerm[], ttlMs: number): Promise<string[]> {
    const gate = this.renewGate;
    if (gate) await gate;
    this.#check();
    const renewed: string[] = [];
    for (const h of held) {
      const r = this.rows.get(h.pool);
      if (r && r.owner === owner && r.term === h.term) {
        r.expiresAt = this.dbNow + ttlMs;
        renewed.push(h.pool);
      }
    }
    return renewed;
  }
  async resign(owner: string, held: HeldTerm[]): Promise<void> {
    for (const h of held) {
      const r = this.rows.get(h.pool);
      if (r && r.owner === owner && r.term === h.term) r.expiresAt = this.dbNow;
    }
  }
  async load(pools: string[]): Promise<LoadedState> {
    this.#check();
    return { pools: this.pools.filter((p) => pools.includes(p.name)), keys: [], runtime: undefined, grantHighWater: {} };
  }
  async onChange(fn: () => void): Promise<void> {
    this.wake = fn;
  }
  #check(): void {
    if (this.down) throw new Error("database unavailable");
  }
}

function setup(id = "me", others: string[] = []) {
  const clock = new FakeClock();
  let mono = 0;
  const store = new FakeOwnershipStore();
  store.members_ = [id, ...others].map((m) => ({ id: m, address: `${m}:1`, heartbeat_age_ms: 0, started_at: new Date(0) }));
  const engine = new PoolEngine({ clock, leaseSecret: new TextEncoder().encode("s"), epoch: 1, serves: (p) => replicas.serves(p) });
  const changes: Array<[string, OwnershipChange]> = [];
  let flushes = 0;
  const replicas: Replicas = new Replicas({
    id,
    store,
    engine,
    flush: async () => void flushes++,
    loaded: () => {},
    log: { info() {}, warn() {} },
    onChange: (pool, change) => changes.push([pool, change]),
    ttlMs: TTL,
    // Rounds only when a test asks for one (the store's wake-up).
    renewEveryMs: 1000,
    monotonic: () => mono,
  });
  const pool = (name: string) => {
    const p = engine.preparePool({ name });
    store.pools.push({ ...p, createdAt: 0, updatedAt: 0 });
  };
  /** One more round, run to its end. */
  const round = async () => {
    store.wake!();
    for (let i = 0; i < 20; i++) await flush();
  };
  return { clock, store, engine, replicas, changes, pool, round, setMono: (t: number) => (mono = t), flushes: () => flushes };
}

describe("replica coordinator", () => {
  it("claims a free pool that hashes to it, loads it, and serves it", async () => {
    const t = setup();
    t.pool("a");
    await t.replicas.start("me:1");
    expect(t.replicas.serves("a")).toBe(true);
    expect(t.engine.hasPool("a")).toBe(true);
    expect(t.replicas.termOf("a")).toBe(1);
    expect(t.changes).toEqual([["a", "claimed"]]);
    await t.replicas.stop();
  });

  it("trusts a term until its renewal's send time + TTL − margin: a slow renewal does not extend the window", async () => {
    const t = setup();
    t.pool("a");
    await t.replicas.start("me:1");
    // A renewal sent at 1000 that answers at 3900.
    t.setMono(1000);
    let open!: () => void;
    t.store.renewGate = new Promise<void>((r) => (open = r));
    const done = t.round();
    t.setMono(3900);
    open();
    await done;
    t.store.renewGate = undefined;
    // Trusted until 1000 + 5000 − 1000, not 3900 + 4000.
    t.setMono(4999);
    expect(t.replicas.serves("a")).toBe(true);
    t.setMono(5000);
    expect(t.replicas.serves("a")).toBe(false);
    await t.replicas.stop();
  });

  it("stops serving when its window ends without a renewal, keeps the state, and resumes when the term is still its own", async () => {
    const t = setup();
    t.pool("a");
    await t.replicas.start("me:1");
    t.store.down = true;
    t.setMono(3000);
    await t.round();
    t.setMono(4000);
    expect(t.replicas.serves("a")).toBe(false);
    await t.round();
    expect(t.engine.hasPool("a")).toBe(true);
    // Past expires_at on the database's clock, but nobody claimed it: the same term renews.
    t.store.dbNow = 9000;
    t.store.down = false;
    t.setMono(9000);
    await t.round();
    expect(t.replicas.serves("a")).toBe(true);
    expect(t.replicas.termOf("a")).toBe(1);
    expect(t.changes.map(([, c]) => c)).toEqual(["claimed", "suspended", "resumed"]);
    await t.replicas.stop();
  });

  it("drops a pool at once when its renewal finds another term, and when a fenced write does", async () => {
    const t = setup();
    t.pool("a");
    t.pool("b");
    await t.replicas.start("me:1");
    t.store.rows.set("a", { owner: "other", term: 2, expiresAt: 1e9 });
    await t.round();
    expect(t.engine.hasPool("a")).toBe(false);
    expect(t.replicas.termOf("a")).toBeUndefined();
    t.replicas.lost(["b"]);
    expect(t.engine.hasPool("b")).toBe(false);
    expect(t.changes.filter(([, c]) => c === "lost").map(([p]) => p)).toEqual(["a", "b"]);
    await t.replicas.stop();
  });

  it("spreads pools by rendezvous hashing, claims only its own, and hands over (snapshot, then resign) what a joiner gets", async () => {
    const names = Array.from({ length: 20 }, (_, i) => `pool-${i}`);
    const t = setup("r1");
    for (const n of names) t.pool(n);
    await t.replicas.start("r1:1");
    expect(names.every((n) => t.replicas.serves(n))).toBe(true);
    // A second replica joins: the pools that hash to it are written out and resigned, the rest stay.
    t.store.members_.push({ id: "r2", address: "r2:1", heartbeat_age_ms: 0, started_at: new Date(0) });
    const flushesBefore = t.flushes();
    await t.round();
    const kept = names.filter((n) => t.replicas.serves(n));
    const given = names.filter((n) => !t.replicas.serves(n));
    expect(kept.length).toBeGreaterThan(0);
    expect(given.length).toBeGreaterThan(0);
    expect(t.flushes()).toBe(flushesBefore + 1);
    for (const n of given) {
      expect(t.engine.hasPool(n)).toBe(false);
      expect(t.store.rows.get(n)!.expiresAt).toBe(t.store.dbNow);
    }
    // The joiner, deciding on the same rows, claims exactly the pools given up.
    const other = setup("r2", ["r1"]);
    other.store.rows = t.store.rows;
    other.store.pools = t.store.pools;
    await other.replicas.start("r2:1");
    expect(names.filter((n) => other.replicas.serves(n))).toEqual(given);
    await t.replicas.stop();
    await other.replicas.stop();
  });

  it("waits out a live owner's term before it takes over, and then loads the pool (took_over)", async () => {
    const t = setup();
    t.pool("a");
    t.store.rows.set("a", { owner: "dead", term: 4, expiresAt: 5000 });
    await t.replicas.start("me:1");
    expect(t.replicas.serves("a")).toBe(false);
    t.store.dbNow = 5000;
    await t.round();
    expect(t.replicas.serves("a")).toBe(true);
    expect(t.replicas.termOf("a")).toBe(5);
    expect(t.changes).toEqual([["a", "took_over"]]);
    await t.replicas.stop();
  });
});
