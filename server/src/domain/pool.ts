// A pool's own state besides its keys (issue 20): the priority tiers its keys are chosen in, its quota
// groups (the budgets their keys share, and their usage), its usage, its affinities, and what a snapshot
// keeps of them.
import { Affinities } from "./affinity.js";
import { DeclaredBudget } from "./budget.js";
import type { KeyEntry } from "./key.js";
import { PoolSecrets } from "./redact.js";
import type { PoolEntry } from "./state.js";
import type { Limits, PoolConfig, PoolRuntime } from "./types.js";
import { emptyUsage, usageFrom } from "./usage.js";

const NO_LIMITS: Limits = { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0 };

export function newPoolEntry(cfg: PoolConfig): PoolEntry {
  const keyList: KeyEntry[] = [];
  const pool: PoolEntry = {
    cfg: { ...cfg, quotaGroups: { ...cfg.quotaGroups } },
    keys: new Map(),
    keyList,
    tiers: [],
    groups: new Map(),
    usage: emptyUsage(),
    affinities: new Affinities(),
    claimant: undefined,
    claimed: undefined,
    wake: { kind: "budget_wake", pool: undefined!, at: 0, heapPos: -1, heapSeq: 0 },
    tokenCapacity: Infinity,
    declaresBudgets: false,
    fallbackLastGrant: undefined,
    waitHead: undefined,
    waitTail: undefined,
    waiting: 0,
    active: 0,
    exhausted: false,
    parked: [],
    secrets: new PoolSecrets(() => keyList.map((k) => k.cfg.secret)),
    unsaved: true,
  };
  pool.wake.pool = pool;
  return pool;
}

// ---- tiers ----------------------------------------------------------------------------------

/** Puts the key in the tier of its priority, creating the tier in order when it is the first. */
export function joinTier(pool: PoolEntry, k: KeyEntry): void {
  const priority = k.cfg.priority;
  let i = 0;
  while (i < pool.tiers.length && pool.tiers[i]!.priority < priority) i++;
  let tier = pool.tiers[i];
  if (tier?.priority !== priority) {
    tier = { priority, keys: [], cursor: 0 };
    pool.tiers.splice(i, 0, tier);
  }
  k.tier = tier;
  k.tierSlot = tier.keys.length;
  tier.keys.push(k);
}

export function leaveTier(pool: PoolEntry, k: KeyEntry): void {
  const tier = k.tier;
  if (!tier) return;
  const last = tier.keys.pop()!;
  if (last !== k) {
    tier.keys[k.tierSlot] = last;
    last.tierSlot = k.tierSlot;
  }
  k.tier = undefined;
  k.tierSlot = -1;
  if (tier.keys.length === 0) pool.tiers.splice(pool.tiers.indexOf(tier), 1);
  else if (tier.cursor >= tier.keys.length) tier.cursor = 0;
}

// ---- quota groups and budgets -----------------------------------------------------------------

/**
 * Brings the pool's quota groups in line with its configuration and its keys: a group exists while a key
 * names it or the pool declares its limits; new limits keep what a budget has left. Then links every key
 * to its group and recomputes what waiting needs to know.
 */
export function syncGroups(pool: PoolEntry, now: number): void {
  const declared = pool.cfg.quotaGroups;
  const wanted = new Set<string>(Object.keys(declared));
  for (const k of pool.keyList) if (k.cfg.quotaGroup !== "") wanted.add(k.cfg.quotaGroup);
  for (const name of pool.groups.keys()) if (!wanted.has(name)) pool.groups.delete(name);
  for (const name of wanted) {
    const limits = declared[name] ?? NO_LIMITS;
    const g = pool.groups.get(name);
    if (!g) {
      pool.groups.set(name, { name, limits, budget: DeclaredBudget.declares(limits) ? new DeclaredBudget(limits, undefined, now) : undefined, usage: emptyUsage(), members: 0 });
      continue;
    }
    if (!DeclaredBudget.declares(limits)) g.budget = undefined;
    else if (g.budget) g.budget.reconfigure(limits, now);
    else g.budget = new DeclaredBudget(limits, undefined, now);
    g.limits = limits;
  }
  for (const g of pool.groups.values()) g.members = 0;
  let capacity = 0;
  let declares = false;
  for (const k of pool.keyList) {
    const g = k.cfg.quotaGroup === "" ? undefined : pool.groups.get(k.cfg.quotaGroup);
    if (g) g.members++;
    k.linkGroup(g);
    capacity = Math.max(capacity, Math.min(k.declared?.tokenCapacity ?? Infinity, g?.budget?.tokenCapacity ?? Infinity));
    declares ||= k.declared !== undefined || g?.budget !== undefined;
  }
  pool.tokenCapacity = pool.keyList.length === 0 ? Infinity : capacity;
  pool.declaresBudgets = declares;
}

/** A key just added: what syncGroups would do for it alone, so adding many keys stays linear. */
export function joinGroup(pool: PoolEntry, k: KeyEntry): void {
  const name = k.cfg.quotaGroup;
  let g = name === "" ? undefined : pool.groups.get(name);
  if (name !== "" && !g) {
    g = { name, limits: NO_LIMITS, budget: undefined, usage: emptyUsage(), members: 0 };
    pool.groups.set(name, g);
  }
  if (g) g.members++;
  k.linkGroup(g);
  const capacity = Math.min(k.declared?.tokenCapacity ?? Infinity, g?.budget?.tokenCapacity ?? Infinity);
  pool.tokenCapacity = pool.keyList.length === 1 ? capacity : Math.max(pool.tokenCapacity, capacity);
  pool.declaresBudgets ||= k.declared !== undefined || g?.budget !== undefined;
}

// ---- snapshots ------------------------------------------------------------------------------

export function poolRuntime(pool: PoolEntry, now: number): PoolRuntime {
  const groups: PoolRuntime["groups"] = [];
  for (const g of pool.groups.values()) {
    const declared = g.budget?.export(now);
    groups.push(declared ? { name: g.name, declared, usage: { ...g.usage } } : { name: g.name, usage: { ...g.usage } });
  }
  return { pool: pool.cfg.name, usage: { ...pool.usage }, groups, affinities: pool.affinities.export() };
}

/** The state a snapshot kept, after the pool's keys are in; budgets refill for the time since, nothing resets. */
export function restorePool(pool: PoolEntry, r: PoolRuntime, now: number): void {
  pool.usage = usageFrom(r.usage);
  for (const s of r.groups) {
    const g = pool.groups.get(s.name);
    if (!g) continue;
    g.usage = usageFrom(s.usage);
    if (g.budget) g.budget = new DeclaredBudget(g.limits, s.declared, now);
  }
  syncGroups(pool, now);
  for (const [affinity, keyId] of r.affinities) {
    const k = pool.keys.get(keyId);
    if (k) pool.affinities.set(affinity, k);
  }
}
