// Membership and pool ownership in Postgres (DESIGN "Replicas"): the statements the replica coordinator
// (service/replicas.ts) runs, each through Availability, and the notifications that wake it.
import type postgres from "postgres";
import type { Availability } from "./availability.js";
import { sqlState } from "./errors.js";
import { loadState, type LoadedState } from "./restore.js";
import type { SecretBox } from "./secrets.js";
import { claimAllPools, claimPool, renewPools, resignPools, selectOwners, type HeldTerm, type OwnerRow } from "./sql/pool-owners.js";
import { deleteReplica, selectLiveReplicas, upsertReplica, type ReplicaRow } from "./sql/replicas.js";

export type { HeldTerm, OwnerRow, ReplicaRow };

/** What the replica coordinator needs of the database. */
export interface OwnershipStore {
  /** Records the replica's heartbeat (its row on the first); `announce` wakes the other replicas (a join). */
  heartbeat(id: string, address: string, announce: boolean): Promise<void>;
  /** Removes the replica's row. */
  leave(id: string): Promise<void>;
  /** Replicas whose heartbeat is younger than `liveMs`. */
  members(liveMs: number): Promise<ReplicaRow[]>;
  /** Every pool with its ownership row. */
  owners(liveMs: number): Promise<OwnerRow[]>;
  /** The new term, or undefined when the pool is held by another replica (or gone). */
  claim(pool: string, owner: string, ttlMs: number): Promise<number | undefined>;
  /** Every pool, unconditionally (the embedded database's only process). */
  claimAll(owner: string): Promise<HeldTerm[]>;
  /** The pools still held under the given terms, renewed. */
  renew(owner: string, held: HeldTerm[], ttlMs: number): Promise<string[]>;
  /** Gives the pools up and wakes the other replicas. */
  resign(owner: string, held: HeldTerm[]): Promise<void>;
  /** Configuration, last snapshot and journal of `pools`: what a start or a takeover loads. */
  load(pools: string[]): Promise<LoadedState>;
  /** Calls `fn` whenever a replica joins, resigns or leaves. */
  onChange(fn: () => void): Promise<void>;
}

const CHANNEL = "keymesh_owners";
const LOCK_NOT_AVAILABLE = "55P03";

export class PostgresOwnershipStore implements OwnershipStore {
  readonly #sql: postgres.Sql;
  readonly #box: SecretBox;
  readonly #availability: Availability;

  constructor(sql: postgres.Sql, box: SecretBox, availability: Availability) {
    this.#sql = sql;
    this.#box = box;
    this.#availability = availability;
  }

  heartbeat(id: string, address: string, announce: boolean): Promise<void> {
    return this.#availability.run(async () => {
      await upsertReplica(this.#sql, id, address);
      if (announce) await this.#sql`select pg_notify(${CHANNEL}, ${id})`;
    });
  }

  leave(id: string): Promise<void> {
    return this.#availability.run(async () => {
      await deleteReplica(this.#sql, id);
      await this.#sql`select pg_notify(${CHANNEL}, ${id})`;
    });
  }

  members(liveMs: number): Promise<ReplicaRow[]> {
    return this.#availability.run(() => selectLiveReplicas(this.#sql, liveMs));
  }

  owners(liveMs: number): Promise<OwnerRow[]> {
    return this.#availability.run(async () => [...(await selectOwners(this.#sql, liveMs))]);
  }

  /** Gives up at once when the row is locked (its owner is writing it, or hung inside a transaction): the next round retries. */
  claim(pool: string, owner: string, ttlMs: number): Promise<number | undefined> {
    return this.#availability.run(async () => {
      try {
        return (await this.#sql.begin(async (tx) => {
          await tx`set local lock_timeout = '200ms'`;
          return claimPool(tx, pool, owner, ttlMs);
        })) as number | undefined;
      } catch (err) {
        if (sqlState(err) === LOCK_NOT_AVAILABLE) return undefined;
        throw err;
      }
    });
  }

  claimAll(owner: string): Promise<HeldTerm[]> {
    return this.#availability.run(async () => [...(await claimAllPools(this.#sql, owner))]);
  }

  renew(owner: string, held: HeldTerm[], ttlMs: number): Promise<string[]> {
    return this.#availability.run(() => renewPools(this.#sql, owner, held, ttlMs));
  }

  resign(owner: string, held: HeldTerm[]): Promise<void> {
    return this.#availability.run(() => resignPools(this.#sql, owner, held));
  }

  load(pools: string[]): Promise<LoadedState> {
    return loadState(this.#sql, this.#box, this.#availability, pools);
  }

  async onChange(fn: () => void): Promise<void> {
    await this.#availability.run(() => this.#sql.listen(CHANNEL, () => fn(), fn));
  }
}
