// DOM building and formatting for the dashboard. Every value from the server goes in as text (never
// as markup), so a key label or a holder name cannot inject anything.
import { durationMs, timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  CircuitState,
  EventType,
  KeyState,
  Strategy,
  type Event,
  type Key,
  type KeyStats,
  type Lease,
  type Pool,
  type PoolStats,
  type ProviderBudget,
} from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { formatDuration } from "../../server/src/ops/duration.js";

type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  for (const child of children) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

function button(label: string, onClick: () => void, attrs: Record<string, string> = {}): HTMLButtonElement {
  const el = h("button", { type: "button", ...attrs }, label);
  el.addEventListener("click", onClick);
  return el;
}

function table(headers: string[], rows: HTMLTableRowElement[]): HTMLTableElement {
  return h("table", {}, h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, ...rows));
}

const dash = "–";
const ms = (d: Duration | undefined) => (d ? durationMs(d) : 0);
const clock = (t: Timestamp | undefined) => (t ? new Date(timestampMs(t)).toLocaleTimeString([], { hour12: false }) : dash);
const big = (n: bigint | undefined) => (n === undefined ? "?" : n.toLocaleString("en"));
/** How long until an instant of the server's, read on this browser's clock. */
const untilText = (t: Timestamp | undefined, now: number) => (t ? formatDuration(Math.max(0, timestampMs(t) - now)) : "");

const strategyName = (s: Strategy) => (s === Strategy.UNSPECIFIED ? "round_robin" : Strategy[s].toLowerCase());

/** Each key state's words and the class that colours them. */
const STATES: Record<KeyState, { text: string; tone: string }> = {
  [KeyState.UNSPECIFIED]: { text: "unknown", tone: "" },
  [KeyState.ENABLED]: { text: "enabled", tone: "ok" },
  [KeyState.DISABLED]: { text: "disabled", tone: "off" },
  [KeyState.AUTO_DISABLED_AUTH]: { text: "auto-disabled (auth)", tone: "bad" },
  [KeyState.AUTO_DISABLED_QUOTA]: { text: "auto-disabled (quota)", tone: "bad" },
  [KeyState.DRAINING]: { text: "draining", tone: "warn" },
};

export interface PoolActions {
  disable(key: KeyStats): void;
  enable(key: KeyStats): void;
  revoke(lease: Lease): void;
}

export function poolsSection(pools: Pool[], stats: Map<string, PoolStats>, selected: string | undefined): HTMLElement[] {
  if (pools.length === 0) return [h("p", { class: "muted" }, "No pools yet. Create one with the CLI: keymesh pools create NAME")];
  const rows = pools.map((p) => {
    const s = stats.get(p.name);
    const starved = s !== undefined && s.totalKeys > 0 && s.eligibleKeys === 0;
    return h(
      "tr",
      { "data-pool": p.name, class: [p.name === selected ? "selected" : "", starved ? "alarm" : ""].join(" ").trim() },
      h("td", {}, h("a", { href: `#pool=${encodeURIComponent(p.name)}` }, p.name)),
      h("td", {}, strategyName(p.strategy)),
      h("td", { class: "num" }, s ? `${s.eligibleKeys} / ${s.totalKeys}` : String(p.keyCount)),
      h("td", { class: "num" }, s ? String(s.activeLeases) : dash),
      h("td", { class: "num" }, s ? String(s.waiters) : dash),
      h("td", {}, p.description),
    );
  });
  return [table(["Pool", "Strategy", "Eligible / keys", "Live leases", "Waiters", "Description"], rows)];
}

function budgetText(b: ProviderBudget | undefined, now: number): string {
  if (!b) return dash;
  const part = (label: string, remaining?: bigint, limit?: bigint, reset?: Timestamp) => {
    if (remaining === undefined && limit === undefined) return "";
    const resets = reset && timestampMs(reset) > now ? `, full in ${untilText(reset, now)}` : "";
    return `${label} ${big(remaining)} / ${big(limit)}${resets}`;
  };
  return [part("req", b.requestsRemaining, b.requestsLimit, b.requestsResetAt), part("tok", b.tokensRemaining, b.tokensLimit, b.tokensResetAt)]
    .filter((s) => s !== "")
    .join("; ") || dash;
}

function circuitText(k: KeyStats, now: number): string {
  switch (k.circuitState) {
    case CircuitState.OPEN:
      return `open, ${untilText(k.circuitOpenUntil, now)} left`;
    case CircuitState.HALF_OPEN:
      return "half-open";
    default:
      return "closed";
  }
}

function keyRow(k: KeyStats, config: Key | undefined, now: number, actions: PoolActions | undefined): HTMLTableRowElement {
  const enabled = k.state === KeyState.ENABLED;
  const cooldown = ms(k.cooldownRemaining);
  return h(
    "tr",
    { "data-key": k.keyId, class: k.eligible ? "" : "ineligible" },
    h(
      "td",
      { class: "name" },
      h("strong", {}, k.keyId),
      k.label !== k.keyId && h("div", {}, k.label),
      config && h("div", { class: "muted" }, config.secretHint),
    ),
    h(
      "td",
      {},
      h("span", { class: `state ${STATES[k.state].tone}` }, STATES[k.state].text),
      config?.stateReason && h("div", { class: "muted" }, config.stateReason),
    ),
    h("td", {}, k.eligible ? "yes" : "no"),
    h("td", { class: k.circuitState === CircuitState.OPEN ? "bad" : "" }, circuitText(k, now)),
    h("td", { class: cooldown > 0 ? "warn" : "" }, cooldown > 0 ? formatDuration(cooldown) : dash),
    h("td", { class: "num" }, k.maxConcurrency === 0 ? String(k.activeLeases) : `${k.activeLeases} / ${k.maxConcurrency}`),
    h("td", { class: "num" }, k.emaLatency ? formatDuration(ms(k.emaLatency)) : dash),
    h(
      "td",
      { class: "num" },
      `${(k.successRate * 100).toFixed(1)}%`,
      k.consecutiveFailures > 0 && h("div", { class: "bad" }, `${k.consecutiveFailures} failing`),
    ),
    h("td", {}, budgetText(k.budget, now)),
    h(
      "td",
      { class: "num" },
      `${big(k.totalLeases)} leases, ${k.recentLeases} recent`,
      h("div", { class: "muted" }, `${big(k.inputTokens)} in / ${big(k.outputTokens)} out tokens`),
    ),
    actions &&
      h(
        "td",
        {},
        enabled
          ? button("Disable", () => actions.disable(k), { class: "danger" })
          : button("Enable", () => actions.enable(k)),
      ),
  );
}

function leaseRow(l: Lease, now: number, actions: PoolActions | undefined): HTMLTableRowElement {
  return h(
    "tr",
    { "data-lease": l.leaseId },
    h("td", { class: "mono", title: l.leaseId }, `${l.leaseId.slice(0, 16)}…`),
    h("td", {}, l.keyId),
    h("td", {}, l.holder || dash),
    h("td", {}, clock(l.acquireTime)),
    h("td", {}, `in ${untilText(l.expiresAt, now)}`),
    h("td", {}, l.ttl ? formatDuration(ms(l.ttl)) : dash),
    actions && h("td", {}, button("Revoke", () => actions.revoke(l), { class: "danger" })),
  );
}

export interface PoolDetail {
  pool: Pool;
  stats?: PoolStats;
  keys: Map<string, Key>;
  leases: Lease[];
  /** How many keys and leases the tables show at most. */
  keysShown: number;
}

export function poolSection(d: PoolDetail, now: number, actions: PoolActions | undefined): HTMLElement[] {
  const { pool, stats } = d;
  const out: HTMLElement[] = [h("h2", {}, `Pool ${pool.name}`)];
  if (!stats) return [...out, h("p", { class: "muted" }, "No stats for this pool (deleted?).")];
  out.push(
    h(
      "p",
      {},
      `${stats.totalKeys} keys, ${stats.eligibleKeys} eligible, ${stats.activeLeases} live leases, ${stats.waiters} waiting. `,
      `Strategy ${strategyName(pool.strategy)}, lease ttl ${formatDuration(ms(pool.minTtl))}–${formatDuration(ms(pool.maxTtl))}.`,
    ),
  );
  if (!actions) out.push(h("p", { class: "muted" }, "Read-only: unlock actions with an admin token to disable, enable or revoke."));
  const keyHeaders = ["Key", "State", "Eligible", "Circuit", "Cooldown", "Leases", "EMA latency", "Success", "Budget", "Usage"];
  const keys = stats.keys.slice(0, d.keysShown);
  out.push(
    h("h3", {}, "Keys"),
    table(actions ? [...keyHeaders, ""] : keyHeaders, keys.map((k) => keyRow(k, d.keys.get(k.keyId), now, actions))),
  );
  if (stats.keys.length > keys.length) out.push(h("p", { class: "muted" }, `Showing the first ${keys.length} of ${stats.keys.length} keys.`));
  const leaseHeaders = ["Lease", "Key", "Holder", "Acquired", "Expires", "TTL"];
  out.push(h("h3", {}, "Live leases"));
  if (d.leases.length === 0) {
    out.push(h("p", { class: "muted" }, "None."));
  } else {
    out.push(table(actions ? [...leaseHeaders, ""] : leaseHeaders, d.leases.map((l) => leaseRow(l, now, actions))));
    if (stats.activeLeases > d.leases.length) out.push(h("p", { class: "muted" }, `Showing the oldest ${d.leases.length} of ${stats.activeLeases}.`));
  }
  return out;
}

const EVENT_CLASS: Partial<Record<EventType, string>> = {
  [EventType.KEY_AUTO_DISABLED]: "bad",
  [EventType.CIRCUIT_OPENED]: "bad",
  [EventType.POOL_EXHAUSTED]: "bad",
  [EventType.LEASE_EXPIRED]: "warn",
  [EventType.COOLDOWN_STARTED]: "warn",
  [EventType.LAGGED]: "warn",
};

export function eventItem(e: Event): HTMLLIElement {
  const type = EventType[e.type]?.toLowerCase() ?? String(e.type);
  return h(
    "li",
    { class: EVENT_CLASS[e.type] ?? "" },
    h("time", {}, clock(e.time)),
    " ",
    h("strong", {}, type),
    ` ${e.pool}`,
    e.keyId && ` / ${e.keyId}`,
    e.reason && h("div", { class: "muted" }, e.adminChange ? `${e.reason} by ${e.adminChange.actor}` : e.reason),
  );
}
