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
  /** Creates the pool and claims it for this replica in the same transaction; resolves to the term it is held under. */
  insertPool(pool: PoolConfig): Promise<number>;
  updatePool(pool: PoolConfig): Promise<void>;
  /** Removes the pool with its keys, their runtime state and leases, and gives up its ownership. */
  deletePool(name: string): Promise<void>;
  insertKey(key: KeyConfig): Promise<void>;
  /** Replaces the key's configuration (the secret is sealed afresh). */
  updateKey(key: KeyConfig): Promise<void>;
  /** Removes the key with its runtime state and leases. */
  deleteKey(pool: string, keyId: string): Promise<void>;
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

  async insertPool(pool: PoolConfig): Promise<number> {
    try {
      return await this.#insertPool(pool);
    } catch (err) {
      // With several replicas the pool may exist without being in this one's memory.
      if (err instanceof StoreError && err.code === "conflict") throw new DomainError("pool_exists", `pool "${pool.name}" already exists`);
      throw err;
    }
  }

  #insertPool(pool: PoolConfig): Promise<number> {
    return this.#availability.run(() =>
      this.#sql.begin(async (tx) => {
        await pools.insertPool(tx, pool);
        return claimCreatedPool(tx, pool.name, this.#fence.owner, this.#claimTtlMs);
      }),
    ) as Promise<number>;
  }

  updatePool(pool: PoolConfig): Promise<void> {
    return this.#fenced(pool.name, (tx) => pools.updatePool(tx, pool));
  }

  deletePool(name: string): Promise<void> {
    return this.#fenced(name, async (tx, term) => {
      await pools.deletePool(tx, name);
      await resignPools(tx, this.#fence.owner, [{ pool: name, term }]);
    });
  }

  insertKey(key: KeyConfig): Promise<void> {
    return this.#fenced(key.pool, (tx) => keys.insertKey(tx, this.#box, key));
  }

  updateKey(key: KeyConfig): Promise<void> {
    return this.#fenced(key.pool, (tx) => keys.updateKey(tx, this.#box, key));
  }

  deleteKey(pool: string, keyId: string): Promise<void> {
    return this.#fenced(pool, (tx) => keys.deleteKey(tx, pool, keyId));
  }

  /** Every pool in the database with its key count (with several replicas, most are not in this one's memory). */
  listPools(): Promise<Array<PoolConfig & { keyCount: number }>> {
    return this.#availability.run(() => pools.selectPoolsWithKeyCounts(this.#sql));
  }

  /** Runs `write` in a transaction that first checks (and locks) this replica's term of `pool`. */
  async #fenced(pool: string, write: (tx: Queryable, term: number) => Promise<unknown>): Promise<void> {
    const term = this.#fence.termOf(pool);
    if (term === undefined) throw new OwnershipLost([pool]);
    await this.#availability.run(() =>
      this.#sql.begin(async (tx) => {
        await checkTerms(tx, this.#fence, [{ pool, term }]);
        await write(tx, term);
      }),
    );
  }
}
