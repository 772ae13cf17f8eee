// The `keymesh` command line: operator commands over the admin API, plus `serve`.
// Every failure becomes one `error: …` line on stderr and a non-zero exit code.
import { create, toJson, toJsonString, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, FieldMaskSchema, timestampFromMs, type Duration } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { stringify as toYaml } from "yaml";
import {
  AddKeyResponseSchema,
  ListAuditEntriesResponseSchema,
  CircuitBreakerConfigSchema,
  CreatePoolResponseSchema,
  DisableKeyResponseSchema,
  EnableKeyResponseSchema,
  EventSchema,
  GetKeyResponseSchema,
  GetPoolResponseSchema,
  ListReplicasResponseSchema,
  GetPoolStatsResponseSchema,
  KeySchema,
  KeyState,
  LimitsSchema,
  ListKeysResponseSchema,
  ListLeasesResponseSchema,
  ListPoolsResponseSchema,
  PoolSchema,
  Strategy,
  UpdateKeyResponseSchema,
  UpdatePoolResponseSchema,
  type Key,
  type Limits as LimitsMessage,
  type Pool,
} from "../gen/keymesh/v1/admin_pb.js";
import { STRATEGIES, type KeyConfig, type Limits, type PoolConfig, type Strategy as StrategyName } from "../domain/types.js";
import {
  applyConfig,
  loadConfigFile,
  parseKeyList,
  type BootstrapApi,
  type CurrentConfig,
  type DeclarativeConfig,
  type DeclaredKey,
  type PoolSettings,
  describeAction,
} from "../ops/config.js";
import { mask } from "../domain/mask.js";
import { formatDuration, parseDuration } from "../ops/duration.js";
import type { AdminClient, ConnectOptions } from "./client.js";
import { auditTable, count, eventLine, keyDetail, keysTable, leasesTable, poolDetail, poolsTable, replicasTable, statsTable } from "./format.js";

/** A unary admin call that takes longer than this (`--timeout`) fails, naming the address. */
const DEFAULT_TIMEOUT_MS = 10_000;
/** How long `watch` keeps reconnecting once its stream is lost (`--retry-for`). */
const DEFAULT_RETRY_FOR_MS = 60_000;
const MAX_RECONNECT_DELAY_MS = 5_000;
/** How many audit entries `keymesh audit` shows unless --limit says otherwise. */
const DEFAULT_AUDIT_LIMIT = 100;

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  readStdin(): Promise<string>;
  /** The contents of a file named on the command line. */
  readFile(path: string): Promise<string>;
  env: NodeJS.ProcessEnv;
  connect(options: ConnectOptions): AdminClient;
  runServer(): Promise<void>;
  now(): number;
  /** Waits `ms`, or less if `signal` aborts (watch's reconnect back-off). */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  /** Registers what Ctrl-C does while `watch` runs; a watch ended this way exits 0. */
  onInterrupt(stop: () => void): void;
  /** The package's version, for --version. */
  version: string;
}

/**
 * The admin address when --addr is not given: KEYMESH_ADDR, else the server's own KEYMESH_HOST and
 * KEYMESH_GRPC_PORT (a wildcard bind address means this machine), else 127.0.0.1:50051.
 */
function defaultAddr(env: NodeJS.ProcessEnv): string {
  const addr = env.KEYMESH_ADDR?.trim();
  if (addr) return addr;
  let host = env.KEYMESH_HOST?.trim() || "127.0.0.1";
  if (host === "0.0.0.0") host = "127.0.0.1";
  else if (host === "::" || host === "[::]") host = "[::1]";
  else if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `${host}:${env.KEYMESH_GRPC_PORT?.trim() || "50051"}`;
}

/** A mistake in how the command was invoked (exit code 2). */
class UsageError extends Error {}

/** A strategy's proto value is its name in upper case. */
function strategyValue(name: StrategyName): Strategy {
  return Strategy[name.toUpperCase() as Uppercase<StrategyName>];
}

function durationArg(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new InvalidArgumentError('expected a duration such as "500ms", "30s", "5m", "1h"');
  return ms;
}

function positiveIntArg(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) === 0) {
    throw new InvalidArgumentError("expected a positive integer");
  }
  return Number(value);
}

/** An instant (epoch ms) from an RFC 3339 time, or a duration back from now, resolved when the command runs. */
function sinceArg(value: string): number | ((now: number) => number) {
  const back = parseDuration(value);
  if (back !== undefined) return (now: number) => now - back;
  const at = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(at)) throw new InvalidArgumentError('expected a duration back from now ("1h", "7d") or a time such as 2026-01-31T12:00:00Z');
  return at;
}

function nonNegativeIntArg(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError("expected a non-negative integer");
  }
  return Number(value);
}

const LIMIT_NAMES: Array<[string, keyof Limits]> = [
  ["rpm", "requestsPerMinute"],
  ["tpm", "tokensPerMinute"],
  ["rpd", "requestsPerDay"],
];

/** "org:rpm=60,tpm=90000": one quota group's limits (those left out are none), added to the ones before. */
function quotaGroupArg(value: string, previous: Record<string, Limits> = {}): Record<string, Limits> {
  const colon = value.indexOf(":");
  if (colon <= 0) throw new InvalidArgumentError("expected group:rpm=N,tpm=N,rpd=N");
  const limits: Limits = { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0 };
  for (const part of value.slice(colon + 1).split(",")) {
    const [name, n] = part.split("=");
    const field = LIMIT_NAMES.find(([short]) => short === name)?.[1];
    if (!field || n === undefined || !/^\d+$/.test(n)) throw new InvalidArgumentError("expected group:rpm=N,tpm=N,rpd=N");
    limits[field] = Number(n);
  }
  return { ...previous, [value.slice(0, colon)]: limits };
}

const limitsMessage = (l: Partial<Limits>) =>
  create(LimitsSchema, { requestsPerMinute: BigInt(l.requestsPerMinute ?? 0), tokensPerMinute: BigInt(l.tokensPerMinute ?? 0), requestsPerDay: BigInt(l.requestsPerDay ?? 0) });

const limitsOf = (l: LimitsMessage | undefined): Limits => ({
  requestsPerMinute: Number(l?.requestsPerMinute ?? 0n),
  tokensPerMinute: Number(l?.tokensPerMinute ?? 0n),
  requestsPerDay: Number(l?.requestsPerDay ?? 0n),
});

function metadataArg(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError("expected key=value");
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/** Every page of a list call, gathered into the first response: the CLI shows whole lists. */
async function everyPage<R extends { nextPageToken: string }>(list: (pageToken: string) => Promise<R>, items: (r: R) => unknown[]): Promise<R> {
  const first = await list("");
  for (let token = first.nextPageToken; token; ) {
    const next = await list(token);
    items(first).push(...items(next));
    token = next.nextPageToken;
  }
  first.nextPageToken = "";
  return first;
}

/** gRPC code names as the wire spells them in lower case: NotFound → "not_found". */
function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}

/** The one line printed for a failure; never a stack trace. */
function errorLine(err: unknown, addr: string, timeoutMs: number = DEFAULT_TIMEOUT_MS): string {
  if (err instanceof ConnectError) {
    if (err.code === Code.DeadlineExceeded) {
      return `error: deadline_exceeded: no answer from ${addr} within ${formatDuration(timeoutMs)} (--timeout)`;
    }
    const hint = err.code === Code.Unavailable ? ` (is keymesh serving on ${addr}?)` : "";
    return `error: ${codeName(err.code)}: ${err.rawMessage}${hint}`;
  }
  // A bad file's problems come one per line; each is an error line of its own.
  return (err instanceof Error ? err.message : String(err))
    .split("\n")
    .map((line) => `error: ${line}`)
    .join("\n");
}

/** A failure that may pass: the server restarting, the network, a deadline. Anything else ends a watch. */
function transient(err: unknown): boolean {
  return (
    err instanceof ConnectError &&
    [Code.Unavailable, Code.DeadlineExceeded, Code.Aborted, Code.Internal, Code.Unknown, Code.Canceled].includes(err.code)
  );
}

interface PoolFlags {
  strategy?: string;
  minTtl?: number;
  maxTtl?: number;
  defaultTtl?: number;
  defaultCooldown?: number;
  maxCooldown?: number;
  failureThreshold?: number;
  openDuration?: number;
  maxOpenDuration?: number;
  halfOpenProbes?: number;
  description?: string;
  quotaGroupLimits?: Record<string, Limits>;
  defaultEstimatedTokens?: number;
}

function addPoolFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option("--strategy <strategy>", "how keys are chosen").choices(STRATEGIES))
    .option("--min-ttl <duration>", "smallest lease ttl granted", durationArg)
    .option("--max-ttl <duration>", "largest lease ttl granted", durationArg)
    .option("--default-ttl <duration>", "lease ttl when a request names none", durationArg)
    .option("--default-cooldown <duration>", "cooldown after a 429 without retry-after", durationArg)
    .option("--max-cooldown <duration>", "cap on the doubling cooldown", durationArg)
    .option("--failure-threshold <n>", "consecutive failures that open a key's circuit", nonNegativeIntArg)
    .option("--open-duration <duration>", "how long a circuit first stays open", durationArg)
    .option("--max-open-duration <duration>", "cap on the doubling open duration", durationArg)
    .option("--half-open-probes <n>", "trial leases while half-open", nonNegativeIntArg)
    .option("--description <text>", "free-form description")
    .option("--quota-group-limits <group:rpm=N,tpm=N,rpd=N>", "declared budgets a quota group's keys share (repeatable; replaces all)", quotaGroupArg)
    .option("--default-estimated-tokens <n>", "tokens an Acquire reserves when it gives no estimate (0 is none)", nonNegativeIntArg);
}

/** The Pool message and the field-mask paths of the flags that were given. */
function poolFromFlags(name: string, flags: PoolFlags): { pool: Pool; paths: string[] } {
  const paths: string[] = [];
  const pool = create(PoolSchema, { name });
  const breaker = create(CircuitBreakerConfigSchema);
  const durations: Array<[keyof PoolFlags, "minTtl" | "maxTtl" | "defaultTtl" | "defaultCooldown" | "maxCooldown", string]> = [
    ["minTtl", "minTtl", "min_ttl"],
    ["maxTtl", "maxTtl", "max_ttl"],
    ["defaultTtl", "defaultTtl", "default_ttl"],
    ["defaultCooldown", "defaultCooldown", "default_cooldown"],
    ["maxCooldown", "maxCooldown", "max_cooldown"],
  ];
  if (flags.strategy !== undefined) {
    pool.strategy = strategyValue(flags.strategy as StrategyName);
    paths.push("strategy");
  }
  for (const [flag, field, path] of durations) {
    const ms = flags[flag] as number | undefined;
    if (ms === undefined) continue;
    pool[field] = durationFromMs(ms);
    paths.push(path);
  }
  if (flags.failureThreshold !== undefined) {
    breaker.failureThreshold = flags.failureThreshold;
    paths.push("circuit_breaker.failure_threshold");
  }
  if (flags.openDuration !== undefined) {
    breaker.openDuration = durationFromMs(flags.openDuration);
    paths.push("circuit_breaker.open_duration");
  }
  if (flags.maxOpenDuration !== undefined) {
    breaker.maxOpenDuration = durationFromMs(flags.maxOpenDuration);
    paths.push("circuit_breaker.max_open_duration");
  }
  if (flags.halfOpenProbes !== undefined) {
    breaker.halfOpenProbes = flags.halfOpenProbes;
    paths.push("circuit_breaker.half_open_probes");
  }
  if (paths.some((p) => p.startsWith("circuit_breaker."))) pool.circuitBreaker = breaker;
  if (flags.description !== undefined) {
    pool.description = flags.description;
    paths.push("description");
  }
  if (flags.quotaGroupLimits !== undefined) {
    for (const [name, l] of Object.entries(flags.quotaGroupLimits)) pool.quotaGroups[name] = limitsMessage(l);
    paths.push("quota_groups");
  }
  if (flags.defaultEstimatedTokens !== undefined) {
    pool.defaultEstimatedTokens = BigInt(flags.defaultEstimatedTokens);
    paths.push("default_estimated_tokens");
  }
  return { pool, paths };
}

interface KeyFlags {
  id?: string;
  secret?: string;
  secretEnv?: string;
  secretStdin?: boolean;
  label?: string;
  weight?: number;
  maxConcurrency?: number;
  quotaGroup?: string;
  priority?: number;
  /** Set as a whole (a config file's key); the flags below set one limit each. */
  limits?: Partial<Limits>;
  rpm?: number;
  tpm?: number;
  rpd?: number;
  metadata?: Record<string, string>;
  disabled?: boolean;
}

function addKeyFlags(cmd: Command): Command {
  return addCommonKeyFlags(
    cmd
      .option("--secret <secret>", "the API key itself (visible in shell history; prefer --secret-env or --secret-stdin)")
      .option("--secret-env <var>", "read the API key from this environment variable")
      .option("--secret-stdin", "read the API key from standard input")
      .option("--label <label>", "human-readable label"),
  );
}

/** The flags a bulk import applies to every key. */
function addCommonKeyFlags(cmd: Command): Command {
  return cmd
    .option("--weight <n>", "weight for the weighted strategy", nonNegativeIntArg)
    .option("--max-concurrency <n>", "most concurrent leases (0 is unlimited)", nonNegativeIntArg)
    .option("--quota-group <group>", "keys sharing a quota group cool down together and share its budgets")
    .option("--priority <n>", "tier: 0 is the first; a later tier is lent only while every earlier key is ineligible", nonNegativeIntArg)
    .option("--rpm <n>", "declared requests per minute (0 is none)", nonNegativeIntArg)
    .option("--tpm <n>", "declared tokens per minute (0 is none)", nonNegativeIntArg)
    .option("--rpd <n>", "declared requests per day (0 is none)", nonNegativeIntArg)
    .option("--metadata <key=value>", "metadata for borrowers, e.g. base_url=… (repeatable; replaces all)", metadataArg);
}

type ImportedKey = Partial<DeclaredKey> & { secret: string; at: string };

/**
 * The keys of an import file: YAML or JSON (by its extension) as in a config file, or one secret per
 * line (blank lines and # comments skipped). Problems name the file and line, never the line's text.
 */
function keyEntries(text: string, file: string, env: NodeJS.ProcessEnv): ImportedKey[] {
  if (/\.(ya?ml|json)$/i.test(file)) return parseKeyList(text, file, env);
  const keys: ImportedKey[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const secret = line.trim();
    if (secret !== "" && !secret.startsWith("#")) keys.push({ secret, at: `${file}:${i + 1}` });
  });
  return keys;
}

/** The fields of a file's key that it sets, to lay over the command's flags. */
function definedOnly(key: ImportedKey): KeyFlags {
  const flags: KeyFlags = {};
  for (const [field] of KEY_FLAG_PATHS) if (key[field] !== undefined) (flags as Record<string, unknown>)[field] = key[field];
  if (key.limits !== undefined) flags.limits = key.limits;
  return flags;
}

/** Pool settings in the shape the flags take. */
function flagsOf(settings: PoolSettings): PoolFlags {
  return {
    strategy: settings.strategy,
    minTtl: settings.minTtlMs,
    maxTtl: settings.maxTtlMs,
    defaultTtl: settings.defaultTtlMs,
    defaultCooldown: settings.defaultCooldownMs,
    maxCooldown: settings.maxCooldownMs,
    failureThreshold: settings.failureThreshold,
    openDuration: settings.openDurationMs,
    maxOpenDuration: settings.maxOpenDurationMs,
    halfOpenProbes: settings.halfOpenProbes,
    description: settings.description,
    quotaGroupLimits: settings.quotaGroups,
    defaultEstimatedTokens: settings.defaultEstimatedTokens,
  };
}

const ms = (d: Duration | undefined) => (d ? durationMs(d) : 0);

/** A pool as the admin API shows it, in the shape config planning compares. */
function poolConfigOf(p: Pool): PoolConfig {
  const b = p.circuitBreaker;
  return {
    name: p.name,
    strategy: STRATEGIES.find((name) => strategyValue(name) === p.strategy) ?? "round_robin",
    minTtlMs: ms(p.minTtl),
    maxTtlMs: ms(p.maxTtl),
    defaultTtlMs: ms(p.defaultTtl),
    defaultCooldownMs: ms(p.defaultCooldown),
    maxCooldownMs: ms(p.maxCooldown),
    failureThreshold: b?.failureThreshold ?? 0,
    openDurationMs: ms(b?.openDuration),
    maxOpenDurationMs: ms(b?.maxOpenDuration),
    halfOpenProbes: b?.halfOpenProbes ?? 0,
    description: p.description,
    quotaGroups: Object.fromEntries(Object.entries(p.quotaGroups).map(([name, l]) => [name, limitsOf(l)])),
    defaultEstimatedTokens: Number(p.defaultEstimatedTokens),
    createdAt: 0,
    updatedAt: 0,
  };
}

/**
 * A key as the admin API shows it, for config planning. The API never returns a secret, only its
 * masked hint: a file's secret whose mask matches the hint counts as the key's own.
 */
function keyConfigOf(k: Key, declared: DeclaredKey | undefined): KeyConfig {
  return {
    pool: k.pool,
    id: k.id,
    label: k.label,
    secret: declared && mask(declared.secret) === k.secretHint ? declared.secret : k.secretHint,
    weight: k.weight,
    maxConcurrency: k.maxConcurrency,
    quotaGroup: k.quotaGroup,
    limits: limitsOf(k.limits),
    priority: k.priority,
    metadata: { ...k.metadata },
    disabled: k.state !== KeyState.ENABLED,
    disabledReason: k.stateReason,
    createdAt: 0,
    updatedAt: 0,
  };
}

/** The secret from exactly one of the three sources, or undefined when none is given. */
async function secretFromFlags(flags: KeyFlags, io: CliIo): Promise<string | undefined> {
  const given = [flags.secret !== undefined, flags.secretEnv !== undefined, flags.secretStdin === true].filter(Boolean);
  if (given.length > 1) throw new UsageError("give the secret once: --secret, --secret-env or --secret-stdin");
  let secret: string | undefined;
  if (flags.secret !== undefined) secret = flags.secret;
  if (flags.secretEnv !== undefined) {
    secret = io.env[flags.secretEnv];
    if (!secret) throw new UsageError(`environment variable ${flags.secretEnv} is not set`);
  }
  if (flags.secretStdin) secret = (await io.readStdin()).replace(/\r?\n$/, "");
  if (secret !== undefined && secret.trim() === "") throw new UsageError("the secret is empty");
  return secret;
}

const KEY_FLAG_PATHS: Array<[keyof KeyFlags & keyof Key, string]> = [
  ["label", "label"],
  ["weight", "weight"],
  ["maxConcurrency", "max_concurrency"],
  ["quotaGroup", "quota_group"],
  ["priority", "priority"],
  ["metadata", "metadata"],
];

const LIMIT_FLAG_PATHS: Array<["rpm" | "tpm" | "rpd", keyof Limits, string]> = [
  ["rpm", "requestsPerMinute", "limits.requests_per_minute"],
  ["tpm", "tokensPerMinute", "limits.tokens_per_minute"],
  ["rpd", "requestsPerDay", "limits.requests_per_day"],
];

/** The Key message and the field-mask paths of the flags that were given. */
function keyFromFlags(pool: string, id: string, flags: KeyFlags): { key: Key; paths: string[] } {
  const key = create(KeySchema, { pool, id });
  const paths: string[] = [];
  for (const [field, path] of KEY_FLAG_PATHS) {
    if (flags[field] === undefined) continue;
    (key as Record<string, unknown>)[field] = flags[field];
    paths.push(path);
  }
  if (flags.limits !== undefined) {
    key.limits = limitsMessage(flags.limits);
    paths.push("limits");
  }
  for (const [flag, field, path] of LIMIT_FLAG_PATHS) {
    const n = flags[flag];
    if (n === undefined) continue;
    key.limits ??= create(LimitsSchema);
    key.limits[field] = BigInt(n);
    paths.push(path);
  }
  return { key, paths };
}

type OutputFormat = "table" | "json" | "yaml";

interface GlobalFlags {
  addr: string;
  token?: string;
  output: OutputFormat;
  json?: boolean;
  timeout: number;
}

/** Runs one invocation; resolves to the process exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let client: AdminClient | undefined;
  const addr = defaultAddr(io.env);
  let globals: GlobalFlags = { addr, output: "table", timeout: DEFAULT_TIMEOUT_MS };

  const program = new Command("keymesh")
    .description("KeyMesh: lease LLM API keys from shared pools")
    .version(io.version, "--version", "print the version")
    .option("--addr <host:port>", "admin API address (default: KEYMESH_ADDR, else KEYMESH_HOST:KEYMESH_GRPC_PORT)", addr)
    .option("--token <token>", "bearer token with the admin scope (env KEYMESH_TOKEN)")
    .addOption(new Option("-o, --output <format>", "output format").choices(["table", "json", "yaml"]).default("table"))
    .option("--json", "the same as -o json")
    .option("--timeout <duration>", "how long a call may take", durationArg, DEFAULT_TIMEOUT_MS)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      outputError: (text, write) => write(text.endsWith("\n") ? text : `${text}\n`),
    })
    .hook("preAction", (_root, action) => {
      globals = action.optsWithGlobals() as GlobalFlags;
    });

  const admin = (): AdminClient => {
    client ??= io.connect({ addr: globals.addr, token: globals.token ?? (io.env.KEYMESH_TOKEN || undefined) });
    return client;
  };
  const format = (): OutputFormat => (globals.json ? "json" : globals.output);
  const call = () => ({ timeoutMs: globals.timeout });
  /** JSON or YAML (the message's proto JSON) for scripts, or the human rendering. */
  const emit = <D extends DescMessage>(schema: D, message: MessageShape<D>, human: () => string) => {
    const f = format();
    if (f === "table") io.stdout(human());
    else if (f === "json") io.stdout(`${toJsonString(schema, message, { prettySpaces: 2 })}\n`);
    else io.stdout(toYaml(toJson(schema, message)));
  };
  const done = (text: string) => {
    io.stdout(format() === "table" ? `${text}\n` : "{}\n");
  };

  program
    .command("serve")
    .description("run the KeyMesh server (configured by KEYMESH_* environment variables)")
    .action(() => io.runServer());

  const pools = program.command("pools").description("manage pools");
  pools
    .command("list")
    .description("list pools")
    .action(async () => {
      const res = await admin().listPools({}, call());
      emit(ListPoolsResponseSchema, res, () => poolsTable(res.pools));
    });
  pools
    .command("get")
    .argument("<pool>")
    .description("show one pool's settings")
    .action(async (name: string) => {
      const res = await admin().getPool({ name }, call());
      emit(GetPoolResponseSchema, res, () => (res.pool ? poolDetail(res.pool) : ""));
    });
  addPoolFlags(pools.command("create").argument("<pool>").description("create a pool")).action(
    async (name: string, flags: PoolFlags) => {
      const res = await admin().createPool({ pool: poolFromFlags(name, flags).pool }, call());
      emit(CreatePoolResponseSchema, res, () => poolsTable(res.pool ? [res.pool] : []));
    },
  );
  addPoolFlags(pools.command("update").argument("<pool>").description("change the given settings of a pool")).action(
    async (name: string, flags: PoolFlags) => {
      const { pool, paths } = poolFromFlags(name, flags);
      if (paths.length === 0) throw new UsageError("nothing to update: give at least one setting flag");
      const res = await admin().updatePool({ pool, updateMask: create(FieldMaskSchema, { paths }) }, call());
      emit(UpdatePoolResponseSchema, res, () => poolsTable(res.pool ? [res.pool] : []));
    },
  );
  pools
    .command("delete")
    .argument("<pool>")
    .description("delete a pool and its keys")
    .option("--force", "delete even with live leases (they are revoked)")
    .action(async (name: string, flags: { force?: boolean }) => {
      await admin().deletePool({ name, force: flags.force ?? false }, call());
      done(`deleted pool ${name}`);
    });

  const keys = program.command("keys").description("manage the keys of a pool");
  addKeyFlags(keys.command("add").argument("<pool>").description("add a key to a pool"))
    .option("--id <id>", "key id (generated when omitted)")
    .option("--disabled", "add the key disabled")
    .action(async (pool: string, flags: KeyFlags) => {
      const secret = await secretFromFlags(flags, io);
      if (secret === undefined) throw new UsageError("keys add needs --secret, --secret-env or --secret-stdin");
      const { key } = keyFromFlags(pool, flags.id ?? "", flags);
      if (flags.disabled) key.state = KeyState.DISABLED;
      const res = await admin().addKey({ pool, key, secret }, call());
      emit(AddKeyResponseSchema, res, () => keysTable(res.key ? [res.key] : []));
    });
  keys
    .command("get")
    .argument("<pool>")
    .argument("<key>")
    .description("show one key (secret masked)")
    .action(async (pool: string, keyId: string) => {
      const res = await admin().getKey({ pool, keyId }, call());
      emit(GetKeyResponseSchema, res, () => (res.key ? keyDetail(res.key) : ""));
    });
  addCommonKeyFlags(keys.command("import").argument("<pool>").argument("<file>", "one secret per line, or YAML/JSON (.yaml, .yml, .json): a list of keys; - reads stdin"))
    .description("add many keys from a file; the flags apply to every key the file does not say otherwise for")
    .option("--id-prefix <prefix>", "ids <prefix>-1, <prefix>-2, … for keys the file gives none (default: generated)")
    .option("--disabled", "add the keys disabled")
    .action(async (pool: string, file: string, flags: KeyFlags & { idPrefix?: string }) => {
      const text = file === "-" ? await io.readStdin() : await io.readFile(file);
      const entries = keyEntries(text, file, io.env);
      const added: Key[] = [];
      let failed = 0;
      for (const [i, entry] of entries.entries()) {
        const id = entry.id ?? (flags.idPrefix ? `${flags.idPrefix}-${i + 1}` : "");
        const { key } = keyFromFlags(pool, id, { ...flags, ...definedOnly(entry) });
        if (entry.disabled ?? flags.disabled) key.state = KeyState.DISABLED;
        try {
          const res = await admin().addKey({ pool, key, secret: entry.secret }, call());
          if (res.key) added.push(res.key);
        } catch (err) {
          failed += 1;
          // Where the key is in the file and the server's answer; never the line itself (it holds the secret).
          io.stderr(`${errorLine(err, globals.addr, globals.timeout).replace(/^error: /, `error: ${entry.at}: `)}\n`);
        }
      }
      emit(ListKeysResponseSchema, create(ListKeysResponseSchema, { keys: added }), () => keysTable(added));
      if (failed > 0) throw new Error(`${failed} of ${entries.length} keys not added`);
    });
  keys
    .command("list")
    .argument("<pool>")
    .description("list the keys of a pool (secrets masked)")
    .action(async (pool: string) => {
      const res = await everyPage((pageToken) => admin().listKeys({ pool, pageToken }, call()), (r) => r.keys);
      emit(ListKeysResponseSchema, res, () => keysTable(res.keys));
    });
  addKeyFlags(keys.command("update").argument("<pool>").argument("<key>").description("change a key; a secret flag rotates it"))
    .action(async (pool: string, id: string, flags: KeyFlags) => {
      const secret = await secretFromFlags(flags, io);
      const { key, paths } = keyFromFlags(pool, id, flags);
      if (secret !== undefined) paths.push("secret");
      if (paths.length === 0) throw new UsageError("nothing to update: give at least one flag");
      const res = await admin().updateKey({ key, updateMask: create(FieldMaskSchema, { paths }), secret: secret ?? "" }, call());
      emit(UpdateKeyResponseSchema, res, () => keysTable(res.key ? [res.key] : []));
    });
  keys
    .command("enable")
    .argument("<pool>")
    .argument("<key>")
    .description("put a disabled key back in rotation")
    .action(async (pool: string, keyId: string) => {
      const res = await admin().enableKey({ pool, keyId }, call());
      emit(EnableKeyResponseSchema, res, () => keysTable(res.key ? [res.key] : []));
    });
  keys
    .command("disable")
    .argument("<pool>")
    .argument("<key>")
    .description("take a key out of rotation (its leases are revoked unless --drain)")
    .option("--drain", "let live leases finish")
    .option("--reason <text>", "why, for the record")
    .action(async (pool: string, keyId: string, flags: { drain?: boolean; reason?: string }) => {
      const res = await admin().disableKey({ pool, keyId, drain: flags.drain ?? false, reason: flags.reason ?? "" }, call());
      emit(DisableKeyResponseSchema, res, () => keysTable(res.key ? [res.key] : []));
    });
  keys
    .command("remove")
    .argument("<pool>")
    .argument("<key>")
    .description("remove a key (its leases are revoked unless --drain)")
    .option("--drain", "let live leases finish; the key goes with the last one")
    .action(async (pool: string, keyId: string, flags: { drain?: boolean }) => {
      await admin().removeKey({ pool, keyId, drain: flags.drain ?? false }, call());
      done(`removed key ${pool}/${keyId}${flags.drain ? " (draining)" : ""}`);
    });

  const leases = program.command("leases").description("inspect and revoke leases");
  leases
    .command("list")
    .argument("<pool>")
    .option("--key <key>", "only this key's leases")
    .description("list the live leases of a pool, oldest first")
    .action(async (pool: string, flags: { key?: string }) => {
      const res = await everyPage((pageToken) => admin().listLeases({ pool, keyId: flags.key ?? "", pageToken }, call()), (r) => r.leases);
      emit(ListLeasesResponseSchema, res, () => leasesTable(res.leases));
    });
  leases
    .command("revoke")
    .argument("<lease-id>")
    .option("--reason <text>", "why, for the holder and the record")
    .description("end a live lease now")
    .action(async (leaseId: string, flags: { reason?: string }) => {
      await admin().revokeLease({ leaseId, reason: flags.reason ?? "" }, call());
      done(`revoked lease ${leaseId}`);
    });

  program
    .command("stats")
    .argument("<pool>")
    .description("live state of every key of a pool")
    .action(async (pool: string) => {
      const res = await admin().getPoolStats({ pool }, call());
      emit(GetPoolStatsResponseSchema, res, () => (res.stats ? statsTable(res.stats, io.now()) : ""));
    });

  program
    .command("replicas")
    .description("the live servers sharing the database: address, heartbeat age and the pools each owns")
    .action(async () => {
      const res = await admin().listReplicas({}, call());
      emit(ListReplicasResponseSchema, res, () => replicasTable(res.replicas));
    });

  const configCmd = program.command("config").description("check and apply a config file (the format of KEYMESH_CONFIG)");
  configCmd
    .command("validate")
    .argument("<file>")
    .option("--no-secrets", "do not resolve ${ENV} references and secret files (they may exist only where the server runs)")
    .description("check a whole config file, with no server and no database; every problem is one line (file:line: field: problem)")
    .action((file: string, flags: { secrets: boolean }) => {
      const config = loadConfigFile(file, io.env, { resolveSecrets: flags.secrets });
      const keys = config.pools.reduce((n, p) => n + p.keys.length, 0);
      done(`${file}: ok (${count(config.pools.length, "pool")}, ${count(keys, "key")}, ${count(config.tokens.length, "token")})`);
    });
  configCmd
    .command("apply")
    .argument("<file>")
    .description("apply a config file's pools and keys through the admin API, as the server does on SIGHUP; only what differs changes")
    .action(async (file: string) => {
      const config = loadConfigFile(file, io.env);
      const changes = await applyOverAdmin(config);
      if (config.tokens.length > 0) io.stderr(`note: ${file}'s auth tokens are the server's to apply (its own config file, on SIGHUP)\n`);
      const f = format();
      if (f === "table") io.stdout(changes.length ? changes.map((c) => `${c}\n`).join("") : `${file}: no changes\n`);
      else io.stdout(f === "json" ? `${JSON.stringify({ changes }, null, 2)}\n` : toYaml({ changes }));
    });

  /** The file's pools compared with what the server has, and the differences applied one admin call each. */
  const applyOverAdmin = async (config: DeclarativeConfig): Promise<string[]> => {
    const existing = new Set((await admin().listPools({}, call())).pools.map((p) => p.name));
    const current: CurrentConfig = { pools: [], keys: [] };
    for (const declared of config.pools) {
      if (!existing.has(declared.name)) continue;
      current.pools.push(poolConfigOf((await admin().getPool({ name: declared.name }, call())).pool!));
      const byId = new Map(declared.keys.map((k) => [k.id, k]));
      const listed = await everyPage((pageToken) => admin().listKeys({ pool: declared.name, pageToken }, call()), (r) => r.keys);
      current.keys.push(...listed.keys.map((k) => keyConfigOf(k, byId.get(k.id))));
    }
    const api: BootstrapApi = {
      createPool: (p) => admin().createPool({ pool: poolFromFlags(p.name, flagsOf(p)).pool }, call()),
      updatePool: (p) => {
        const { pool, paths } = poolFromFlags(p.name, flagsOf(p));
        return admin().updatePool({ pool, updateMask: create(FieldMaskSchema, { paths }) }, call());
      },
      addKey: (k) => {
        const { key } = keyFromFlags(k.pool, k.id ?? "", k);
        if (k.disabled) key.state = KeyState.DISABLED;
        return admin().addKey({ pool: k.pool, key, secret: k.secret ?? "" }, call());
      },
      updateKey: (k) => {
        const { key, paths } = keyFromFlags(k.pool, k.id!, k);
        if (k.secret !== undefined) paths.push("secret");
        return admin().updateKey({ key, updateMask: create(FieldMaskSchema, { paths }), secret: k.secret ?? "" }, call());
      },
      enableKey: (pool, keyId) => admin().enableKey({ pool, keyId }, call()),
      disableKey: (pool, keyId, reason) => admin().disableKey({ pool, keyId, drain: false, reason }, call()),
      removeKey: (pool, keyId) => admin().removeKey({ pool, keyId, drain: false }, call()),
    };
    return (await applyConfig(config, current, api, { info: () => {} })).map(describeAction);
  };

  program
    .command("audit")
    .description("list admin changes, newest first: who, what, before and after (secrets masked)")
    .option("--pool <pool>", "only this pool's changes")
    .option("--since <when>", "only changes since then: a duration back from now (1h, 7d) or an RFC 3339 time", sinceArg)
    .option("--limit <n>", "most entries to show", positiveIntArg, DEFAULT_AUDIT_LIMIT)
    .action(async (flags: { pool?: string; since?: number | ((now: number) => number); limit: number }) => {
      const since = typeof flags.since === "function" ? flags.since(io.now()) : flags.since;
      const res = create(ListAuditEntriesResponseSchema);
      let pageToken = "";
      do {
        const page = await admin().listAuditEntries(
          { pool: flags.pool ?? "", since: since === undefined ? undefined : timestampFromMs(since), pageSize: Math.min(flags.limit - res.entries.length, 1000), pageToken },
          call(),
        );
        res.entries.push(...page.entries);
        pageToken = page.nextPageToken;
      } while (pageToken && res.entries.length < flags.limit);
      emit(ListAuditEntriesResponseSchema, res, () => auditTable(res.entries));
    });

  program
    .command("watch")
    .argument("[pool]", "the pool to follow (every pool when omitted)")
    .option("--leases", "also show lease granted / ended events (chatty)")
    .option("--retry-for <duration>", "how long to keep reconnecting when the stream is lost (0: exit at once)", durationArg, DEFAULT_RETRY_FOR_MS)
    .description("follow the events of a pool, one line each; reconnects when the server goes away")
    .action(async (pool: string | undefined, flags: { leases?: boolean; retryFor: number }) => {
      const interrupt = new AbortController();
      io.onInterrupt(() => interrupt.abort());
      const signal = interrupt.signal;
      const print = (event: NonNullable<MessageShape<typeof EventSchema>>) => {
        const f = format();
        if (f === "json") io.stdout(`${JSON.stringify(toJson(EventSchema, event))}\n`);
        else if (f === "yaml") io.stdout(`---\n${toYaml(toJson(EventSchema, event))}`);
        else io.stdout(eventLine(event));
      };
      let connected = false;
      let lostAt: number | undefined;
      let attempt = 0;
      for (;;) {
        let lost: unknown;
        try {
          // A unary call first: it fails fast (naming the address) where the stream could wait silently,
          // and a missing pool or a refused token ends the watch instead of being retried.
          if (pool) await admin().getPool({ name: pool }, { ...call(), signal });
          else await admin().listPools({}, { ...call(), signal });
          if (lostAt !== undefined) io.stderr(`watch: reconnected to ${globals.addr}; events while disconnected were not received\n`);
          connected = true;
          lostAt = undefined;
          attempt = 0;
          for await (const res of admin().watchEvents({ pool: pool ?? "", includeLeaseEvents: flags.leases ?? false }, { signal })) {
            if (res.event) print(res.event);
          }
        } catch (err) {
          if (signal.aborted) return;
          // Never connected, or refused for good: there is nothing to reconnect to.
          if (!transient(err) || !connected) throw err;
          lost = err;
        }
        if (signal.aborted) return;
        const why = lost instanceof ConnectError ? `${codeName(lost.code)}: ${lost.rawMessage}` : "the server ended the stream";
        lostAt ??= io.now();
        if (io.now() - lostAt >= flags.retryFor) {
          throw new Error(`watch: gave up reconnecting to ${globals.addr} after ${formatDuration(io.now() - lostAt)}: ${why}`);
        }
        const delay = Math.min(500 * 2 ** attempt, MAX_RECONNECT_DELAY_MS);
        attempt += 1;
        io.stderr(`watch: lost ${globals.addr} (${why}); reconnecting in ${formatDuration(delay)}\n`);
        await io.sleep(delay, signal);
      }
    });

  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    io.stderr(`${errorLine(err, globals.addr, globals.timeout)}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}
