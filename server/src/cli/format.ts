// Rendering admin API messages for people (aligned tables, one line per event) and for scripts (JSON).
import type { DescEnum } from "@bufbuild/protobuf";
import { durationMs, timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  CircuitStateSchema,
  EventTypeSchema,
  KeyStateSchema,
  StrategySchema,
  type AuditEntry,
  type Event,
  type BudgetRemaining,
  type Key,
  type Lease,
  type Limits,
  type Pool,
  type PoolStats,
  type UsageTotals,
  type Replica,
} from "../gen/keymesh/v1/admin_pb.js";
import { formatDuration } from "../ops/duration.js";

/** Columns padded to their widest cell, separated by two spaces; the last column is not padded. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** An enum value by its short lower-case name: KEY_STATE_AUTO_DISABLED_AUTH → "auto_disabled_auth". */
function enumName(schema: DescEnum, value: number): string {
  return schema.values.find((v) => v.number === value)?.localName.toLowerCase() ?? String(value);
}

const dash = "-";
export const count = (n: number, noun: string, plural = `${noun}s`) => `${n} ${n === 1 ? noun : plural}`;
const duration = (d: Duration | undefined) => (d ? formatDuration(durationMs(d)) : dash);
const iso = (t: Timestamp | undefined) => (t ? new Date(timestampMs(t)).toISOString() : dash);

export function poolsTable(pools: Pool[]): string {
  return table(
    ["NAME", "STRATEGY", "KEYS", "TTL (MIN/DEFAULT/MAX)", "COOLDOWN (DEFAULT/MAX)", "BREAKER", "DESCRIPTION"],
    pools.map((p) => [
      p.name,
      enumName(StrategySchema, p.strategy),
      String(p.keyCount),
      `${duration(p.minTtl)}/${duration(p.defaultTtl)}/${duration(p.maxTtl)}`,
      `${duration(p.defaultCooldown)}/${duration(p.maxCooldown)}`,
      p.circuitBreaker
        ? `${p.circuitBreaker.failureThreshold} fails, open ${duration(p.circuitBreaker.openDuration)}`
        : dash,
      p.description,
    ]),
  );
}

/** "60 rpm, 90000 tpm" for the limits declared; "-" for none. */
function limitsText(l: Limits | undefined): string {
  if (!l) return dash;
  const parts: string[] = [];
  if (l.requestsPerMinute > 0n) parts.push(`${l.requestsPerMinute} rpm`);
  if (l.tokensPerMinute > 0n) parts.push(`${l.tokensPerMinute} tpm`);
  if (l.requestsPerDay > 0n) parts.push(`${l.requestsPerDay} rpd`);
  return parts.join(", ") || dash;
}

/** What a budget has left against its limit ("12/60"), "-" when none is declared. */
function leftText(left: bigint | undefined, limit: bigint | undefined): string {
  return left === undefined || !limit ? dash : `${left}/${limit}`;
}

function usageText(u: UsageTotals | undefined): string {
  if (!u) return dash;
  return `${u.requests} requests (${u.successes} ok, ${u.rateLimited} rate-limited, ${u.failures} failed, ${u.unreported} unreported), ${u.inputTokens} in / ${u.outputTokens} out tokens`;
}

const remainingCells = (r: BudgetRemaining | undefined, l: Limits | undefined) => [
  leftText(r?.requestsPerMinute, l?.requestsPerMinute),
  leftText(r?.tokensPerMinute, l?.tokensPerMinute),
  leftText(r?.requestsPerDay, l?.requestsPerDay),
];

const metadataText = (metadata: Record<string, string>) =>
  Object.entries(metadata)
    .map(([k, v]) => `${k}=${v}`)
    .join(",") || dash;

/** One field per line, names aligned: the view of a single pool or key. */
function fields(rows: Array<[string, string]>): string {
  const width = Math.max(...rows.map(([name]) => name.length)) + 1;
  return rows.map(([name, value]) => `${`${name}:`.padEnd(width)}  ${value}`.trimEnd()).join("\n") + "\n";
}

export function poolDetail(p: Pool): string {
  const b = p.circuitBreaker;
  return fields([
    ["name", p.name],
    ["strategy", enumName(StrategySchema, p.strategy)],
    ["keys", String(p.keyCount)],
    ["ttl", `min ${duration(p.minTtl)}, default ${duration(p.defaultTtl)}, max ${duration(p.maxTtl)}`],
    ["cooldown", `default ${duration(p.defaultCooldown)}, max ${duration(p.maxCooldown)}`],
    [
      "circuit breaker",
      b ? `${b.failureThreshold} failures open it for ${duration(b.openDuration)} (at most ${duration(b.maxOpenDuration)}), ${b.halfOpenProbes} half-open probe${b.halfOpenProbes === 1 ? "" : "s"}` : dash,
    ],
    ["description", p.description || dash],
    ["quota groups", Object.entries(p.quotaGroups).map(([name, l]) => `${name}: ${limitsText(l)}`).join("; ") || dash],
    ["default estimate", p.defaultEstimatedTokens > 0n ? `${p.defaultEstimatedTokens} tokens` : dash],
    ["created", iso(p.createTime)],
    ["updated", iso(p.updateTime)],
  ]);
}

export function keyDetail(k: Key): string {
  return fields([
    ["pool", k.pool],
    ["id", k.id],
    ["label", k.label],
    ["secret", k.secretHint],
    ["state", enumName(KeyStateSchema, k.state) + (k.stateReason ? ` (${k.stateReason})` : "")],
    ["weight", String(k.weight)],
    ["max concurrency", k.maxConcurrency === 0 ? "unlimited" : String(k.maxConcurrency)],
    ["quota group", k.quotaGroup || dash],
    ["limits", limitsText(k.limits)],
    ["priority", String(k.priority)],
    ["metadata", metadataText(k.metadata)],
    ["usage", usageText(k.usage)],
    ["created", iso(k.createTime)],
    ["updated", iso(k.updateTime)],
  ]);
}

export function keysTable(keys: Key[]): string {
  return table(
    ["ID", "LABEL", "SECRET", "STATE", "WEIGHT", "MAX_CONC", "QUOTA_GROUP", "PRIO", "LIMITS", "METADATA", "REASON"],
    keys.map((k) => [
      k.id,
      k.label,
      k.secretHint,
      enumName(KeyStateSchema, k.state),
      String(k.weight),
      k.maxConcurrency === 0 ? "unlimited" : String(k.maxConcurrency),
      k.quotaGroup || dash,
      String(k.priority),
      limitsText(k.limits),
      metadataText(k.metadata),
      k.stateReason,
    ]),
  );
}

export function leasesTable(leases: Lease[]): string {
  return table(
    ["LEASE", "KEY", "HOLDER", "ACQUIRED", "EXPIRES", "TTL"],
    leases.map((l) => [l.leaseId, l.keyId, l.holder || dash, iso(l.acquireTime), iso(l.expiresAt), duration(l.ttl)]),
  );
}

/** The stats view: a summary line, then one row per key. `now` places open circuits in time. */
export function replicasTable(replicas: Replica[]): string {
  return table(
    ["ID", "ADDRESS", "HEARTBEAT_AGE", "POOLS", "OWNS"],
    replicas.map((r) => [r.id, r.address, duration(r.heartbeatAge), String(r.pools.length), r.pools.join(",") || dash]),
  );
}

export function statsTable(stats: PoolStats, now: number): string {
  const summary =
    `pool ${stats.pool}: ${count(stats.totalKeys, "key")}, ${stats.eligibleKeys} eligible, ` +
    `${count(stats.activeLeases, "active lease")}, ${stats.waiters} waiting, lending priority ${stats.servingPriority}, owner ${stats.owner || dash}, term ${stats.term}, ` +
    `${count(stats.affinities, "affinity", "affinities")}\n` +
    `usage: ${usageText(stats.usage)}\n` +
    stats.quotaGroups
      .map((g) => `quota group ${g.name} (${count(g.keys, "key")}): ${limitsText(g.limits)}; left ${remainingCells(g.remaining, g.limits).join(" ")}; ${usageText(g.usage)}\n`)
      .join("");
  const rows = stats.keys.map((k) => {
    const circuit = enumName(CircuitStateSchema, k.circuitState);
    const openFor = k.circuitOpenUntil ? timestampMs(k.circuitOpenUntil) - now : 0;
    const cooldown = k.cooldownRemaining ? durationMs(k.cooldownRemaining) : 0;
    return [
      k.keyId,
      k.label,
      enumName(KeyStateSchema, k.state),
      k.eligible ? "yes" : "no",
      k.maxConcurrency === 0 ? String(k.activeLeases) : `${k.activeLeases}/${k.maxConcurrency}`,
      k.emaLatency ? formatDuration(durationMs(k.emaLatency)) : dash,
      `${(k.successRate * 100).toFixed(1)}%`,
      cooldown > 0 ? formatDuration(cooldown) : dash,
      circuit === "open" && openFor > 0 ? `open (${formatDuration(openFor)} left)` : circuit,
      String(k.priority),
      ...remainingCells(k.remaining, k.limits),
      String(k.reservedTokens),
      String(k.totalLeases),
      k.usage ? `${k.usage.inputTokens}/${k.usage.outputTokens}` : dash,
    ];
  });
  return (
    summary +
    table(
      ["KEY", "LABEL", "STATE", "ELIGIBLE", "ACTIVE", "EMA_LATENCY", "SUCCESS", "COOLDOWN_LEFT", "CIRCUIT", "PRIO", "RPM_LEFT", "TPM_LEFT", "RPD_LEFT", "RESERVED", "TOTAL", "TOKENS_IN/OUT"],
      rows,
    )
  );
}

/** One line per event: time, type, then the fields that are set. */
export function eventLine(event: Event): string {
  const parts = [iso(event.time), enumName(EventTypeSchema, event.type), `pool=${event.pool}`];
  if (event.keyId) parts.push(`key=${event.keyId}`);
  if (event.leaseId) parts.push(`lease=${event.leaseId}`);
  if (event.until) parts.push(`until=${iso(event.until)}`);
  if (event.reason) parts.push(`reason=${JSON.stringify(event.reason)}`);
  if (event.adminChange) parts.push(`by=${JSON.stringify(event.adminChange.actor)}`, `change=${JSON.stringify(changeText(event.adminChange))}`);
  return parts.join(" ") + "\n";
}

const valueText = (v: unknown): string => (typeof v === "string" ? v : JSON.stringify(v));

/** What an entry changed: the fields that differ ("label: a → b"), or what was created or deleted. */
function changeText(entry: AuditEntry): string {
  const { before, after } = entry;
  if (!before && after) return "created";
  if (before && !after) return entry.action === "revoke_lease" && typeof before.holder === "string" && before.holder ? `holder ${before.holder}` : "deleted";
  if (!before || !after) return dash;
  const changed = [...new Set([...Object.keys(before), ...Object.keys(after)])]
    .filter((field) => JSON.stringify(before[field]) !== JSON.stringify(after[field]))
    .map((field) => `${field}: ${valueText(before[field] ?? null)} → ${valueText(after[field] ?? null)}`);
  return changed.join(", ") || "no change";
}

export function auditTable(entries: AuditEntry[]): string {
  return table(
    ["TIME", "ACTOR", "ACTION", "POOL", "OBJECT", "CHANGE", "REASON", "REPLICA"],
    entries.map((e) => [
      iso(e.time),
      e.actor,
      e.action,
      e.pool,
      e.leaseId || e.keyId || dash,
      changeText(e),
      e.reason || dash,
      e.replica,
    ]),
  );
}
