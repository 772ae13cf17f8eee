// Admin: configuration changes, write-through. The engine validates, the store commits, and only then does
// the in-memory state change, so a failed database write leaves nothing half-applied (DESIGN rule 12). The
// admin RPCs and the config-file bootstrap both go through here.
import type { PoolEngine } from "../domain/engine.js";
import type { KeyConfig, KeyInput, KeyView, PoolConfig, PoolInput } from "../domain/types.js";
import type { ConfigStore } from "../store/config-store.js";

/** What a pool's creation and deletion tell ownership (service/replicas.ts): the replica that creates a pool owns it first. */
export interface PoolClaims {
  /** The monotonic instant, taken before the creating transaction is sent. */
  now(): number;
  created(pool: string, term: number, sentAt: number): void;
  deleted(pool: string): void;
}

export class Admin {
  readonly #engine: PoolEngine;
  readonly #store: ConfigStore;
  readonly #claims: PoolClaims;
  readonly #now: () => number;
  readonly #endsDurable: () => Promise<void>;

  /** `endsDurable`: resolves once the ends of the leases revoked so far are durable (Lending's). */
  constructor(engine: PoolEngine, store: ConfigStore, claims: PoolClaims, now: () => number, endsDurable: () => Promise<void>) {
    this.#engine = engine;
    this.#store = store;
    this.#claims = claims;
    this.#now = now;
    this.#endsDurable = endsDurable;
  }

  async createPool(input: PoolInput): Promise<PoolConfig> {
    const now = this.#now();
    const cfg = { ...this.#engine.preparePool(input), createdAt: now, updatedAt: now };
    const sentAt = this.#claims.now();
    const term = await this.#store.insertPool(cfg);
    this.#engine.createPool(cfg);
    this.#claims.created(cfg.name, term, sentAt);
    return cfg;
  }

  /** Changes the fields `input` defines; the rest stay. */
  async updatePool(input: PoolInput): Promise<PoolConfig> {
    const existing = this.#engine.getPool(input.name);
    const { keyCount: _, ...current } = existing;
    const prepared = this.#engine.preparePool({ ...current, ...defined(input) }, current);
    const cfg = { ...prepared, createdAt: existing.createdAt, updatedAt: this.#now() };
    await this.#store.updatePool(cfg);
    this.#engine.updatePool(cfg);
    return cfg;
  }

  async deletePool(name: string, force: boolean): Promise<void> {
    this.#engine.checkDeletePool(name, force);
    await this.#store.deletePool(name);
    this.#engine.deletePool(name);
    this.#claims.deleted(name);
    await this.#endsDurable();
  }

  async addKey(input: KeyInput): Promise<KeyConfig> {
    const now = this.#now();
    const cfg = { ...this.#engine.prepareKey(input), createdAt: now, updatedAt: now };
    await this.#store.insertKey(cfg);
    this.#engine.addKey(cfg);
    return cfg;
  }

  /** Changes the fields `input` defines (id and pool name the key); the rest stay. */
  async updateKey(input: KeyInput & { id: string }): Promise<KeyConfig> {
    const existing = this.#engine.getKeyConfig(input.pool, input.id);
    const prepared = this.#engine.prepareKey({ ...existing, ...defined(input) }, existing);
    const cfg = { ...prepared, createdAt: existing.createdAt, updatedAt: this.#now() };
    await this.#store.updateKey(cfg);
    this.#engine.updateKey(cfg);
    return cfg;
  }

  /** Without drain the key and its leases go now; with drain it lends no more and goes with its last lease (Lending deletes it). */
  async removeKey(pool: string, keyId: string, drain: boolean): Promise<void> {
    const existing = this.#engine.getKeyConfig(pool, keyId);
    if (!drain) {
      await this.#store.deleteKey(pool, keyId);
      this.#engine.removeKey(pool, keyId, false);
      await this.#endsDurable();
      return;
    }
    await this.#store.updateKey({ ...existing, disabled: true, disabledReason: "removing: draining", updatedAt: this.#now() });
    const { removedNow } = this.#engine.removeKey(pool, keyId, true);
    if (removedNow) await this.#store.deleteKey(pool, keyId);
  }

  async enableKey(pool: string, keyId: string): Promise<KeyView> {
    const existing = this.#engine.getKeyConfig(pool, keyId);
    await this.#store.updateKey({ ...existing, disabled: false, disabledReason: "", updatedAt: this.#now() });
    return this.#engine.enableKey(pool, keyId);
  }

  async disableKey(pool: string, keyId: string, drain: boolean, reason: string): Promise<KeyView> {
    const existing = this.#engine.getKeyConfig(pool, keyId);
    const stored = this.#engine.redact(pool, reason);
    await this.#store.updateKey({ ...existing, disabled: true, disabledReason: stored, updatedAt: this.#now() });
    const view = this.#engine.disableKey(pool, keyId, drain, stored);
    await this.#endsDurable();
    return view;
  }

  /** Ends the lease now, durably before it answers; its holder hears of it on KeepAlive. */
  async revokeLease(leaseId: string, reason: string): Promise<void> {
    this.#engine.revokeLease(leaseId, reason);
    await this.#endsDurable();
  }
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
