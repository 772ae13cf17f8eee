// KEYMESH_CONFIG: a YAML or JSON file declaring pools, keys and auth tokens, applied at start.
// Only the fields the file names are managed; anything it leaves out keeps its current value
// (or the server default on creation). Keys missing from the file are removed only from pools
// marked `managed: true`.
import { readFileSync } from "node:fs";
import { LineCounter, isMap, parseDocument, type Document } from "yaml";
import type { KeyConfig, KeyInput, PoolConfig, PoolInput, Strategy } from "../domain/types.js";
import { MIN_TOKEN_LENGTH, parseScope, type Scope, type TokenGrant } from "./auth.js";
import { parseDuration } from "./duration.js";

/** Pool settings a file may declare (PoolInput without the name). */
type PoolSettings = Omit<PoolInput, "name">;

interface DeclaredKey {
  id: string;
  /** Resolved plaintext (after `${ENV_VAR}` substitution); never logged. */
  secret: string;
  label?: string;
  weight?: number;
  maxConcurrency?: number;
  quotaGroup?: string;
  metadata?: Record<string, string>;
  disabled?: boolean;
}

interface DeclaredPool {
  name: string;
  /** When true, keys of this pool that the file does not list are removed. */
  managed: boolean;
  settings: PoolSettings;
  keys: DeclaredKey[];
}

export interface DeclarativeConfig {
  source: string;
  pools: DeclaredPool[];
  tokens: TokenGrant[];
}

/** A bad config file: names the file, the line and the field. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${file}${line === undefined ? "" : `:${line}`}: ${field ? `${field}: ` : ""}${problem}`);
    this.name = "ConfigError";
  }
}

type Path = Array<string | number>;

const STRATEGIES: Strategy[] = ["round_robin", "least_busy", "weighted", "least_used", "latency"];
const POOL_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const KEY_ID = /^[A-Za-z0-9._-]{1,63}$/;
const ENV_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

const POOL_FIELDS = new Set([
  "name", "strategy", "min_ttl", "max_ttl", "default_ttl", "default_cooldown", "max_cooldown",
  "circuit_breaker", "description", "managed", "keys",
]);
const BREAKER_FIELDS = new Set(["failure_threshold", "open_duration", "max_open_duration", "half_open_probes"]);
const KEY_FIELDS = new Set([
  "id", "secret", "label", "weight", "max_concurrency", "quota_group", "metadata", "disabled",
]);
const DURATION_FIELDS: Array<[string, keyof PoolSettings]> = [
  ["min_ttl", "minTtlMs"],
  ["max_ttl", "maxTtlMs"],
  ["default_ttl", "defaultTtlMs"],
  ["default_cooldown", "defaultCooldownMs"],
  ["max_cooldown", "maxCooldownMs"],
];

function formatPath(path: Path): string {
  return path.reduce<string>(
    (out, part) => (typeof part === "number" ? `${out}[${part}]` : out ? `${out}.${part}` : part),
    "",
  );
}

/** Reads and validates a config file; every problem is a ConfigError naming file, line and field. */
export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): DeclarativeConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message;
    throw new ConfigError(path, undefined, "", `cannot read config file: ${reason}`);
  }
  return parseConfig(text, path, env);
}

/** Parses config text (YAML, or JSON which YAML reads too) attributed to `source`. */
export function parseConfig(text: string, source: string, env: NodeJS.ProcessEnv = process.env): DeclarativeConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const syntax = doc.errors[0];
  if (syntax) {
    // The parser's own message may quote file content (a secret); keep only its first clause.
    const problem = syntax.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    const line = syntax.linePos?.[0].line ?? (syntax.pos ? lineCounter.linePos(syntax.pos[0]).line : undefined);
    throw new ConfigError(source, line, "", `invalid YAML/JSON: ${problem}`);
  }
  return new Reader(doc, lineCounter, source, env).read();
}

class Reader {
  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
    private readonly source: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  read(): DeclarativeConfig {
    const root: unknown = this.doc.toJS({ maxAliasCount: 100 });
    if (root === null || root === undefined) return { source: this.source, pools: [], tokens: [] };
    const top = this.mapping(root, []);
    this.onlyFields(top, [], new Set(["pools", "auth"]));
    const pools = top.pools === undefined ? [] : this.list(top.pools, ["pools"]).map((p, i) => this.pool(p, ["pools", i]));
    const seen = new Map<string, number>();
    pools.forEach((pool, i) => {
      if (seen.has(pool.name)) {
        this.fail(["pools", i, "name"], `duplicate pool "${pool.name}" (also pools[${seen.get(pool.name)}])`);
      }
      seen.set(pool.name, i);
    });
    return { source: this.source, pools, tokens: this.auth(top.auth) };
  }

  private pool(value: unknown, at: Path): DeclaredPool {
    const raw = this.mapping(value, at);
    this.onlyFields(raw, at, POOL_FIELDS);
    const name = this.requiredString(raw, at, "name");
    if (!POOL_NAME.test(name)) {
      this.fail([...at, "name"], "must be 1-63 characters of [a-z0-9._-], starting with a letter or digit");
    }
    const settings: PoolSettings = {};
    if (raw.strategy !== undefined) {
      if (!STRATEGIES.includes(raw.strategy as Strategy)) {
        this.fail([...at, "strategy"], `must be one of ${STRATEGIES.join(", ")}`);
      }
      settings.strategy = raw.strategy as Strategy;
    }
    for (const [field, target] of DURATION_FIELDS) {
      if (raw[field] !== undefined) (settings as Record<string, number>)[target] = this.duration(raw[field], [...at, field]);
    }
    if (raw.description !== undefined) settings.description = this.string(raw.description, [...at, "description"]);
    if (raw.circuit_breaker !== undefined) this.breaker(raw.circuit_breaker, [...at, "circuit_breaker"], settings);
    this.ordered(at, settings, "minTtlMs", "min_ttl", "defaultTtlMs", "default_ttl");
    this.ordered(at, settings, "defaultTtlMs", "default_ttl", "maxTtlMs", "max_ttl");
    this.ordered(at, settings, "minTtlMs", "min_ttl", "maxTtlMs", "max_ttl");
    this.ordered(at, settings, "defaultCooldownMs", "default_cooldown", "maxCooldownMs", "max_cooldown");
    this.ordered([...at, "circuit_breaker"], settings, "openDurationMs", "open_duration", "maxOpenDurationMs", "max_open_duration");
    const managed = raw.managed === undefined ? false : this.boolean(raw.managed, [...at, "managed"]);
    const keys = raw.keys === undefined ? [] : this.list(raw.keys, [...at, "keys"]).map((k, i) => this.key(k, [...at, "keys", i]));
    const ids = new Map<string, number>();
    keys.forEach((key, i) => {
      if (ids.has(key.id)) this.fail([...at, "keys", i, "id"], `duplicate key id "${key.id}" (also keys[${ids.get(key.id)}])`);
      ids.set(key.id, i);
    });
    return { name, managed, settings, keys };
  }

  private breaker(value: unknown, at: Path, settings: PoolSettings): void {
    const raw = this.mapping(value, at);
    this.onlyFields(raw, at, BREAKER_FIELDS);
    if (raw.failure_threshold !== undefined) settings.failureThreshold = this.positiveInt(raw.failure_threshold, [...at, "failure_threshold"]);
    if (raw.open_duration !== undefined) settings.openDurationMs = this.duration(raw.open_duration, [...at, "open_duration"]);
    if (raw.max_open_duration !== undefined) settings.maxOpenDurationMs = this.duration(raw.max_open_duration, [...at, "max_open_duration"]);
    if (raw.half_open_probes !== undefined) settings.halfOpenProbes = this.positiveInt(raw.half_open_probes, [...at, "half_open_probes"]);
  }

  private key(value: unknown, at: Path): DeclaredKey {
    const raw = this.mapping(value, at);
    this.onlyFields(raw, at, KEY_FIELDS);
    const id = this.requiredString(raw, at, "id");
    if (!KEY_ID.test(id)) this.fail([...at, "id"], "must be 1-63 characters of [A-Za-z0-9._-]");
    if (raw.secret === undefined) this.fail([...at, "secret"], "is required (a value or a ${ENV_VAR} reference)");
    const key: DeclaredKey = { id, secret: this.secret(raw.secret, [...at, "secret"]) };
    if (raw.label !== undefined) key.label = this.string(raw.label, [...at, "label"]);
    if (raw.weight !== undefined) key.weight = this.positiveInt(raw.weight, [...at, "weight"]);
    if (raw.max_concurrency !== undefined) {
      key.maxConcurrency = this.nonNegativeInt(raw.max_concurrency, [...at, "max_concurrency"], "(0 is unlimited)");
    }
    if (raw.quota_group !== undefined) key.quotaGroup = this.string(raw.quota_group, [...at, "quota_group"]);
    if (raw.metadata !== undefined) {
      const metadata = this.mapping(raw.metadata, [...at, "metadata"]);
      key.metadata = Object.fromEntries(
        Object.entries(metadata).map(([k, v]) => [k, this.string(v, [...at, "metadata", k])]),
      );
    }
    if (raw.disabled !== undefined) key.disabled = this.boolean(raw.disabled, [...at, "disabled"]);
    return key;
  }

  private auth(value: unknown): TokenGrant[] {
    if (value === undefined) return [];
    const raw = this.mapping(value, ["auth"]);
    this.onlyFields(raw, ["auth"], new Set(["tokens"]));
    if (raw.tokens === undefined) return [];
    return this.list(raw.tokens, ["auth", "tokens"]).map((entry, i) => {
      const at: Path = ["auth", "tokens", i];
      const t = this.mapping(entry, at);
      this.onlyFields(t, at, new Set(["token", "token_env", "scopes"]));
      if ((t.token === undefined) === (t.token_env === undefined)) this.fail(at, "needs exactly one of token, token_env");
      let token: string;
      if (t.token !== undefined) {
        token = this.secret(t.token, [...at, "token"]);
      } else {
        const variable = this.string(t.token_env, [...at, "token_env"]);
        token = this.envValue(variable, [...at, "token_env"]);
      }
      if (token.length < MIN_TOKEN_LENGTH) {
        this.fail([...at, t.token !== undefined ? "token" : "token_env"], `token must be at least ${MIN_TOKEN_LENGTH} characters`);
      }
      if (t.scopes === undefined) this.fail([...at, "scopes"], "is required (admin, use:*, use:<pool>)");
      const scopes = this.list(t.scopes, [...at, "scopes"]).map((s, j): Scope => {
        const scopeAt: Path = [...at, "scopes", j];
        try {
          return parseScope(this.string(s, scopeAt), formatPath(scopeAt));
        } catch {
          return this.fail(scopeAt, "must be admin, use:* or use:<pool>");
        }
      });
      if (scopes.length === 0) this.fail([...at, "scopes"], "must name at least one scope");
      return { token, scopes, origin: `${this.source}: ${formatPath(at)}` };
    });
  }

  private ordered(at: Path, settings: PoolSettings, low: keyof PoolSettings, lowName: string, high: keyof PoolSettings, highName: string): void {
    const a = settings[low] as number | undefined;
    const b = settings[high] as number | undefined;
    if (a !== undefined && b !== undefined && a > b) this.fail([...at, lowName], `must not exceed ${highName}`);
  }

  private secret(value: unknown, at: Path): string {
    if (typeof value !== "string" || value === "") this.fail(at, "must be a non-empty string or a ${ENV_VAR} reference");
    const ref = ENV_REF.exec(value as string);
    return ref ? this.envValue(ref[1], at) : (value as string);
  }

  private envValue(variable: string, at: Path): string {
    const resolved = this.env[variable];
    if (resolved === undefined || resolved === "") this.fail(at, `environment variable ${variable} is not set`);
    return resolved as string;
  }

  private duration(value: unknown, at: Path): number {
    const ms = typeof value === "string" ? parseDuration(value) : undefined;
    if (ms === undefined || ms <= 0) this.fail(at, 'must be a positive duration such as "500ms", "30s", "5m", "1h"');
    return ms as number;
  }

  private positiveInt(value: unknown, at: Path): number {
    if (!Number.isSafeInteger(value) || (value as number) < 1) this.fail(at, "must be a positive integer");
    return value as number;
  }

  private nonNegativeInt(value: unknown, at: Path, hint: string): number {
    if (!Number.isSafeInteger(value) || (value as number) < 0) this.fail(at, `must be a non-negative integer ${hint}`);
    return value as number;
  }

  private boolean(value: unknown, at: Path): boolean {
    if (typeof value !== "boolean") this.fail(at, "must be true or false");
    return value as boolean;
  }

  private string(value: unknown, at: Path): string {
    if (typeof value !== "string") this.fail(at, "must be a string");
    return value as string;
  }

  private requiredString(raw: Record<string, unknown>, at: Path, field: string): string {
    if (raw[field] === undefined) this.fail([...at, field], "is required");
    return this.string(raw[field], [...at, field]);
  }

  private mapping(value: unknown, at: Path): Record<string, unknown> {
    if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Map) {
      this.fail(at, "must be a mapping");
    }
    return value as Record<string, unknown>;
  }

  private list(value: unknown, at: Path): unknown[] {
    if (!Array.isArray(value)) this.fail(at, "must be a list");
    return value as unknown[];
  }

  private onlyFields(raw: Record<string, unknown>, at: Path, allowed: Set<string>): void {
    for (const field of Object.keys(raw)) {
      if (!allowed.has(field)) this.fail([...at, field], `unknown field (expected one of ${[...allowed].join(", ")})`);
    }
  }

  /** The line of the node at `at`, or of its nearest existing ancestor (for a missing field). */
  private lineOf(at: Path): number | undefined {
    for (let depth = at.length; depth >= 0; depth--) {
      const prefix = at.slice(0, depth);
      const node = depth === 0 ? this.doc.contents : this.doc.getIn(prefix, true);
      const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
      if (!range) continue;
      // A field's own line is where its key is written; a node's range starts at its value.
      const keyLine = depth === at.length ? this.keyLine(prefix) : undefined;
      return keyLine ?? this.lines.linePos(range[0]).line;
    }
    return undefined;
  }

  private keyLine(at: Path): number | undefined {
    if (at.length === 0) return undefined;
    const parent = at.length === 1 ? this.doc.contents : this.doc.getIn(at.slice(0, -1), true);
    const last = at[at.length - 1];
    if (!isMap(parent) || typeof last !== "string") return undefined;
    const pair = parent.items.find((item) => (item.key as { value?: unknown } | null)?.value === last);
    const range = (pair?.key as { range?: [number, number, number] } | null | undefined)?.range;
    return range ? this.lines.linePos(range[0]).line : undefined;
  }

  private fail(at: Path, problem: string): never {
    throw new ConfigError(this.source, this.lineOf(at), formatPath(at), problem);
  }
}

/** One change that brings the server's configuration in line with the file. */
export type BootstrapAction =
  | { kind: "create_pool"; pool: PoolInput }
  | { kind: "update_pool"; pool: PoolInput; fields: Array<keyof PoolSettings> }
  | { kind: "add_key"; key: KeyInput }
  | { kind: "update_key"; key: KeyInput; fields: Array<keyof KeyInput> }
  | { kind: "enable_key"; pool: string; keyId: string }
  | { kind: "disable_key"; pool: string; keyId: string }
  | { kind: "remove_key"; pool: string; keyId: string };

/** The server's current configuration, with plaintext secrets, as the engine holds it. */
export interface CurrentConfig {
  pools: PoolConfig[];
  keys: KeyConfig[];
}

const KEY_COMPARED: Array<keyof DeclaredKey & keyof KeyConfig> = [
  "label", "weight", "maxConcurrency", "quotaGroup", "metadata", "secret",
];

function sameValue(a: unknown, b: unknown): boolean {
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) {
    const ae = Object.entries(a as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y));
    const be = Object.entries(b as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y));
    return ae.length === be.length && ae.every(([k, v], i) => be[i][0] === k && be[i][1] === v);
  }
  return a === b;
}

function keyInput(pool: string, key: DeclaredKey): KeyInput {
  const input: KeyInput = { pool, id: key.id, secret: key.secret };
  for (const field of KEY_COMPARED) if (key[field] !== undefined) (input as Record<string, unknown>)[field] = key[field];
  if (key.disabled !== undefined) input.disabled = key.disabled;
  return input;
}

/**
 * The actions that make `current` match `config`, comparing field by field (secrets included), so
 * planning again after applying them yields no action. Pools absent from the file are never touched.
 */
export function planBootstrap(config: DeclarativeConfig, current: CurrentConfig): BootstrapAction[] {
  const actions: BootstrapAction[] = [];
  const pools = new Map(current.pools.map((p) => [p.name, p]));
  for (const declared of config.pools) {
    const existing = pools.get(declared.name);
    if (!existing) {
      actions.push({ kind: "create_pool", pool: { name: declared.name, ...declared.settings } });
    } else {
      const fields = (Object.keys(declared.settings) as Array<keyof PoolSettings>).filter(
        (field) => !sameValue(declared.settings[field], existing[field]),
      );
      if (fields.length > 0) {
        const pool: PoolInput = { name: declared.name };
        for (const field of fields) (pool as Record<string, unknown>)[field] = declared.settings[field];
        actions.push({ kind: "update_pool", pool, fields });
      }
    }

    const keys = new Map(current.keys.filter((k) => k.pool === declared.name).map((k) => [k.id, k]));
    for (const key of declared.keys) {
      const have = keys.get(key.id);
      if (!have) {
        actions.push({ kind: "add_key", key: keyInput(declared.name, key) });
        continue;
      }
      const fields = KEY_COMPARED.filter((field) => key[field] !== undefined && !sameValue(key[field], have[field]));
      if (fields.length > 0) {
        const input: KeyInput = { pool: declared.name, id: key.id };
        for (const field of fields) (input as Record<string, unknown>)[field] = key[field];
        actions.push({ kind: "update_key", key: input, fields });
      }
      if (key.disabled !== undefined && key.disabled !== have.disabled) {
        actions.push({ kind: key.disabled ? "disable_key" : "enable_key", pool: declared.name, keyId: key.id });
      }
    }
    if (declared.managed) {
      const listed = new Set(declared.keys.map((k) => k.id));
      for (const id of keys.keys()) {
        if (!listed.has(id)) actions.push({ kind: "remove_key", pool: declared.name, keyId: id });
      }
    }
  }
  return actions;
}

/** A log-safe one-line description of an action (field names, never values). */
export function describeAction(action: BootstrapAction): string {
  switch (action.kind) {
    case "create_pool":
      return `create pool ${action.pool.name}`;
    case "update_pool":
      return `update pool ${action.pool.name} (${action.fields.join(", ")})`;
    case "add_key":
      return `add key ${action.key.pool}/${action.key.id}`;
    case "update_key":
      return `update key ${action.key.pool}/${action.key.id} (${action.fields.join(", ")})`;
    case "enable_key":
      return `enable key ${action.pool}/${action.keyId}`;
    case "disable_key":
      return `disable key ${action.pool}/${action.keyId}`;
    case "remove_key":
      return `remove key ${action.pool}/${action.keyId}`;
  }
}

/** The admin operations bootstrap needs; the server passes its write-through implementations. */
export interface BootstrapApi {
  createPool(pool: PoolInput): unknown;
  updatePool(pool: PoolInput): unknown;
  addKey(key: KeyInput): unknown;
  updateKey(key: KeyInput): unknown;
  enableKey(pool: string, keyId: string): unknown;
  disableKey(pool: string, keyId: string, reason: string): unknown;
  removeKey(pool: string, keyId: string): unknown;
}

/** Applies actions in order; the first failure stops and names the action and the file. */
export async function applyBootstrap(actions: BootstrapAction[], api: BootstrapApi, source: string): Promise<void> {
  for (const action of actions) {
    try {
      switch (action.kind) {
        case "create_pool":
          await api.createPool(action.pool);
          break;
        case "update_pool":
          await api.updatePool(action.pool);
          break;
        case "add_key":
          await api.addKey(action.key);
          break;
        case "update_key":
          await api.updateKey(action.key);
          break;
        case "enable_key":
          await api.enableKey(action.pool, action.keyId);
          break;
        case "disable_key":
          await api.disableKey(action.pool, action.keyId, `disabled in ${source}`);
          break;
        case "remove_key":
          await api.removeKey(action.pool, action.keyId);
          break;
      }
    } catch (err) {
      throw new Error(`${source}: bootstrap failed to ${describeAction(action)}: ${(err as Error).message}`, { cause: err });
    }
  }
}
