// Replicas (DESIGN "Replicas"): which pools this process owns, under which term, and until when it may
// trust that. Postgres is the only coordinator: a membership row per replica, an ownership row per pool
// claimed and renewed on the database's clock (store/ownership.ts). This file makes the decisions: pools go
// to live members by rendezvous hashing, a replica claims what hashes to it once it is free or expired,
// hands over (snapshot, then resign) what hashes elsewhere, trusts a term until the renewal's send time
// plus the TTL minus a margin on its own monotonic clock, stops serving a pool the moment that ends, and
// drops a pool from memory the moment a renewal or a fenced write finds another term. A takeover loads
// the pool with the same code as a start.
import { createHash } from "node:crypto";
import type { PoolEngine } from "../domain/engine.js";
import type { Fence } from "../store/fence.js";
import type { HeldTerm, OwnerRow, OwnershipStore, ReplicaRow } from "../store/ownership.js";

/** How ownership changed, for metrics, events and the log. */
export type OwnershipChange = "claimed" | "took_over" | "handed_over" | "lost" | "suspended" | "resumed";

export interface ReplicasOptions {
  /** This process's id (unique per start). */
  id: string;
  store: OwnershipStore;
  engine: PoolEngine;
  /** Writes a snapshot now (the journal drains first): what a hand-over does before it resigns. */
  flush: () => Promise<void>;
  /** After a takeover loaded pools: the next snapshot must reconcile their rows. */
  loaded: () => void;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
  onChange?: (pool: string, change: OwnershipChange, term: number) => void;
  /** The embedded database: this process is the only one, owns every pool for good (pass a TTL of a century), and never renews. */
  sole?: boolean;
  /** How long a claim or renewal lasts on the database's clock (default 5 s). */
  ttlMs?: number;
  /** Heartbeat and renewal period (default 1 s). */
  renewEveryMs?: number;
  /** The monotonic clock (default performance.now). */
  monotonic?: () => number;
}

interface Held {
  term: number;
  /** Monotonic instant until which the term is trusted: its last renewal's send time + TTL − margin. */
  trustedUntil: number;
  suspended: boolean;
  /** Being handed over: not served, still written by the final snapshot. */
  leaving: boolean;
}

/** A member is live while its heartbeat is younger than this many renewal periods. */
const LIVE_PERIODS = 5;
/** Shortest time between two reads of the owners on a miss. */
const LOCATE_EVERY_MS = 100;
/** A free pool its own replica has not claimed for this many renewal periods is claimed by any. */
const STRAY_PERIODS = 2;
/** What a caller is told to wait before retrying a pool that is not served. */
const RETRY_AFTER_MS = 250;

/** The member a pool belongs to: the highest hash of (pool, member); a join or leave moves only what it must. */
function rendezvous(pool: string, members: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const m of members) {
    const score = createHash("sha256").update(pool).update("\0").update(m).digest().readUIntBE(0, 6);
    if (score > bestScore || (score === bestScore && best !== undefined && m < best)) {
      best = m;
      bestScore = score;
    }
  }
  return best;
}

export class Replicas implements Fence {
  readonly owner: string;
  #address = "";
  readonly #store: OwnershipStore;
  readonly #engine: PoolEngine;
  readonly #flush: () => Promise<void>;
  readonly #loaded: () => void;
  readonly #log: ReplicasOptions["log"];
  readonly #onChange: NonNullable<ReplicasOptions["onChange"]>;
  readonly #sole: boolean;
  readonly #ttlMs: number;
  readonly #renewEveryMs: number;
  readonly #marginMs: number;
  readonly #mono: () => number;
  readonly #held = new Map<string, Held>();
  #owners = new Map<string, OwnerRow>();
  readonly #startedAt = Date.now();
  #members: ReplicaRow[] = [];
  #locating: Promise<void> | undefined;
  #locatedAt = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  #trustTimer: NodeJS.Timeout | undefined;
  #round: Promise<void> | undefined;
  #again = false;
  #joined = false;
  #stopped = false;
  #failing = false;

  constructor(o: ReplicasOptions) {
    this.owner = o.id;
    this.#store = o.store;
    this.#engine = o.engine;
    this.#flush = o.flush;
    this.#loaded = o.loaded;
    this.#log = o.log;
    this.#onChange = o.onChange ?? (() => {});
    this.#sole = o.sole ?? false;
    this.#ttlMs = o.ttlMs ?? 5000;
    this.#renewEveryMs = o.renewEveryMs ?? 1000;
    // A renewal that fails leaves a window before expires_at passes for the others: one period, at least 1 s.
    this.#marginMs = Math.min(this.#ttlMs / 2, Math.max(1000, this.#renewEveryMs));
    if (this.#sole) this.#marginMs = 0;
    this.#mono = o.monotonic ?? (() => performance.now());
  }

  /** host:port its peers forward to (known once the listener is bound). */
  get address(): string {
    return this.#address;
  }

  /** How long a claim lasts on the database's clock. */
  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** Whether this replica serves the pool now: it holds it under a term it still trusts. The hot path's check. */
  serves(pool: string): boolean {
    const h = this.#held.get(pool);
    return h !== undefined && !h.leaving && this.#mono() < h.trustedUntil;
  }

  termOf(pool: string): number | undefined {
    return this.#held.get(pool)?.term;
  }

  held(): HeldTerm[] {
    return [...this.#held].map(([pool, h]) => ({ pool, term: h.term }));
  }

  lost(pools: string[]): void {
    for (const pool of pools) this.#drop(pool, "lost");
  }

  /** The address of the replica that owns the pool, as last seen (this one's when it serves it). */
  ownerOf(pool: string): string | undefined {
    if (this.serves(pool)) return this.address;
    const row = this.#owners.get(pool);
    return row?.live && row.address && row.owner !== this.owner ? row.address : undefined;
  }

  /** Whether the pool exists, as this replica last saw the database (or holds it). */
  knows(pool: string): boolean {
    return this.#held.has(pool) || this.#owners.has(pool);
  }

  /** The addresses of the other live replicas, as last seen. */
  peers(): string[] {
    return this.#members.filter((m) => m.id !== this.owner).map((m) => m.address);
  }

  /**
   * Reads every pool's owner again (on a miss: a pool created elsewhere since the last round). Calls at the same
   * time share one read, and one within LOCATE_EVERY_MS of the last finds that: unknown names cannot make a storm.
   */
  locate(): Promise<void> {
    if (this.#sole || this.#mono() - this.#locatedAt < LOCATE_EVERY_MS) return Promise.resolve();
    this.#locating ??= (async () => {
      try {
        const owners = await this.#store.owners(this.#renewEveryMs * LIVE_PERIODS);
        this.#owners = new Map(owners.map((r) => [r.pool, r]));
        this.#locatedAt = this.#mono();
      } finally {
        this.#locating = undefined;
      }
    })();
    return this.#locating;
  }

  /** The pool's term and owner id as last seen, for stats. */
  ownership(pool: string): { owner: string; term: number } | undefined {
    const h = this.#held.get(pool);
    if (h) return { owner: this.owner, term: h.term };
    const row = this.#owners.get(pool);
    return row && row.owner ? { owner: row.owner, term: row.term } : undefined;
  }

  /** The live members, read now, with the pools each owns (the embedded database: this process alone). */
  async describe(): Promise<Array<{ id: string; address: string; heartbeatAgeMs: number; startedAt: number; pools: string[] }>> {
    const mine = [...this.#held.keys()].sort();
    if (this.#sole) return [{ id: this.owner, address: this.#address, heartbeatAgeMs: 0, startedAt: this.#startedAt, pools: mine }];
    const liveMs = this.#renewEveryMs * LIVE_PERIODS;
    const [members, owners] = [await this.#store.members(liveMs), await this.#store.owners(liveMs)];
    return members.map((m) => ({
      id: m.id,
      address: m.address,
      heartbeatAgeMs: m.heartbeat_age_ms,
      startedAt: m.started_at.getTime(),
      pools: owners.filter((r) => r.live && r.owner === m.id).map((r) => r.pool),
    }));
  }

  /** For a claim made outside a round (a pool created here): the instant its statement was sent. */
  now(): number {
    return this.#mono();
  }

  /** A pool created here was claimed in the same transaction, sent at `sentAt`. */
  created(pool: string, term: number, sentAt: number): void {
    this.#held.set(pool, { term, trustedUntil: sentAt + this.#ttlMs - this.#marginMs, suspended: false, leaving: false });
  }

  /** A pool deleted here: its row was resigned with the delete. */
  deleted(pool: string): void {
    this.#held.delete(pool);
    this.#owners.delete(pool);
  }

  /** The embedded database: claims and loads every pool. Otherwise: joins and runs the first round, then one per period. */
  async start(address: string): Promise<void> {
    this.#address = address;
    if (this.#sole) {
      const sentAt = this.#mono();
      const terms = await this.#store.claimAll(this.owner);
      await this.#load(terms, sentAt, "claimed");
      return;
    }
    // The first round claims and loads before the listeners serve; notifications then wake later ones.
    await this.#run();
    await this.#store.onChange(() => this.#wake()).catch((err: unknown) => this.#log.warn({ err: (err as Error).message }, "replicas: no notifications; relying on the renewal period"));
    this.#trustTimer = setInterval(() => this.#checkTrust(), Math.min(100, this.#renewEveryMs));
    this.#trustTimer.unref();
  }

  /** Graceful stop, after the final snapshot: resigns every pool (a survivor takes them at once) and leaves. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#trustTimer) clearInterval(this.#trustTimer);
    await this.#round?.catch(() => undefined);
    if (this.#sole) return;
    const held = this.held();
    this.#held.clear();
    try {
      await this.#store.resign(this.owner, held);
      await this.#store.leave(this.owner);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message, pools: held.length }, "replicas: could not resign; the pools move when their term expires");
    }
  }

  #wake(): void {
    if (this.#stopped) return;
    if (this.#timer && !this.#round) clearTimeout(this.#timer);
    void this.#run();
  }

  /** One round at a time: asked for during one, another follows it. */
  async #run(): Promise<void> {
    if (this.#round) {
      this.#again = true;
      return;
    }
    this.#timer = undefined;
    this.#round = this.#roundOnce();
    try {
      await this.#round;
    } finally {
      this.#round = undefined;
    }
    if (this.#stopped) return;
    if (this.#again) {
      this.#again = false;
      this.#timer = setTimeout(() => void this.#run(), 0);
    } else {
      this.#timer = setTimeout(() => void this.#run(), this.#renewEveryMs);
    }
    this.#timer.unref();
  }

  async #roundOnce(): Promise<void> {
    const sentAt = this.#mono();
    try {
      await this.#store.heartbeat(this.owner, this.address, !this.#joined);
      this.#joined = true;
      await this.#renew(sentAt);
      const members = await this.#store.members(this.#renewEveryMs * LIVE_PERIODS);
      const owners = await this.#store.owners(this.#renewEveryMs * LIVE_PERIODS);
      this.#owners = new Map(owners.map((r) => [r.pool, r]));
      this.#members = members;
      await this.#place(members, owners);
      if (this.#failing) this.#log.info({ pools: this.#held.size }, "replicas: database reachable again");
      this.#failing = false;
    } catch (err) {
      if (!this.#failing) this.#log.warn({ err: (err as Error).message }, "replicas: renewal round failed; terms are trusted until their window ends");
      this.#failing = true;
    }
    this.#checkTrust();
  }

  /** Renews every held term; a term nobody else claimed is renewed even after it expired. One that moved is dropped. */
  async #renew(sentAt: number): Promise<void> {
    const held = this.held().filter((h) => !this.#held.get(h.pool)!.leaving);
    const renewed = new Set(await this.#store.renew(this.owner, held, this.#ttlMs));
    for (const { pool, term } of held) {
      const h = this.#held.get(pool);
      if (!h || h.term !== term) continue;
      if (!renewed.has(pool)) {
        this.#drop(pool, "lost");
        continue;
      }
      h.trustedUntil = sentAt + this.#ttlMs - this.#marginMs;
      if (h.suspended) {
        h.suspended = false;
        this.#engine.resumePool(pool);
        this.#onChange(pool, "resumed", term);
      }
    }
  }

  async #place(members: ReplicaRow[], owners: OwnerRow[]): Promise<void> {
    const ids = members.map((m) => m.id);
    if (!ids.includes(this.owner)) ids.push(this.owner);
    const claims: string[] = [];
    const handOvers: string[] = [];
    for (const row of owners) {
      const want = rendezvous(row.pool, ids);
      const mine = this.#held.get(row.pool);
      if (mine) {
        if (want !== this.owner && !mine.leaving) handOvers.push(row.pool);
      } else if (!row.live && (want === this.owner || row.expired_ms > this.#renewEveryMs * STRAY_PERIODS)) {
        // Free or expired: its place, or anyone's once the replica it hashes to has let it lie (stuck, or gone
        // without a leave); the hashing moves it there later by a hand-over.
        claims.push(row.pool);
      }
    }
    if (handOvers.length > 0) await this.#handOver(handOvers);
    if (claims.length > 0) await this.#claim(claims);
  }

  async #claim(pools: string[]): Promise<void> {
    const sentAt = this.#mono();
    const terms: HeldTerm[] = [];
    const tookOver = new Set<string>();
    for (const pool of pools) {
      const term = await this.#store.claim(pool, this.owner, this.#ttlMs);
      if (term === undefined) continue;
      terms.push({ pool, term });
      if (this.#owners.get(pool)?.owner) tookOver.add(pool);
    }
    await this.#load(terms, sentAt, "claimed", tookOver);
  }

  /** Loads claimed pools into the engine (the same read as a start) and serves them. */
  async #load(terms: HeldTerm[], sentAt: number, change: OwnershipChange, tookOver = new Set<string>()): Promise<void> {
    if (terms.length === 0) return;
    let state;
    try {
      state = await this.#store.load(terms.map((t) => t.pool));
    } catch (err) {
      // Nothing is in memory: give the claims back so another replica need not wait for them to expire.
      await this.#store.resign(this.owner, terms).catch(() => undefined);
      throw err;
    }
    // Synchronously: the engine and the terms change in one tick, so a snapshot sees both or neither.
    this.#engine.load(state.pools, state.keys, state.runtime, state.grantHighWater);
    const present = new Set(state.pools.map((p) => p.name));
    for (const { pool, term } of terms) {
      if (!present.has(pool)) continue;
      this.#held.set(pool, { term, trustedUntil: sentAt + this.#ttlMs - this.#marginMs, suspended: false, leaving: false });
      this.#onChange(pool, tookOver.has(pool) ? "took_over" : change, term);
    }
    this.#loaded();
    this.#log.info({ pools: terms.length, keys: state.keys.length, leases: state.runtime?.leases.length ?? 0 }, "replicas: pools loaded");
  }

  /** Hands pools over to the replicas they hash to: stop serving, write them out, drop them, resign. */
  async #handOver(pools: string[]): Promise<void> {
    for (const pool of pools) {
      this.#held.get(pool)!.leaving = true;
      this.#engine.suspendPool(pool, RETRY_AFTER_MS);
    }
    try {
      await this.#flush();
    } catch (err) {
      for (const pool of pools) {
        const h = this.#held.get(pool);
        if (!h) continue;
        h.leaving = false;
        this.#engine.resumePool(pool);
      }
      throw err;
    }
    const terms: HeldTerm[] = [];
    for (const pool of pools) {
      const h = this.#held.get(pool);
      if (!h) continue;
      terms.push({ pool, term: h.term });
      this.#held.delete(pool);
      this.#engine.unloadPool(pool, RETRY_AFTER_MS);
      this.#onChange(pool, "handed_over", h.term);
    }
    await this.#store.resign(this.owner, terms);
  }

  #drop(pool: string, change: OwnershipChange): void {
    const h = this.#held.get(pool);
    if (!h) return;
    this.#held.delete(pool);
    this.#engine.unloadPool(pool, RETRY_AFTER_MS);
    this.#onChange(pool, change, h.term);
    this.#log.warn({ pool, term: h.term }, "replicas: pool taken over by another replica; dropped from memory");
  }

  /** A term whose trust window ended without a renewal: stop serving the pool now (its state stays, in case the term is still ours). */
  #checkTrust(): void {
    const now = this.#mono();
    for (const [pool, h] of this.#held) {
      if (h.suspended || h.leaving || now < h.trustedUntil) continue;
      h.suspended = true;
      this.#engine.suspendPool(pool, RETRY_AFTER_MS);
      this.#onChange(pool, "suspended", h.term);
    }
  }
}
