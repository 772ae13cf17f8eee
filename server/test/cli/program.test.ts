import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import type { AdminClient, ConnectOptions } from "../../src/cli/client.js";
import { runCli, type CliIo } from "../../src/cli/program.js";
import {
  AuditEntrySchema,
  CircuitState,
  EventSchema,
  EventType,
  GetKeyResponseSchema,
  KeySchema,
  KeyState,
  KeyStatsSchema,
  ListLeasesResponseSchema,
  ListPoolsResponseSchema,
  type ListLeasesResponse,
  PoolSchema,
  PoolStatsSchema,
  ReplicaSchema,
  Strategy,
} from "../../src/gen/keymesh/v1/admin_pb.js";

const NOW = Date.parse("2026-01-01T00:00:00Z");

/** Records every admin call; answers from `answers` (a method name → handler). */
function fakeClient(answers: Record<string, (req: any, options?: any) => unknown>) {
  const calls: Array<{ method: string; req: any }> = [];
  const client = new Proxy({} as AdminClient, {
    get: (_target, method: string) => (req: unknown, options?: unknown) => {
      calls.push({ method, req });
      const answer = answers[method];
      if (!answer) throw new Error(`unexpected call ${method}`);
      return answer(req, options);
    },
  });
  return { client, calls };
}

async function run(argv: string[], answers: Record<string, (req: any, options?: any) => unknown> = {}, extra: Partial<CliIo> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const connects: ConnectOptions[] = [];
  const { client, calls } = fakeClient(answers);
  const code = await runCli(argv, {
    stdout: (t) => void out.push(t),
    stderr: (t) => void err.push(t),
    readStdin: async () => "",
    readFile: async (path) => {
      throw new Error(`ENOENT: no such file or directory, open '${path}'`);
    },
    env: {},
    connect: (options) => {
      connects.push(options);
      return client;
    },
    runServer: async () => {},
    now: () => NOW,
    sleep: async () => {},
    onInterrupt: () => {},
    version: "1.2.3",
    ...extra,
  });
  return { code, stdout: out.join(""), stderr: err.join(""), calls, connects };
}

const openai = create(PoolSchema, {
  name: "openai",
  strategy: Strategy.LEAST_BUSY,
  minTtl: durationFromMs(1000),
  defaultTtl: durationFromMs(60_000),
  maxTtl: durationFromMs(3_600_000),
  defaultCooldown: durationFromMs(10_000),
  maxCooldown: durationFromMs(300_000),
  circuitBreaker: { failureThreshold: 3, openDuration: durationFromMs(30_000) },
  description: "prod",
  keyCount: 2,
});

describe("keymesh CLI", () => {
  it("lists pools as a table for people", async () => {
    const r = await run(["pools", "list"], { listPools: () => ({ pools: [openai] }) });
    expect(r.code).toBe(0);
    const [header, row] = r.stdout.trimEnd().split("\n");
    expect(header.split(/\s{2,}/)).toEqual(["NAME", "STRATEGY", "KEYS", "TTL (MIN/DEFAULT/MAX)", "COOLDOWN (DEFAULT/MAX)", "BREAKER", "DESCRIPTION"]);
    expect(row.split(/\s{2,}/)).toEqual(["openai", "least_busy", "2", "1s/1m/1h", "10s/5m", "3 fails, open 30s", "prod"]);
  });

  it("prints proto JSON with --json", async () => {
    const r = await run(["--json", "pools", "list"], { listPools: () => create(ListPoolsResponseSchema, { pools: [openai] }) });
    const json = JSON.parse(r.stdout);
    expect(json.pools[0]).toMatchObject({ name: "openai", strategy: "STRATEGY_LEAST_BUSY", maxTtl: "3600s", keyCount: 2 });
  });

  it("accepts the global flags after the subcommand too", async () => {
    const r = await run(["pools", "list", "--json", "--addr", "127.0.0.1:7001"], { listPools: () => create(ListPoolsResponseSchema, { pools: [openai] }) });
    expect(JSON.parse(r.stdout).pools[0].name).toBe("openai");
    expect(r.connects[0].addr).toBe("127.0.0.1:7001");
  });

  it("creates a pool from flags", async () => {
    const r = await run(
      ["pools", "create", "gemini", "--strategy", "weighted", "--max-ttl", "10m", "--default-ttl", "30s", "--failure-threshold", "5", "--description", "Gemini keys"],
      { createPool: (req) => ({ pool: req.pool }) },
    );
    expect(r.code).toBe(0);
    const pool = r.calls[0].req.pool;
    expect(pool).toMatchObject({ name: "gemini", strategy: Strategy.WEIGHTED, description: "Gemini keys" });
    expect(durationMs(pool.maxTtl)).toBe(600_000);
    expect(durationMs(pool.defaultTtl)).toBe(30_000);
    expect(pool.circuitBreaker.failureThreshold).toBe(5);
    expect(pool.minTtl).toBeUndefined();
    expect(r.stdout).toContain("gemini");
  });

  it("updates only the settings given, naming them in the field mask", async () => {
    const r = await run(["pools", "update", "openai", "--strategy", "latency", "--open-duration", "1m"], {
      updatePool: (req) => ({ pool: req.pool }),
    });
    expect(r.code).toBe(0);
    expect(r.calls[0].req.updateMask.paths).toEqual(["strategy", "circuit_breaker.open_duration"]);
  });

  it("refuses an update with nothing to change (exit 2, no call)", async () => {
    const r = await run(["pools", "update", "openai"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("error: nothing to update: give at least one setting flag\n");
    expect(r.calls).toHaveLength(0);
  });

  it("rejects a bad duration before calling the server", async () => {
    const r = await run(["pools", "create", "x", "--max-ttl", "forever"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: option '--max-ttl <duration>' argument 'forever' is invalid/);
    expect(r.calls).toHaveLength(0);
  });

  it("deletes a pool with --force", async () => {
    const r = await run(["pools", "delete", "openai", "--force"], { deletePool: () => ({}) });
    expect(r.calls[0].req).toEqual({ name: "openai", force: true });
    expect(r.stdout).toBe("deleted pool openai\n");
  });

  it.each([
    ["an argument", ["--secret", "sk-from-arg-0000000000001"], {}, ""],
    ["an environment variable", ["--secret-env", "MY_KEY"], { MY_KEY: "sk-from-arg-0000000000001" }, ""],
    ["stdin", ["--secret-stdin"], {}, "sk-from-arg-0000000000001\n"],
  ])("adds a key with its secret from %s and never prints the secret", async (_name, flags, env, stdin) => {
    const r = await run(
      ["keys", "add", "openai", "--id", "k1", ...flags, "--weight", "2", "--max-concurrency", "4", "--metadata", "base_url=https://x/v1", "--metadata", "org=o1"],
      { addKey: (req) => ({ key: { ...req.key, secretHint: "sk-…0001", state: KeyState.ENABLED } }) },
      { env, readStdin: async () => stdin },
    );
    expect(r.code).toBe(0);
    expect(r.calls[0].req).toMatchObject({
      pool: "openai",
      secret: "sk-from-arg-0000000000001",
      key: { id: "k1", weight: 2, maxConcurrency: 4, metadata: { base_url: "https://x/v1", org: "o1" } },
    });
    expect(r.stdout).toContain("sk-…0001");
    expect(r.stdout).not.toContain("sk-from-arg-0000000000001");
  });

  it.each([
    [["--secret", "a", "--secret-env", "B"], "error: give the secret once: --secret, --secret-env or --secret-stdin"],
    [["--secret-env", "UNSET_VAR"], "error: environment variable UNSET_VAR is not set"],
    [[], "error: keys add needs --secret, --secret-env or --secret-stdin"],
  ])("refuses keys add %j with exit 2", async (flags, message) => {
    const r = await run(["keys", "add", "openai", ...flags]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`${message}\n`);
    expect(r.calls).toHaveLength(0);
  });

  it("rotates a secret with keys update and names it in the mask", async () => {
    const r = await run(["keys", "update", "openai", "k1", "--secret-env", "NEW", "--label", "primary"], {
      updateKey: (req) => ({ key: req.key }),
    }, { env: { NEW: "sk-rotated-00000000000002" } });
    expect(r.code).toBe(0);
    expect(r.calls[0].req.updateMask.paths).toEqual(["label", "secret"]);
    expect(r.calls[0].req.secret).toBe("sk-rotated-00000000000002");
  });

  it("sets declared budgets and the tier: --rpm/--tpm/--rpd/--priority on keys, --quota-group-limits and --default-estimated-tokens on pools", async () => {
    const added = await run(["keys", "add", "openai", "--id", "k2", "--secret", "sk-budget-00000000000001", "--rpm", "500", "--tpm", "90000", "--priority", "1"], {
      addKey: (req) => ({ key: req.key }),
    });
    expect(added.code).toBe(0);
    expect(added.calls[0].req.key).toMatchObject({ priority: 1, limits: { requestsPerMinute: 500n, tokensPerMinute: 90_000n, requestsPerDay: 0n } });
    const updated = await run(["keys", "update", "openai", "k2", "--rpd", "10000"], { updateKey: (req) => ({ key: req.key }) });
    expect(updated.calls[0].req.updateMask.paths).toEqual(["limits.requests_per_day"]);
    expect(updated.calls[0].req.key.limits.requestsPerDay).toBe(10_000n);
    const pool = await run(["pools", "update", "openai", "--quota-group-limits", "org:rpm=100,tpm=5000", "--quota-group-limits", "team:rpd=9", "--default-estimated-tokens", "700"], {
      updatePool: (req) => ({ pool: req.pool }),
    });
    expect(pool.calls[0].req.updateMask.paths).toEqual(["quota_groups", "default_estimated_tokens"]);
    expect(pool.calls[0].req.pool).toMatchObject({
      defaultEstimatedTokens: 700n,
      quotaGroups: { org: { requestsPerMinute: 100n, tokensPerMinute: 5_000n, requestsPerDay: 0n }, team: { requestsPerDay: 9n } },
    });
    const bad = await run(["pools", "update", "openai", "--quota-group-limits", "org:rph=1"]);
    expect([bad.code, bad.calls.length]).toEqual([1, 0]);
    expect(bad.stderr).toContain("expected group:rpm=N,tpm=N,rpd=N");
  });

  it("lists keys with masked secrets and their state", async () => {
    const key = create(KeySchema, {
      id: "k1", pool: "openai", label: "primary", secretHint: "sk-…abcd", weight: 1, state: KeyState.AUTO_DISABLED_AUTH,
      stateReason: "auth: 401 invalid api key", metadata: { base_url: "https://api.openai.com/v1" },
    });
    const r = await run(["keys", "list", "openai"], { listKeys: () => ({ keys: [key] }) });
    const row = r.stdout.trimEnd().split("\n")[1].split(/\s{2,}/);
    expect(row).toEqual(["k1", "primary", "sk-…abcd", "auto_disabled_auth", "1", "unlimited", "-", "0", "-", "base_url=https://api.openai.com/v1", "auth: 401 invalid api key"]);
  });

  it("disables with drain and reason, enables, removes", async () => {
    const answers = { disableKey: () => ({ key: create(KeySchema, { id: "k1" }) }), enableKey: () => ({ key: create(KeySchema, { id: "k1" }) }), removeKey: () => ({}) };
    expect((await run(["keys", "disable", "openai", "k1", "--drain", "--reason", "rotating"], answers)).calls[0].req).toEqual({
      pool: "openai", keyId: "k1", drain: true, reason: "rotating",
    });
    expect((await run(["keys", "enable", "openai", "k1"], answers)).calls[0].req).toEqual({ pool: "openai", keyId: "k1" });
    const removed = await run(["keys", "remove", "openai", "k1"], answers);
    expect(removed.calls[0].req).toEqual({ pool: "openai", keyId: "k1", drain: false });
    expect(removed.stdout).toBe("removed key openai/k1\n");
  });

  it("lists and revokes leases", async () => {
    const lease = { leaseId: "lk1.abc.def", pool: "openai", keyId: "k1", holder: "worker-7", acquireTime: timestampFromMs(NOW), expiresAt: timestampFromMs(NOW + 60_000), ttl: durationFromMs(60_000) };
    const listed = await run(["leases", "list", "openai", "--key", "k1"], { listLeases: () => ({ leases: [lease] }) });
    expect(listed.calls[0].req).toEqual({ pool: "openai", keyId: "k1", pageToken: "" });
    expect(listed.stdout.split("\n")[1].split(/\s{2,}/)).toEqual(["lk1.abc.def", "k1", "worker-7", "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z", "1m"]);
    const revoked = await run(["leases", "revoke", "lk1.abc.def", "--reason", "stuck"], { revokeLease: () => ({}) });
    expect(revoked.calls[0].req).toEqual({ leaseId: "lk1.abc.def", reason: "stuck" });
    expect(revoked.stdout).toBe("revoked lease lk1.abc.def\n");
  });

  it("gathers every page of a list into one table, or one JSON response", async () => {
    const lease = (id: string) => ({ leaseId: id, pool: "openai", keyId: "k1", holder: "w", acquireTime: timestampFromMs(NOW), expiresAt: timestampFromMs(NOW + 60_000), ttl: durationFromMs(60_000) });
    const pages: Record<string, ListLeasesResponse> = {
      "": create(ListLeasesResponseSchema, { leases: [lease("lk1.a.1"), lease("lk1.a.2")], nextPageToken: "t1" }),
      t1: create(ListLeasesResponseSchema, { leases: [lease("lk1.a.3")], nextPageToken: "" }),
    };
    const answers = { listLeases: (req: { pageToken: string }) => pages[req.pageToken] };
    const table = await run(["leases", "list", "openai"], answers);
    expect(table.calls.map((c) => c.req.pageToken)).toEqual(["", "t1"]);
    expect(table.stdout.trimEnd().split("\n").slice(1).map((line) => line.split(/\s{2,}/)[0])).toEqual(["lk1.a.1", "lk1.a.2", "lk1.a.3"]);
    const json = JSON.parse((await run(["--json", "leases", "list", "openai"], answers)).stdout);
    expect(json.leases.map((l: { leaseId: string }) => l.leaseId)).toEqual(["lk1.a.1", "lk1.a.2", "lk1.a.3"]);
    expect(json.nextPageToken).toBeUndefined();
  });

  it("lists the replicas with their heartbeat age and the pools each owns", async () => {
    const replicas = [
      create(ReplicaSchema, { id: "r-1", address: "10.0.0.1:50051", heartbeatAge: durationFromMs(400), pools: ["a", "b"] }),
      create(ReplicaSchema, { id: "r-2", address: "10.0.0.2:50051", heartbeatAge: durationFromMs(1200), pools: [] }),
    ];
    const r = await run(["replicas"], { listReplicas: () => ({ replicas }) });
    const lines = r.stdout.trimEnd().split("\n").map((l) => l.split(/\s{2,}/));
    expect(lines).toEqual([
      ["ID", "ADDRESS", "HEARTBEAT_AGE", "POOLS", "OWNS"],
      ["r-1", "10.0.0.1:50051", "400ms", "2", "a,b"],
      ["r-2", "10.0.0.2:50051", "1.2s", "0", "-"],
    ]);
  });

  it("shows pool stats per key: state, active leases, EMA latency, success rate, cooldown left, circuit", async () => {
    const stats = create(PoolStatsSchema, {
      pool: "openai", totalKeys: 2, eligibleKeys: 1, activeLeases: 3, waiters: 0, servingPriority: 0, affinities: 1, owner: "10.0.0.2:50051", term: 7n,
      usage: { requests: 40n, inputTokens: 1000n, outputTokens: 200n, successes: 37n, rateLimited: 1n, failures: 1n, unreported: 1n },
      quotaGroups: [{ name: "org", keys: 2, limits: { requestsPerMinute: 100n }, remaining: { requestsPerMinute: 60n }, usage: { requests: 40n } }],
      keys: [
        create(KeyStatsSchema, {
          keyId: "k1", label: "primary", state: KeyState.ENABLED, eligible: true, activeLeases: 3, maxConcurrency: 4, emaLatency: durationFromMs(1250), successRate: 0.975,
          circuitState: CircuitState.CLOSED, totalLeases: 40n, limits: { requestsPerMinute: 60n, tokensPerMinute: 90_000n }, remaining: { requestsPerMinute: 12n, tokensPerMinute: 50_000n },
          reservedTokens: 4_000n, usage: { requests: 40n, inputTokens: 1000n, outputTokens: 200n },
        }),
        create(KeyStatsSchema, { keyId: "k2", label: "k2", state: KeyState.ENABLED, eligible: false, successRate: 0.5, circuitState: CircuitState.OPEN, circuitOpenUntil: timestampFromMs(NOW + 20_000), cooldownRemaining: durationFromMs(45_000), priority: 1 }),
      ],
    });
    const r = await run(["stats", "openai"], { getPoolStats: () => ({ stats }) });
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("pool openai: 2 keys, 1 eligible, 3 active leases, 0 waiting, lending priority 0, owner 10.0.0.2:50051, term 7, 1 affinity");
    expect(lines[1]).toBe("usage: 40 requests (37 ok, 1 rate-limited, 1 failed, 1 unreported), 1000 in / 200 out tokens");
    expect(lines[2]).toBe("quota group org (2 keys): 100 rpm; left 60/100 - -; 40 requests (0 ok, 0 rate-limited, 0 failed, 0 unreported), 0 in / 0 out tokens");
    expect(lines[3].split(/\s{2,}/)).toEqual([
      "KEY", "LABEL", "STATE", "ELIGIBLE", "ACTIVE", "EMA_LATENCY", "SUCCESS", "COOLDOWN_LEFT", "CIRCUIT", "PRIO", "RPM_LEFT", "TPM_LEFT", "RPD_LEFT", "RESERVED", "TOTAL", "TOKENS_IN/OUT",
    ]);
    expect(lines[4].split(/\s{2,}/)).toEqual(["k1", "primary", "enabled", "yes", "3/4", "1.3s", "97.5%", "-", "closed", "0", "12/60", "50000/90000", "-", "4000", "40", "1000/200"]);
    expect(lines[5].split(/\s{2,}/)).toEqual(["k2", "k2", "enabled", "no", "0", "-", "50.0%", "45s", "open (20s left)", "1", "-", "-", "-", "0", "0", "-"]);
  });

  it("follows events one line each; reconnects when the stream is lost, saying so; gives up with exit 1", async () => {
    let clock = NOW;
    let streams = 0;
    let probes = 0;
    async function* events() {
      streams += 1;
      yield { event: create(EventSchema, { type: EventType.KEY_ADDED, time: timestampFromMs(NOW), pool: "openai", keyId: `k${streams}` }) };
      if (streams === 1) throw new ConnectError("read ECONNRESET", Code.Unavailable);
    }
    const refused = () => Promise.reject(new ConnectError("connect ECONNREFUSED 127.0.0.1:50051", Code.Unavailable));
    const r = await run(
      ["watch", "openai", "--leases", "--retry-for", "10s"],
      {
        // Up, down once, up (the stream then ends: the server stopped), then down for good.
        getPool: () => (++probes === 2 || probes >= 4 ? refused() : { pool: openai }),
        watchEvents: () => events(),
      },
      { now: () => clock, sleep: async (ms) => void (clock += ms) },
    );
    expect(r.code).toBe(1);
    expect(r.calls.find((c) => c.method === "watchEvents")!.req).toEqual({ pool: "openai", includeLeaseEvents: true });
    expect(r.stdout).toBe(
      "2026-01-01T00:00:00.000Z key_added pool=openai key=k1\n" + "2026-01-01T00:00:00.000Z key_added pool=openai key=k2\n",
    );
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines.slice(0, 4)).toEqual([
      "watch: lost 127.0.0.1:50051 (unavailable: read ECONNRESET); reconnecting in 500ms",
      "watch: lost 127.0.0.1:50051 (unavailable: connect ECONNREFUSED 127.0.0.1:50051); reconnecting in 1s",
      "watch: reconnected to 127.0.0.1:50051; events while disconnected were not received",
      "watch: lost 127.0.0.1:50051 (the server ended the stream); reconnecting in 500ms",
    ]);
    expect(lines.at(-1)).toBe("error: watch: gave up reconnecting to 127.0.0.1:50051 after 12.5s: unavailable: connect ECONNREFUSED 127.0.0.1:50051");
  });

  it("does not retry a watch that never connected, or that the server refuses", async () => {
    const never = await run(["watch"], { listPools: () => Promise.reject(new ConnectError("connect ECONNREFUSED 127.0.0.1:50051", Code.Unavailable)) });
    expect(never.code).toBe(1);
    expect(never.stderr).toBe("error: unavailable: connect ECONNREFUSED 127.0.0.1:50051 (is keymesh serving on 127.0.0.1:50051?)\n");
    const missing = await run(["watch", "nope"], { getPool: () => Promise.reject(new ConnectError('pool "nope" not found', Code.NotFound)) });
    expect(missing.stderr).toBe('error: not_found: pool "nope" not found\n');
  });

  it("ends a watch cleanly when interrupted", async () => {
    let ctrlC = () => {};
    async function* events(_req: unknown, options: { signal: AbortSignal }) {
      yield { event: create(EventSchema, { type: EventType.KEY_ADDED, pool: "openai", keyId: "k3" }) };
      ctrlC();
      if (options.signal.aborted) throw new ConnectError("operation was aborted", Code.Canceled);
    }
    const r = await run(["--json", "watch"], { listPools: () => ({ pools: [] }), watchEvents: events }, { onInterrupt: (stop) => void (ctrlC = stop) });
    expect(r.code).toBe(0);
    expect(r.calls[1].req).toEqual({ pool: "", includeLeaseEvents: false });
    expect(JSON.parse(r.stdout)).toEqual({ type: "EVENT_TYPE_KEY_ADDED", pool: "openai", keyId: "k3" });
  });

  it("lists the audit trail newest first, filtered by pool and a since duration, every page up to --limit", async () => {
    const entry = (id: number, init: object) => create(AuditEntrySchema, { id: BigInt(id), time: timestampFromMs(NOW - id * 1000), pool: "openai", replica: "km-1:7", ...init });
    const pages = [
      { entries: [entry(3, { actor: "alice", action: "update_key", keyId: "k1", before: { label: "old", secretHint: "sk-…1234" }, after: { label: "new", secretHint: "sk-…5678" } })], nextPageToken: "t1" },
      { entries: [entry(2, { actor: "config file", action: "add_key", keyId: "k1", after: { id: "k1" } }), entry(1, { actor: "bob", action: "disable_key", keyId: "k2", reason: "rotation", before: { disabled: false }, after: { disabled: true } })], nextPageToken: "t2" },
    ];
    const r = await run(["audit", "--pool", "openai", "--since", "2h", "--limit", "3"], { listAuditEntries: (req) => pages[req.pageToken === "" ? 0 : 1] });
    expect(r.code).toBe(0);
    expect(r.calls.map((c) => [c.req.pool, Number(c.req.since.seconds) * 1000, c.req.pageSize, c.req.pageToken])).toEqual([
      ["openai", NOW - 7_200_000, 3, ""],
      ["openai", NOW - 7_200_000, 2, "t1"],
    ]);
    const lines = r.stdout.trimEnd().split("\n").map((line) => line.split(/\s{2,}/));
    expect(lines[0]).toEqual(["TIME", "ACTOR", "ACTION", "POOL", "OBJECT", "CHANGE", "REASON", "REPLICA"]);
    expect(lines[1]).toEqual(["2025-12-31T23:59:57.000Z", "alice", "update_key", "openai", "k1", "label: old → new, secretHint: sk-…1234 → sk-…5678", "-", "km-1:7"]);
    expect(lines[2].slice(1, 6)).toEqual(["config file", "add_key", "openai", "k1", "created"]);
    expect(lines[3].slice(5, 7)).toEqual(["disabled: false → true", "rotation"]);

    const at = await run(["audit", "--since", "2026-01-01T00:00:00Z", "-o", "json"], { listAuditEntries: () => ({ entries: [], nextPageToken: "" }) });
    expect([at.calls[0]!.req.since.seconds, JSON.parse(at.stdout)]).toEqual([BigInt(NOW / 1000), {}]);
    expect((await run(["audit", "--since", "yesterday"])).code).toBe(1);
  });

  it("prints its version", async () => {
    const r = await run(["--version"]);
    expect(r).toMatchObject({ code: 0, stdout: "1.2.3\n" });
  });

  it("prints -o yaml and -o json; --json is -o json", async () => {
    const answers = { listPools: () => create(ListPoolsResponseSchema, { pools: [openai] }) };
    const yaml = await run(["pools", "list", "-o", "yaml"], answers);
    expect(parseYaml(yaml.stdout)).toMatchObject({ pools: [{ name: "openai", strategy: "STRATEGY_LEAST_BUSY", maxTtl: "3600s" }] });
    const json = await run(["-o", "json", "pools", "list"], answers);
    expect(JSON.parse(json.stdout)).toEqual(JSON.parse((await run(["--json", "pools", "list"], answers)).stdout));
    expect((await run(["-o", "xml", "pools", "list"], answers)).code).not.toBe(0);
  });

  it("gets one pool and one key, field by field", async () => {
    const pool = await run(["pools", "get", "openai"], { getPool: () => ({ pool: openai }) });
    expect(pool.calls[0].req).toEqual({ name: "openai" });
    expect(pool.stdout).toMatch(/^name: +openai$/m);
    expect(pool.stdout).toMatch(/^ttl: +min 1s, default 1m, max 1h$/m);
    expect(pool.stdout).toMatch(/^circuit breaker: +3 failures open it for 30s/m);
    const key = create(KeySchema, { pool: "openai", id: "k1", label: "primary", secretHint: "sk-…abcd", state: KeyState.AUTO_DISABLED_AUTH, stateReason: "401", weight: 1 });
    const got = await run(["keys", "get", "openai", "k1", "-o", "json"], { getKey: () => create(GetKeyResponseSchema, { key }) });
    expect(got.calls[0].req).toEqual({ pool: "openai", keyId: "k1" });
    expect(got.stderr).toBe("");
    expect(JSON.parse(got.stdout).key).toMatchObject({ id: "k1", secretHint: "sk-…abcd", state: "KEY_STATE_AUTO_DISABLED_AUTH" });
    const table = await run(["keys", "get", "openai", "k1"], { getKey: () => ({ key }) });
    expect(table.stdout).toMatch(/^state: +auto_disabled_auth \(401\)$/m);
  });

  it("names the address and the limit when a call times out; --timeout sets it", async () => {
    const r = await run(["--addr", "10.9.9.9:50051", "--timeout", "2s", "pools", "list"], {
      listPools: (_req, options) => Promise.reject(new ConnectError(`deadline ${options.timeoutMs}`, Code.DeadlineExceeded)),
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: deadline_exceeded: no answer from 10.9.9.9:50051 within 2s (--timeout)\n");
    const byDefault = await run(["pools", "list"], { listPools: (_req, options) => ({ pools: [], timeoutMs: options.timeoutMs }) });
    expect(byDefault.code).toBe(0);
  });

  it("imports keys from a file of secrets, one per line, never printing one", async () => {
    const file = "sk-import-first-000000000001\n\n# a comment\nsk-import-second-00000000002\n";
    const r = await run(["keys", "import", "openai", "keys.txt", "--id-prefix", "bulk", "--max-concurrency", "4"], {
      addKey: (req) =>
        req.key.id === "bulk-2"
          ? Promise.reject(new ConnectError('key "bulk-2" already exists', Code.AlreadyExists))
          : { key: create(KeySchema, { ...req.key, secretHint: "sk-…0001" }) },
    }, { readFile: async () => file });
    expect(r.calls.map((c) => [c.req.key.id, c.req.key.maxConcurrency, c.req.secret])).toEqual([
      ["bulk-1", 4, "sk-import-first-000000000001"],
      ["bulk-2", 4, "sk-import-second-00000000002"],
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^bulk-1 .*sk-…0001/m);
    expect(r.stderr).toBe('error: keys.txt:4: already_exists: key "bulk-2" already exists\nerror: 1 of 2 keys not added\n');
    expect(r.stdout + r.stderr).not.toContain("sk-import-");
  });

  it("imports keys from YAML, checking the whole file first", async () => {
    const yaml = "- id: a\n  secret: sk-yaml-aaaaaaaaaaaaaaaa\n  weight: 2\n- id: b\n  secret: sk-yaml-bbbbbbbbbbbbbbbb\n  quota_group: org\n";
    const ok = await run(["keys", "import", "openai", "keys.yaml", "-o", "json"], { addKey: (req) => ({ key: req.key }) }, { readFile: async () => yaml });
    expect(ok.code).toBe(0);
    expect(ok.calls.map((c) => [c.req.key.id, c.req.key.weight, c.req.key.quotaGroup, c.req.secret])).toEqual([
      ["a", 2, "", "sk-yaml-aaaaaaaaaaaaaaaa"],
      ["b", 0, "org", "sk-yaml-bbbbbbbbbbbbbbbb"],
    ]);
    expect(JSON.parse(ok.stdout).keys.map((k: { id: string }) => k.id)).toEqual(["a", "b"]);
    const bad = await run(["keys", "import", "openai", "keys.yaml"], {}, { readFile: async () => yaml.replace("weight: 2", "weight: 0").replace("id: b", "id: B b") });
    expect(bad.code).toBe(1);
    expect(bad.calls).toEqual([]);
    expect(bad.stderr).toBe(
      "error: keys.yaml:3: [0].weight: must be a positive integer\nerror: keys.yaml:4: [1].id: must be 1-63 characters of [A-Za-z0-9._-]\n",
    );
  });

  it("prints one error line with the status code name and exits 1", async () => {
    const r = await run(["keys", "list", "nope"], {
      listKeys: () => Promise.reject(new ConnectError('pool "nope" not found', Code.NotFound)),
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe('error: not_found: pool "nope" not found\n');
  });

  it("says where it tried to connect when the server is unreachable", async () => {
    const r = await run(["--addr", "127.0.0.1:1", "pools", "list"], {
      listPools: () => Promise.reject(new ConnectError("connect ECONNREFUSED 127.0.0.1:1", Code.Unavailable)),
    });
    expect(r.stderr).toBe("error: unavailable: connect ECONNREFUSED 127.0.0.1:1 (is keymesh serving on 127.0.0.1:1?)\n");
  });

  it("never prints a stack trace for an unexpected failure", async () => {
    const r = await run(["pools", "list"], { listPools: () => Promise.reject(new TypeError("boom")) });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: boom\n");
  });

  it("defaults the address to KEYMESH_ADDR, else the server's KEYMESH_HOST and KEYMESH_GRPC_PORT", async () => {
    const answers = { listPools: () => ({ pools: [] }) };
    const addr = async (env: NodeJS.ProcessEnv) => (await run(["pools", "list"], answers, { env })).connects[0].addr;
    expect(await addr({ KEYMESH_GRPC_PORT: "6000" })).toBe("127.0.0.1:6000");
    expect(await addr({ KEYMESH_HOST: "0.0.0.0", KEYMESH_GRPC_PORT: "6000" })).toBe("127.0.0.1:6000");
    expect(await addr({ KEYMESH_HOST: "::", KEYMESH_GRPC_PORT: "6000" })).toBe("[::1]:6000");
    expect(await addr({ KEYMESH_HOST: "10.0.0.5" })).toBe("10.0.0.5:50051");
    expect(await addr({ KEYMESH_ADDR: "keymesh:7000", KEYMESH_HOST: "10.0.0.5", KEYMESH_GRPC_PORT: "6000" })).toBe("keymesh:7000");
  });

  it("takes address and token from flags, or from KEYMESH_ADDR and KEYMESH_TOKEN", async () => {
    const answers = { listPools: () => ({ pools: [] }) };
    const fromFlags = await run(["--addr", "10.1.1.1:7000", "--token", "flag-token", "pools", "list"], answers);
    expect(fromFlags.connects).toEqual([{ addr: "10.1.1.1:7000", token: "flag-token" }]);
    const fromEnv = await run(["pools", "list"], answers, { env: { KEYMESH_ADDR: "127.0.0.1:6000", KEYMESH_TOKEN: "env-token" } });
    expect(fromEnv.connects).toEqual([{ addr: "127.0.0.1:6000", token: "env-token" }]);
    const defaults = await run(["pools", "list"], answers);
    expect(defaults.connects).toEqual([{ addr: "127.0.0.1:50051", token: undefined }]);
  });

  it("reports an unknown command on stderr with a non-zero exit", async () => {
    const r = await run(["pool", "list"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: unknown command 'pool'/);
  });

  it("runs the server for serve", async () => {
    let ran = false;
    const r = await run(["serve"], {}, { runServer: async () => void (ran = true) });
    expect(r.code).toBe(0);
    expect(ran).toBe(true);
  });
});
