// KEYMESH_CONFIG: a YAML or JSON file declaring pools, keys and auth tokens, applied at start and on
// SIGHUP. Only the fields the file names are managed; anything it leaves out keeps its current value
// (or the server default on creation). Keys missing from the file are removed only from pools
// marked `managed: true`. Reading a file checks all of it, without a database, and reports every problem.
import { readFileSync } from "node:fs";
import path from "node:path";
import { LineCounter, isMap, parseDocument, type Document } from "yaml";
import { isKeyId, isPoolName, isStrategy, POOL_DEFAULTS, validateKey, validatePool } from "../domain/config.js";
import { DomainError } from "../domain/errors.js";
import { STRATEGIES, type KeyConfig, type KeyInput, type Limits, type PoolConfig, type PoolInput } from "../domain/types.js";
import {
  checkAuthBinding,
  createAuthorizer,
  MIN_TOKEN_LENGTH,
  parseAuthTokensEnv,
  parseScope,
  TOKEN_NAME,
  TOKEN_NAME_RULE,
  TOKEN_WHITESPACE_RULE,
  type Authorizer,
  type Scope,
  type TokenGrant,
} from "./auth.js";
import { formatDuration, parseDuration } from "./duration.js";

/** Pool settings a file may declare (PoolInput without the name). */
export type PoolSettings = Omit<PoolInput, "name">;

export interface DeclaredKey {
  id: string;
  /** Resolved plaintext (after `${ENV_VAR}` substitution or from `secret_file`); never logged. */
  secret: string;
  label?: string;
  weight?: number;
  maxConcurrency?: number;
  quotaGroup?: string;
  /** Declared as a whole: a limit the file leaves out is none. */
  limits?: Limits;
  priority?: number;
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

/** One problem of a config file, where it is. */
export interface ConfigProblem {
  file: string;
  line?: number;
  /** The field's path ("pools[0].keys[1].weight"); empty for the file as a whole. */
  field: string;
  problem: string;
}

/** "file:line: field: problem". */
function formatProblem(p: ConfigProblem): string {
  return `${p.file}${p.line === undefined ? "" : `:${p.line}`}: ${p.field ? `${p.field}: ` : ""}${p.problem}`;
}

/** A bad config file: every problem found, in file order, one per line of the message. */
export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ConfigError";
  }
}

/** What an unresolved secret reads as: a valid token (long enough, no whitespace), never a real one. */
const UNRESOLVED = "<not-resolved:checked-elsewhere>";

/** Thrown inside the reader to abandon the value being read once its problem is recorded. */
const INVALID = Symbol("invalid");

type Path = Array<string | number>;

const ENV_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

const POOL_FIELDS = new Set([
  "name", "strategy", "min_ttl", "max_ttl", "default_ttl", "default_cooldown", "max_cooldown",
  "circuit_breaker", "description", "quota_groups", "default_estimated_tokens", "managed", "keys",
]);
const LIMIT_FIELDS: Array<[string, keyof Limits]> = [
  ["requests_per_minute", "requestsPerMinute"],
  ["tokens_per_minute", "tokensPerMinute"],
  ["requests_per_day", "requestsPerDay"],
];
const BREAKER_FIELDS = new Set(["failure_threshold", "open_duration", "max_open_duration", "half_open_probes"]);
const KEY_FIELDS = new Set([
  "id", "secret", "secret_file", "label", "weight", "max_concurrency", "quota_group", "limits", "priority", "metadata", "disabled",
]);
/** Settings that must not exceed another, with their paths in the file. */
const ORDERED: Array<[keyof PoolSettings, string[], keyof PoolSettings, string[]]> = [
  ["minTtlMs", ["min_ttl"], "defaultTtlMs", ["default_ttl"]],
  ["defaultTtlMs", ["default_ttl"], "maxTtlMs", ["max_ttl"]],
  ["minTtlMs", ["min_ttl"], "maxTtlMs", ["max_ttl"]],
  ["defaultCooldownMs", ["default_cooldown"], "maxCooldownMs", ["max_cooldown"]],
  ["openDurationMs", ["circuit_breaker", "open_duration"], "maxOpenDurationMs", ["circuit_breaker", "max_open_duration"]],
];
/** Left out, these follow the bounds the file sets instead of their own defaults. */
const FOLLOWS = new Set<keyof PoolSettings>(["defaultTtlMs", "defaultCooldownMs", "openDurationMs"]);

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

export interface ReadOptions {
  /**
   * False: `${ENV_VAR}` references and secret files are not resolved (each reads as a placeholder), for
   * checking a file away from the environment the server runs in. Default true.
   */
  resolveSecrets?: boolean;
}

/** Reads and validates a config file; a ConfigError lists every problem with file, line and field. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env, options: ReadOptions = {}): DeclarativeConfig {
  return parseConfig(readConfigText(file), file, env, options);
}

function readConfigText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([{ file, field: "", problem: `cannot read config file: ${readError(err)}` }]);
  }
}

function readError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES") return "permission denied";
  return code ?? (err as Error).message;
}

/** Parses config text (YAML, or JSON which YAML reads too) attributed to `source`. */
export function parseConfig(text: string, source: string, env: NodeJS.ProcessEnv = process.env, options: ReadOptions = {}): DeclarativeConfig {
  return Reader.open(text, source, env, options).config();
}

/**
 * A file of keys to import (the CLI's `keys import`): a list of key entries as in a config file's
 * `pools[].keys`, or a mapping with such a list under `keys`. Each key comes with where it is.
 */
export function parseKeyList(text: string, source: string, env: NodeJS.ProcessEnv = process.env): Array<DeclaredKey & { at: string }> {
  return Reader.open(text, source, env, {}).keyList();
}

class Reader {
  readonly #problems: ConfigProblem[] = [];
  /** `secret_file:` paths are relative to the file's directory. */
  readonly #dir: string;

  private constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
    private readonly source: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly resolveSecrets: boolean,
  ) {
    this.#dir = path.dirname(path.resolve(source));
  }

  static open(text: string, source: string, env: NodeJS.ProcessEnv, options: ReadOptions): Reader {
    const lineCounter = new LineCounter();
    const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
    if (doc.errors.length > 0) {
      throw new ConfigError(
        doc.errors.map((syntax) => ({
          file: source,
          line: syntax.linePos?.[0].line ?? (syntax.pos ? lineCounter.linePos(syntax.pos[0]).line : undefined),
          field: "",
          // The parser's own message may quote file content (a secret); keep only its first clause.
          problem: `invalid YAML/JSON: ${syntax.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "")}`,
        })),
      );
    }
    return new Reader(doc, lineCounter, source, env, options.resolveSecrets ?? true);
  }

  config(): DeclarativeConfig {
    const root: unknown = this.doc.toJS({ maxAliasCount: 100 });
    if (root === null || root === undefined) return { source: this.source, pools: [], tokens: [] };
    const config = this.attempt(() => {
      const top = this.mapping(root, []);
      this.onlyFields(top, [], new Set(["pools", "auth"]));
      const pools = this.unique(this.each(top.pools, ["pools"], (p, at) => this.pool(p, at)), ["pools"], "name", (p) => p.name, "pool");
      return { source: this.source, pools, tokens: this.auth(top.auth) };
    });
    return this.done(config);
  }

  keyList(): Array<DeclaredKey & { at: string }> {
    const root: unknown = this.doc.toJS({ maxAliasCount: 100 });
    if (root === null || root === undefined) return [];
    const keys = this.attempt(() => {
      const at: Path = Array.isArray(root) ? [] : ["keys"];
      const list = Array.isArray(root) ? root : this.mapping(root, [])?.keys;
      if (!Array.isArray(root)) this.onlyFields(this.mapping(root, []), [], new Set(["keys"]));
      const keys = this.each(list ?? [], at, (k, keyAt) => ({ ...this.key(k, keyAt), at: this.where(keyAt) }));
      return this.unique(keys, at, "id", (k) => k.id, "key id");
    });
    return this.done(keys);
  }

  #require<T>(value: T | undefined): T {
    if (value === undefined) throw INVALID;
    return value;
  }

  /** The result, or a ConfigError with every problem found on the way. */
  private done<T>(value: T | undefined): T {
    if (this.#problems.length > 0) {
      throw new ConfigError([...this.#problems].sort((a, b) => (a.line ?? 0) - (b.line ?? 0)));
    }
    return this.#require(value);
  }

  /** Runs `read`; a problem it records abandons only what it was reading. */
  private attempt<T>(read: () => T): T | undefined {
    try {
      return read();
    } catch (err) {
      if (err === INVALID) return undefined;
      throw err;
    }
  }

  /** Every item of a list, in place; undefined where an item's problems were recorded. */
  private each<T>(value: unknown, at: Path, read: (item: unknown, at: Path) => T): Array<T | undefined> {
    if (value === undefined) return [];
    return this.list(value, at).map((item, i) => this.attempt(() => read(item, [...at, i])));
  }

  /** Reports items named twice; returns the items that were read. */
  private unique<T>(items: Array<T | undefined>, at: Path, field: string, name: (item: T) => string, what: string): T[] {
    const seen = new Map<string, number>();
    items.forEach((item, i) => {
      if (item === undefined) return;
      const first = seen.get(name(item));
      if (first !== undefined) this.report([...at, i, field], `duplicate ${what} "${name(item)}" (also ${at.at(-1) ?? ""}[${first}])`);
      else seen.set(name(item), i);
    });
    return items.filter((item): item is T => item !== undefined);
  }

  private pool(value: unknown, at: Path): DeclaredPool {
    const raw = this.mapping(value, at);
    const before = this.#problems.length;
    this.onlyFields(raw, at, POOL_FIELDS);
    const name = this.attempt(() => {
      const name = this.requiredString(raw, at, "name");
      if (!isPoolName(name)) {
        this.fail([...at, "name"], "must be 1-63 characters of [a-z0-9._-], starting with a letter or digit");
      }
      return name;
    });
    const settings: PoolSettings = {};
    if (raw.strategy !== undefined) {
      this.attempt(() => {
        if (!isStrategy(raw.strategy)) {
          this.fail([...at, "strategy"], `must be one of ${STRATEGIES.join(", ")}`);
        }
        settings.strategy = raw.strategy;
      });
    }
    for (const [field, target] of DURATION_FIELDS) {
      if (raw[field] !== undefined) this.attempt(() => ((settings as Record<string, number>)[target] = this.duration(raw[field], [...at, field])));
    }
    if (raw.description !== undefined) this.attempt(() => (settings.description = this.string(raw.description, [...at, "description"])));
    if (raw.circuit_breaker !== undefined) this.attempt(() => this.breaker(raw.circuit_breaker, [...at, "circuit_breaker"], settings));
    if (raw.quota_groups !== undefined) {
      this.attempt(() => {
        const groups = this.mapping(raw.quota_groups, [...at, "quota_groups"]);
        const read = Object.entries(groups).map(([name, l]) => [name, this.attempt(() => this.limits(l, [...at, "quota_groups", name]))] as const);
        if (read.some(([, l]) => l === undefined)) throw INVALID;
        settings.quotaGroups = Object.fromEntries(read) as Record<string, Limits>;
      });
    }
    if (raw.default_estimated_tokens !== undefined) {
      this.attempt(() => (settings.defaultEstimatedTokens = this.nonNegativeInt(raw.default_estimated_tokens, [...at, "default_estimated_tokens"], "(0 is none)")));
    }
    const managed = raw.managed === undefined ? false : this.attempt(() => this.boolean(raw.managed, [...at, "managed"]));
    const keys = this.unique(this.each(raw.keys, [...at, "keys"], (k, keyAt) => this.key(k, keyAt)), [...at, "keys"], "id", (k) => k.id, "key id");
    this.poolRules(at, settings, this.#problems.length === before ? name : undefined);
    return { name: this.#require(name), managed: this.#require(managed), settings, keys };
  }

  /**
   * The rules between settings, as the server applies them to a new pool: a bound the file leaves out
   * counts at its default (so `default_ttl: 2h` alone is above the default max_ttl of 1h). `valid` is
   * the pool's name when nothing else in it was wrong.
   */
  private poolRules(at: Path, settings: PoolSettings, valid: string | undefined): void {
    for (const [low, lowPath, high, highPath] of ORDERED) {
      const a = settings[low] as number | undefined;
      const b = settings[high] as number | undefined;
      // An unset default_* follows the bounds the file sets; only set values and bounds are compared.
      if ((a === undefined && FOLLOWS.has(low)) || (b === undefined && FOLLOWS.has(high)) || (a === undefined && b === undefined)) continue;
      const lowValue = a ?? (POOL_DEFAULTS[low as keyof typeof POOL_DEFAULTS] as number);
      const highValue = b ?? (POOL_DEFAULTS[high as keyof typeof POOL_DEFAULTS] as number);
      if (lowValue <= highValue) continue;
      const lowName = lowPath.at(-1)!;
      const highName = highPath.at(-1)!;
      if (a === undefined) this.report([...at, ...highPath], `must not be below ${lowName} (${formatDuration(lowValue)} unless the file sets it)`);
      else if (b === undefined) this.report([...at, ...lowPath], `must not exceed ${highName} (${formatDuration(highValue)} unless the file sets it)`);
      else this.report([...at, ...lowPath], `must not exceed ${highName}`);
      return;
    }
    // The engine's own rules last, on a pool that is otherwise sound (so no problem is reported twice).
    if (valid === undefined) return;
    try {
      validatePool({ name: valid, ...settings }, undefined, 0);
    } catch (err) {
      this.domainProblem(at, err);
    }
  }

  /** A rule the engine enforces that the reader does not know itself, reported where its field is. */
  private domainProblem(at: Path, err: unknown): void {
    if (!(err instanceof DomainError) || err.code !== "invalid_argument") throw err;
    const field = (err.details.field ?? "").replace(/^key\./, "");
    const problem = err.message.startsWith(`${err.details.field}: `) ? err.message.slice(`${err.details.field}: `.length) : err.message;
    this.report([...at, ...(field ? field.split(".") : [])], problem);
  }

  private breaker(value: unknown, at: Path, settings: PoolSettings): void {
    const raw = this.mapping(value, at);
    this.onlyFields(raw, at, BREAKER_FIELDS);
    if (raw.failure_threshold !== undefined) this.attempt(() => (settings.failureThreshold = this.positiveInt(raw.failure_threshold, [...at, "failure_threshold"])));
    if (raw.open_duration !== undefined) this.attempt(() => (settings.openDurationMs = this.duration(raw.open_duration, [...at, "open_duration"])));
    if (raw.max_open_duration !== undefined) this.attempt(() => (settings.maxOpenDurationMs = this.duration(raw.max_open_duration, [...at, "max_open_duration"])));
    if (raw.half_open_probes !== undefined) this.attempt(() => (settings.halfOpenProbes = this.positiveInt(raw.half_open_probes, [...at, "half_open_probes"])));
  }

  /** Declared limits as a whole: each left out is 0 (none). */
  private limits(value: unknown, at: Path): Limits {
    const raw = this.mapping(value, at);
    this.onlyFields(raw, at, new Set(LIMIT_FIELDS.map(([f]) => f)));
    const out: Limits = { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0 };
    for (const [field, target] of LIMIT_FIELDS) {
      if (raw[field] !== undefined) this.attempt(() => (out[target] = this.nonNegativeInt(raw[field], [...at, field], "(0 is none)")));
    }
    return out;
  }

  private key(value: unknown, at: Path): DeclaredKey {
    const raw = this.mapping(value, at);
    const before = this.#problems.length;
    this.onlyFields(raw, at, KEY_FIELDS);
    const id = this.attempt(() => {
      const id = this.requiredString(raw, at, "id");
      if (!isKeyId(id)) this.fail([...at, "id"], "must be 1-63 characters of [A-Za-z0-9._-]");
      return id;
    });
    const secret = this.attempt(() => {
      if (raw.secret === undefined && raw.secret_file === undefined) {
        this.fail([...at, "secret"], "is required (a value or a ${ENV_VAR} reference), or secret_file");
      }
      if (raw.secret !== undefined && raw.secret_file !== undefined) this.fail([...at, "secret_file"], "give secret or secret_file, not both");
      return raw.secret !== undefined ? this.secret(raw.secret, [...at, "secret"]) : this.secretFile(raw.secret_file, [...at, "secret_file"]);
    });
    const key: Partial<DeclaredKey> = { id, secret };
    if (raw.label !== undefined) this.attempt(() => (key.label = this.string(raw.label, [...at, "label"])));
    if (raw.weight !== undefined) this.attempt(() => (key.weight = this.positiveInt(raw.weight, [...at, "weight"])));
    if (raw.max_concurrency !== undefined) {
      this.attempt(() => (key.maxConcurrency = this.nonNegativeInt(raw.max_concurrency, [...at, "max_concurrency"], "(0 is unlimited)")));
    }
    if (raw.quota_group !== undefined) this.attempt(() => (key.quotaGroup = this.string(raw.quota_group, [...at, "quota_group"])));
    if (raw.limits !== undefined) this.attempt(() => (key.limits = this.limits(raw.limits, [...at, "limits"])));
    if (raw.priority !== undefined) this.attempt(() => (key.priority = this.nonNegativeInt(raw.priority, [...at, "priority"], "(0 is the first tier)")));
    if (raw.metadata !== undefined) {
      this.attempt(() => {
        const metadata = this.mapping(raw.metadata, [...at, "metadata"]);
        const entries = Object.entries(metadata).map(([k, v]) => [k, this.attempt(() => this.string(v, [...at, "metadata", k]))]);
        key.metadata = Object.fromEntries(entries);
      });
    }
    if (raw.disabled !== undefined) this.attempt(() => (key.disabled = this.boolean(raw.disabled, [...at, "disabled"])));
    if (this.#problems.length > before) throw INVALID;
    const declared = key as DeclaredKey;
    try {
      validateKey({ pool: "", ...declared }, undefined, 0);
    } catch (err) {
      this.domainProblem(at, err);
      throw INVALID;
    }
    return declared;
  }

  private auth(value: unknown): TokenGrant[] {
    if (value === undefined) return [];
    const raw = this.mapping(value, ["auth"]);
    this.onlyFields(raw, ["auth"], new Set(["tokens"]));
    const tokens = this.each(raw.tokens, ["auth", "tokens"], (entry, at) => {
      const t = this.mapping(entry, at);
      this.onlyFields(t, at, new Set(["name", "token", "token_env", "token_file", "scopes"]));
      const name = t.name === undefined ? formatPath(at) : this.attempt(() => {
        const name = this.string(t.name, [...at, "name"]);
        if (!TOKEN_NAME.test(name)) this.fail([...at, "name"], TOKEN_NAME_RULE);
        return name;
      });
      const sources = ["token", "token_env", "token_file"].filter((f) => t[f] !== undefined);
      const token = this.attempt(() => {
        if (sources.length !== 1) this.fail(at, "needs exactly one of token, token_env, token_file");
        const field = sources[0];
        const token =
          field === "token" ? this.secret(t.token, [...at, "token"])
          : field === "token_env" ? this.envValue(this.string(t.token_env, [...at, "token_env"]), [...at, "token_env"])
          : this.secretFile(t.token_file, [...at, "token_file"]);
        if (token.length < MIN_TOKEN_LENGTH) this.fail([...at, field], `token must be at least ${MIN_TOKEN_LENGTH} characters`);
        if (/\s/.test(token)) this.fail([...at, field], TOKEN_WHITESPACE_RULE);
        return token;
      });
      const scopes = this.attempt(() => {
        if (t.scopes === undefined) this.fail([...at, "scopes"], "is required (admin, use:*, use:<pool>)");
        const scopes = this.each(t.scopes, [...at, "scopes"], (s, scopeAt): Scope => {
          try {
            return parseScope(this.string(s, scopeAt), formatPath(scopeAt));
          } catch (err) {
            if (err === INVALID) throw err;
            return this.fail(scopeAt, "must be admin, use:* or use:<pool>");
          }
        });
        if (scopes.length === 0) this.fail([...at, "scopes"], "must name at least one scope");
        if (scopes.includes(undefined)) throw INVALID;
        return scopes as Scope[];
      });
      return { token: this.#require(token), name: this.#require(name), scopes: this.#require(scopes), origin: `${this.source}: ${formatPath(at)}` };
    });
    return this.unique(tokens, ["auth", "tokens"], "name", (t) => t.name, "token name");
  }

  private secret(value: unknown, at: Path): string {
    if (typeof value !== "string" || value === "") this.fail(at, "must be a non-empty string or a ${ENV_VAR} reference");
    const ref = ENV_REF.exec(value as string);
    return ref ? this.envValue(ref[1], at) : (value as string);
  }

  /** A secret kept in a file of its own (a Docker or Kubernetes secret): its content, less the final newline. */
  private secretFile(value: unknown, at: Path): string {
    const file = path.resolve(this.#dir, this.string(value, at));
    if (!this.resolveSecrets) return UNRESOLVED;
    let content: string;
    try {
      content = readFileSync(file, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      return this.fail(at, `cannot read ${file}: ${readError(err)}`);
    }
    if (content === "") this.fail(at, `${file} is empty`);
    return content;
  }

  private envValue(variable: string, at: Path): string {
    if (!this.resolveSecrets) return UNRESOLVED;
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
      if (!allowed.has(field)) this.report([...at, field], `unknown field (expected one of ${[...allowed].join(", ")})`);
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

  /** "file:line" of the node at `at`. */
  private where(at: Path): string {
    const line = this.lineOf(at);
    return line === undefined ? this.source : `${this.source}:${line}`;
  }

  /** Records a problem; reading goes on. */
  private report(at: Path, problem: string): void {
    this.#problems.push({ file: this.source, line: this.lineOf(at), field: formatPath(at), problem });
  }

  /** Records a problem and abandons the value being read. */
  private fail(at: Path, problem: string): never {
    this.report(at, problem);
    throw INVALID;
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
  "label", "weight", "maxConcurrency", "quotaGroup", "limits", "priority", "metadata", "secret",
];

/** Equal values, objects compared by their entries (metadata, limits, quota groups' limits). */
function sameValue(a: unknown, b: unknown): boolean {
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) {
    const ae = Object.entries(a as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y));
    const be = Object.entries(b as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y));
    return ae.length === be.length && ae.every(([k, v], i) => be[i][0] === k && sameValue(be[i][1], v));
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

/**
 * Brings the server in line with `config`: plans against `current` and applies each change, logging it
 * once it is committed (names and fields, never values). Planning again afterwards finds nothing to do.
 */
export async function applyConfig(
  config: DeclarativeConfig,
  current: CurrentConfig,
  api: BootstrapApi,
  log: { info(fields: object, message: string): void },
): Promise<BootstrapAction[]> {
  const actions = planBootstrap(config, current);
  for (const action of actions) {
    await applyBootstrap([action], api, config.source);
    log.info({ source: config.source }, describeAction(action));
  }
  return actions;
}

export type ReloadResult = { applied: string[] } | { refused: string };

export interface ConfigReloader {
  /** The tokens of KEYMESH_AUTH_TOKENS and the file, as of the last reload. */
  authorizer: Authorizer;
  /** Reads the file again and applies it (SIGHUP, `keymesh config apply`); a bad file changes nothing. */
  reload(): Promise<ReloadResult>;
}

/**
 * Re-applying the config file while the server runs. Reloads run one at a time, each planned against
 * what the one before applied. The tokens take effect at once; a file that turns auth off (no token
 * left) is refused unless the server listens on loopback only, as at start.
 */
export function configReloader(opts: {
  file?: string;
  /** The address the listeners are bound to (KEYMESH_HOST). */
  host: string;
  env: NodeJS.ProcessEnv;
  authorizer: Authorizer;
  api: BootstrapApi;
  current: () => CurrentConfig;
  log: { info(fields: object, message: string): void; warn(fields: object, message: string): void; error(fields: object, message: string): void };
}): ConfigReloader {
  let authorizer = opts.authorizer;
  let last: Promise<unknown> = Promise.resolve();
  const once = async (): Promise<ReloadResult> => {
    if (!opts.file) return { refused: "no KEYMESH_CONFIG to re-apply" };
    let config: DeclarativeConfig;
    let next: Authorizer;
    try {
      config = loadConfigFile(opts.file, opts.env);
      next = createAuthorizer([...parseAuthTokensEnv(opts.env.KEYMESH_AUTH_TOKENS), ...config.tokens]);
      checkAuthBinding(opts.host, next.enabled);
    } catch (err) {
      return { refused: (err as Error).message };
    }
    if (next.enabled !== authorizer.enabled) {
      if (next.enabled) opts.log.info({ source: opts.file }, "auth turned on: every call needs a token from now on");
      else opts.log.warn({ source: opts.file, host: opts.host }, "auth turned off: no tokens configured; serving on loopback only");
    }
    authorizer = next;
    const actions = await applyConfig(config, opts.current(), opts.api, opts.log);
    return { applied: actions.map(describeAction) };
  };
  return {
    authorizer: {
      get enabled() {
        return authorizer.enabled;
      },
      authorize: (method, header, pool) => authorizer.authorize(method, header, pool),
    },
    reload() {
      const result = last.then(once).then(
        (r) => {
          if ("refused" in r) opts.log.error({ source: opts.file, problems: r.refused.split("\n") }, "config not re-applied");
          else opts.log.info({ source: opts.file, changes: r.applied.length }, "config re-applied");
          return r;
        },
        (err: unknown): ReloadResult => {
          // A change the database refused: those before it are committed, and a later reload finishes the rest.
          opts.log.error({ source: opts.file, err: (err as Error).message }, "config re-applied in part");
          return { refused: (err as Error).message };
        },
      );
      last = result;
      return result;
    },
  };
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
