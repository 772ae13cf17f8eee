// Write-through configuration: pools and keys, each change one statement (or the caller's transaction)
// committed before the admin RPC that made it returns, secrets sealed under the master key.
import type postgres from "postgres";
import type { Clock, KeyConfig, PoolConfig } from "../domain/types.js";
import type { Availability } from "./availability.js";
import { MasterKeyMismatch } from "./errors.js";
import type { SecretBox } from "./secrets.js";
import * as keys from "./sql/keys.js";
import { insertMasterKeyCheck, selectMasterKeyCheck } from "./sql/master-key-check.js";
import * as pools from "./sql/pools.js";
import type { Queryable } from "./sql/queryable.js";

/** What the admin service commits; every method runs on `db` when given (a transaction), else on its own. */
export interface ConfigStore {
  /** Runs `work` in one transaction: every statement it runs on the `db` it is given commits together, or none does. */
  transaction<T>(work: (db: Queryable) => Promise<T>): Promise<T>;
  insertPool(pool: PoolConfig, db?: Queryable): Promise<void>;
  updatePool(pool: PoolConfig, db?: Queryable): Promise<void>;
  /** Removes the pool with its keys, their runtime state and leases. */
  deletePool(name: string, db?: Queryable): Promise<void>;
  insertKey(key: KeyConfig, db?: Queryable): Promise<void>;
  /** Replaces the key's configuration (the secret is sealed afresh). */
  updateKey(key: KeyConfig, db?: Queryable): Promise<void>;
  /** Removes the key with its runtime state and leases. */
  deleteKey(pool: string, keyId: string, db?: Queryable): Promise<void>;
}

const MASTER_KEY_CHECK = "keymesh master key check v1";
const MASTER_KEY_CHECK_CONTEXT = "master_key_check";

export class PostgresConfigStore implements ConfigStore {
  readonly #sql: postgres.Sql;
  readonly #box: SecretBox;
  readonly #availability: Availability;
  readonly #clock: Clock;

  constructor(sql: postgres.Sql, box: SecretBox, availability: Availability, clock: Clock) {
    this.#sql = sql;
    this.#box = box;
    this.#availability = availability;
    this.#clock = clock;
  }

  /** Throws MasterKeyMismatch unless the master key opens what the database holds (its first start records it). */
  async verifyMasterKey(): Promise<void> {
    const sealed = this.#box.seal(MASTER_KEY_CHECK, MASTER_KEY_CHECK_CONTEXT);
    const row = await this.#availability.run(async () => {
      await insertMasterKeyCheck(this.#sql, sealed, this.#clock.now());
      return selectMasterKeyCheck(this.#sql);
    });
    let check: string;
    try {
      check = this.#box.open(row, MASTER_KEY_CHECK_CONTEXT);
    } catch {
      throw new MasterKeyMismatch();
    }
    if (check !== MASTER_KEY_CHECK) throw new MasterKeyMismatch();
  }

  transaction<T>(work: (db: Queryable) => Promise<T>): Promise<T> {
    return this.#availability.run(() => this.#sql.begin((tx) => work(tx)) as Promise<T>);
  }

  async insertPool(pool: PoolConfig, db: Queryable = this.#sql): Promise<void> {
    await this.#availability.run(() => pools.insertPool(db, pool));
  }

  async updatePool(pool: PoolConfig, db: Queryable = this.#sql): Promise<void> {
    await this.#availability.run(() => pools.updatePool(db, pool));
  }

  async deletePool(name: string, db: Queryable = this.#sql): Promise<void> {
    await this.#availability.run(() => pools.deletePool(db, name));
  }

  async insertKey(key: KeyConfig, db: Queryable = this.#sql): Promise<void> {
    await this.#availability.run(() => keys.insertKey(db, this.#box, key));
  }

  async updateKey(key: KeyConfig, db: Queryable = this.#sql): Promise<void> {
    await this.#availability.run(() => keys.updateKey(db, this.#box, key));
  }

  async deleteKey(pool: string, keyId: string, db: Queryable = this.#sql): Promise<void> {
    await this.#availability.run(() => keys.deleteKey(db, pool, keyId));
  }
}
