// Write-through configuration: pools and keys, each change one transaction that first checks this replica
// still holds the pool under its term, committed before the admin RPC that made it returns, secrets sealed
// under the master key.
import type postgres from "postgres";
import type { Clock, KeyConfig, PoolConfig } from "../domain/types.js";
import type { Availability } from "./availability.js";
import { DomainError } from "../domain/errors.js";
import { MasterKeyMismatch, StoreError } from "./errors.js";
import { checkTerms, OwnershipLost, type Fence } from "./fence.js";
import type { SecretBox } from "./secrets.js";
import * as keys from "./sql/keys.js";
import { insertMasterKeyCheck, selectMasterKeyCheck } from "./sql/master-key-check.js";
import { claimCreatedPool, resignPools } from "./sql/pool-owners.js";
import * as pools from "./sql/pools.js";
import type { Queryable } from "./sql/queryable.js";

/**
 * What the admin service commits. Every change to a pool is fenced (fence.ts): it commits only while this
 * replica holds the pool under its term, else it rejects with OwnershipLost and changes nothing.
 */
export interface ConfigStore {
  /** Runs `work` in one transaction: every statement it runs on the `db` it is given commits together, or none does. */
  transaction<T>(work: (db: Queryable) => Promise<T>): Promise<T>;
  /**
   * Creates the pool and claims it for this replica in the same transaction; resolves to the term it is
   * held under. Each write runs in `db` when given (a transaction of `transaction`), else in one of its own.
   */
  insertPool(pool: PoolConfig, db?: Queryable): Promise<number>;
  updatePool(pool: PoolConfig, db?: Queryable): Promise<void>;
  /** Removes the pool with its keys, their runtime state and leases, and gives up its ownership. */
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
  readonly #fence: Fence;
  readonly #claimTtlMs: number;

  /** `claimTtlMs`: how long the claim of a pool created here lasts before its first renewal. */
  constructor(sql: postgres.Sql, box: SecretBox, availability: Availability, clock: Clock, fence: Fence, claimTtlMs: number) {
    this.#sql = sql;
    this.#box = box;
    this.#availability = availability;
    this.#clock = clock;
    this.#fence = fence;
    this.#claimTtlMs = claimTtlMs;
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

  async insertPool(pool: PoolConfig, db?: Queryable): Promise<number> {
    const insert = async (tx: Queryable) => {
      await pools.insertPool(tx, pool);
      return claimCreatedPool(tx, pool.name, this.#fence.owner, this.#claimTtlMs);
    };
    try {
      return await (db ? insert(db) : (this.#availability.run(() => this.#sql.begin(insert)) as Promise<number>));
    } catch (err) {
      // With several replicas the pool may exist without being in this one's memory.
      if (err instanceof StoreError && err.code === "conflict") throw new DomainError("pool_exists", `pool "${pool.name}" already exists`);
      throw err;
    }
  }

  updatePool(pool: PoolConfig, db?: Queryable): Promise<void> {
    return this.#fenced(pool.name, db, (tx) => pools.updatePool(tx, pool));
  }

  deletePool(name: string, db?: Queryable): Promise<void> {
    return this.#fenced(name, db, async (tx, term) => {
      await pools.deletePool(tx, name);
      await resignPools(tx, this.#fence.owner, [{ pool: name, term }]);
    });
  }

  insertKey(key: KeyConfig, db?: Queryable): Promise<void> {
    return this.#fenced(key.pool, db, (tx) => keys.insertKey(tx, this.#box, key));
  }

  updateKey(key: KeyConfig, db?: Queryable): Promise<void> {
    return this.#fenced(key.pool, db, (tx) => keys.updateKey(tx, this.#box, key));
  }

  deleteKey(pool: string, keyId: string, db?: Queryable): Promise<void> {
    return this.#fenced(pool, db, (tx) => keys.deleteKey(tx, pool, keyId));
  }

  /** Every pool in the database with its key count (with several replicas, most are not in this one's memory). */
  listPools(): Promise<Array<PoolConfig & { keyCount: number }>> {
    return this.#availability.run(() => pools.selectPoolsWithKeyCounts(this.#sql));
  }

  /** Runs `write` in `db`, or a transaction of its own, after checking (and locking) this replica's term of `pool` there. */
  async #fenced(pool: string, db: Queryable | undefined, write: (tx: Queryable, term: number) => Promise<unknown>): Promise<void> {
    const term = this.#fence.termOf(pool);
    if (term === undefined) throw new OwnershipLost([pool]);
    const fenced = async (tx: Queryable) => {
      await checkTerms(tx, this.#fence, [{ pool, term }]);
      await write(tx, term);
    };
    if (db) await fenced(db);
    else await this.#availability.run(() => this.#sql.begin(fenced));
  }
}
