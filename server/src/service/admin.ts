// Admin: configuration changes, write-through. The engine validates, the store commits, and only then does
// the in-memory state change, so a failed database write leaves nothing half-applied (DESIGN rule 12). Each
// change is recorded in the audit trail in the same transaction, so a change and its record commit together;
// once committed it is logged and published. The admin RPCs and the config file both go through here.
import { keyRecord, poolRecord, type AuditChange, type AuditEntry } from "../domain/audit.js";
import type { PoolEngine } from "../domain/engine.js";
import type { KeyConfig, KeyInput, KeyView, PoolConfig, PoolInput } from "../domain/types.js";
import type { AuditTrail } from "../store/audit-trail.js";
import type { ConfigStore } from "../store/config-store.js";
import type { Queryable } from "../store/sql/queryable.js";

export interface AdminOptions {
  engine: PoolEngine;
  store: ConfigStore;
  audit: AuditTrail;
  now: () => number;
  /** The server process, as audit entries name it. */
  replica: string;
  log: { info(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /** Each recorded change, once committed (WatchEvents). */
  onRecorded?: (entry: AuditEntry) => void;
  /** Resolves once the ends of the leases revoked so far are durable (Lending's). */
  endsDurable: () => Promise<void>;
  /** What ownership hears of a pool's creation and deletion. */
  claims: PoolClaims;
}

/** What a pool's creation and deletion tell ownership (service/replicas.ts): the replica that creates a pool owns it first. */
interface PoolClaims {
  /** The monotonic instant, taken before the creating transaction is sent. */
  now(): number;
  created(pool: string, term: number, sentAt: number): void;
  deleted(pool: string): void;
}

/** What a change records besides who made it: the action and the object before and after. */
type ChangeRecord = Omit<AuditChange, "at" | "actor" | "replica">;


export class Admin {
  readonly #engine: PoolEngine;
  readonly #store: ConfigStore;
  readonly #opts: AdminOptions;

  constructor(opts: AdminOptions) {
    this.#engine = opts.engine;
    this.#store = opts.store;
    this.#opts = opts;
  }

  async createPool(actor: string, input: PoolInput): Promise<PoolConfig> {
    const now = this.#opts.now();
    const cfg = { ...this.#engine.preparePool(input), createdAt: now, updatedAt: now };
    const sentAt = this.#opts.claims.now();
    let term = 0;
    await this.#commit(actor, now, { action: "create_pool", pool: cfg.name, after: poolRecord(cfg) }, async (db) => {
      term = await this.#store.insertPool(cfg, db);
    });
    this.#engine.createPool(cfg);
    this.#opts.claims.created(cfg.name, term, sentAt);
    return cfg;
  }

  /** Changes the fields `input` defines; the rest stay. */
  async updatePool(actor: string, input: PoolInput): Promise<PoolConfig> {
    const existing = this.#engine.getPool(input.name);
    const { keyCount: _, ...current } = existing;
    const prepared = this.#engine.preparePool({ ...current, ...defined(input) }, current);
    const now = this.#opts.now();
    const cfg = { ...prepared, createdAt: existing.createdAt, updatedAt: now };
    const record: ChangeRecord = { action: "update_pool", pool: cfg.name, before: poolRecord(current), after: poolRecord(cfg) };
    await this.#commit(actor, now, record, (db) => this.#store.updatePool(cfg, db));
    this.#engine.updatePool(cfg);
    return cfg;
  }

  async deletePool(actor: string, name: string, force: boolean): Promise<void> {
    this.#engine.checkDeletePool(name, force);
    const { keyCount, ...current } = this.#engine.getPool(name);
    const record: ChangeRecord = { action: "delete_pool", pool: name, before: { ...poolRecord(current), keyCount }, reason: force ? "force" : undefined };
    await this.#commit(actor, this.#opts.now(), record, (db) => this.#store.deletePool(name, db));
    this.#engine.deletePool(name);
    this.#opts.claims.deleted(name);
    await this.#opts.endsDurable();
  }

  async addKey(actor: string, input: KeyInput): Promise<KeyConfig> {
    const now = this.#opts.now();
    const cfg = { ...this.#engine.prepareKey(input), createdAt: now, updatedAt: now };
    await this.#commit(actor, now, { action: "add_key", pool: cfg.pool, keyId: cfg.id, after: keyRecord(cfg) }, (db) => this.#store.insertKey(cfg, db));
    this.#engine.addKey(cfg);
    return cfg;
  }

  /** Changes the fields `input` defines (id and pool name the key); the rest stay. */
  async updateKey(actor: string, input: KeyInput & { id: string }): Promise<KeyConfig> {
    const existing = this.#engine.getKeyConfig(input.pool, input.id);
    const prepared = this.#engine.prepareKey({ ...existing, ...defined(input) }, existing);
    const now = this.#opts.now();
    const cfg = { ...prepared, createdAt: existing.createdAt, updatedAt: now };
    const record: ChangeRecord = { action: "update_key", pool: cfg.pool, keyId: cfg.id, before: keyRecord(existing), after: keyRecord(cfg) };
    await this.#commit(actor, now, record, (db) => this.#store.updateKey(cfg, db));
    this.#engine.updateKey(cfg);
    return cfg;
  }

  /** Without drain the key and its leases go now; with drain it lends no more and goes with its last lease (Lending deletes it). */
  async removeKey(actor: string, pool: string, keyId: string, drain: boolean): Promise<void> {
    const existing = this.#engine.getKeyConfig(pool, keyId);
    const now = this.#opts.now();
    const record: ChangeRecord = { action: "remove_key", pool, keyId, before: keyRecord(existing) };
    if (!drain) {
      await this.#commit(actor, now, record, (db) => this.#store.deleteKey(pool, keyId, db));
      this.#engine.removeKey(pool, keyId, false);
      await this.#opts.endsDurable();
      return;
    }
    const draining = { ...existing, disabled: true, disabledReason: "removing: draining", updatedAt: now };
    await this.#commit(actor, now, { ...record, reason: "drain" }, (db) => this.#store.updateKey(draining, db));
    const { removedNow } = this.#engine.removeKey(pool, keyId, true);
    if (removedNow) await this.#store.deleteKey(pool, keyId);
  }

  async enableKey(actor: string, pool: string, keyId: string): Promise<KeyView> {
    const existing = this.#engine.getKeyConfig(pool, keyId);
    const now = this.#opts.now();
    const cfg = { ...existing, disabled: false, disabledReason: "", updatedAt: now };
    const record: ChangeRecord = { action: "enable_key", pool, keyId, before: keyRecord(existing), after: keyRecord(cfg) };
    await this.#commit(actor, now, record, (db) => this.#store.updateKey(cfg, db));
    return this.#engine.enableKey(pool, keyId);
  }

  async disableKey(actor: string, pool: string, keyId: string, drain: boolean, reason: string): Promise<KeyView> {
    const existing = this.#engine.getKeyConfig(pool, keyId);
    const now = this.#opts.now();
    const stored = this.#engine.redact(pool, reason);
    const cfg = { ...existing, disabled: true, disabledReason: stored, updatedAt: now };
    const record: ChangeRecord = { action: "disable_key", pool, keyId, before: keyRecord(existing), after: keyRecord(cfg), reason: drain ? `${stored} (drain)` : stored };
    await this.#commit(actor, now, record, (db) => this.#store.updateKey(cfg, db));
    const view = this.#engine.disableKey(pool, keyId, drain, stored);
    await this.#opts.endsDurable();
    return view;
  }

  /**
   * Ends the lease now, durably before it answers; its holder hears of it on KeepAlive. A revocation changes
   * no stored configuration, so it happens first and is recorded after; when the record cannot be written
   * the log line still is.
   */
  async revokeLease(actor: string, leaseId: string, reason: string): Promise<void> {
    const lease = this.#engine.revokeLease(leaseId, reason);
    await this.#opts.endsDurable();
    const record: ChangeRecord = {
      action: "revoke_lease",
      pool: lease.pool,
      keyId: lease.keyId,
      leaseId,
      before: { holder: lease.holder, acquiredAt: lease.acquiredAt, expiresAt: lease.expiresAt },
      reason: this.#engine.redact(lease.pool, reason),
    };
    try {
      await this.#commit(actor, this.#opts.now(), record);
    } catch (err) {
      this.#opts.log.error({ audit: this.#change(actor, this.#opts.now(), record), err: (err as Error).message }, "admin change not recorded in the audit trail");
    }
  }

  /** Commits `write` with the change's audit row in one transaction, then logs and publishes the entry. */
  async #commit(actor: string, at: number, record: ChangeRecord, write?: (db: Queryable) => Promise<void>): Promise<void> {
    const change = this.#change(actor, at, record);
    const entry = await this.#store.transaction(async (db) => {
      await write?.(db);
      return this.#opts.audit.append(change, db);
    });
    this.#opts.log.info({ audit: entry }, "admin change");
    this.#opts.onRecorded?.(entry);
  }

  #change(actor: string, at: number, record: ChangeRecord): AuditChange {
    return { at, actor, replica: this.#opts.replica, ...(defined(record) as ChangeRecord) };
  }
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
