import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { AdminClient, ConnectOptions } from "../../src/cli/client.js";
import { runCli, type CliIo } from "../../src/cli/program.js";
import {
  CircuitState,
  EventSchema,
  EventType,
  KeySchema,
  KeyState,
  KeyStatsSchema,
  ListLeasesResponseSchema,
  ListPoolsResponseSchema,
  type ListLeasesResponse,
  PoolSchema,
  PoolStatsSchema,
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
    env: {},
    connect: (options) => {
      connects.push(options);
      return client;
    },
    runServer: async () => {},
    now: () => NOW,
    onInterrupt: () => {},
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

  it("lists keys with masked secrets and their state", async () => {
    const key = create(KeySchema, {
      id: "k1", pool: "openai", label: "primary", secretHint: "sk-…abcd", weight: 1, state: KeyState.AUTO_DISABLED_AUTH,
      stateReason: "auth: 401 invalid api key", metadata: { base_url: "https://api.openai.com/v1" },
    });
    const r = await run(["keys", "list", "openai"], { listKeys: () => ({ keys: [key] }) });
    const row = r.stdout.trimEnd().split("\n")[1].split(/\s{2,}/);
    expect(row).toEqual(["k1", "primary", "sk-…abcd", "auto_disabled_auth", "1", "unlimited", "-", "base_url=https://api.openai.com/v1", "auth: 401 invalid api key"]);
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

  it("shows pool stats per key: state, active leases, EMA latency, success rate, cooldown left, circuit", async () => {
    const stats = create(PoolStatsSchema, {
      pool: "openai", totalKeys: 2, eligibleKeys: 1, activeLeases: 3, waiters: 0,
      keys: [
        create(KeyStatsSchema, { keyId: "k1", label: "primary", state: KeyState.ENABLED, eligible: true, activeLeases: 3, maxConcurrency: 4, emaLatency: durationFromMs(1250), successRate: 0.975, circuitState: CircuitState.CLOSED, totalLeases: 40n }),
        create(KeyStatsSchema, { keyId: "k2", label: "k2", state: KeyState.ENABLED, eligible: false, successRate: 0.5, circuitState: CircuitState.OPEN, circuitOpenUntil: timestampFromMs(NOW + 20_000), cooldownRemaining: durationFromMs(45_000) }),
      ],
    });
    const r = await run(["stats", "openai"], { getPoolStats: () => ({ stats }) });
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("pool openai: 2 keys, 1 eligible, 3 active leases, 0 waiting");
    expect(lines[1].split(/\s{2,}/)).toEqual(["KEY", "LABEL", "STATE", "ELIGIBLE", "ACTIVE", "EMA_LATENCY", "SUCCESS", "COOLDOWN_LEFT", "CIRCUIT", "TOTAL"]);
    expect(lines[2].split(/\s{2,}/)).toEqual(["k1", "primary", "enabled", "yes", "3/4", "1.3s", "97.5%", "-", "closed", "40"]);
    expect(lines[3].split(/\s{2,}/)).toEqual(["k2", "k2", "enabled", "no", "0", "-", "50.0%", "45s", "open (20s left)", "0"]);
  });

  it("follows events one line each until the stream ends", async () => {
    async function* events() {
      yield { event: create(EventSchema, { type: EventType.COOLDOWN_STARTED, time: timestampFromMs(NOW), pool: "openai", keyId: "k1", until: timestampFromMs(NOW + 20_000), reason: "retry-after 20s" }) };
      yield { event: create(EventSchema, { type: EventType.LAGGED, time: timestampFromMs(NOW + 1), pool: "openai" }) };
    }
    const r = await run(["watch", "openai", "--leases"], { watchEvents: () => events() });
    expect(r.code).toBe(0);
    expect(r.calls[0].req).toEqual({ pool: "openai", includeLeaseEvents: true });
    expect(r.stdout).toBe(
      '2026-01-01T00:00:00.000Z cooldown_started pool=openai key=k1 until=2026-01-01T00:00:20.000Z reason="retry-after 20s"\n' +
        "2026-01-01T00:00:00.001Z lagged pool=openai\n",
    );
  });

  it("ends a watch cleanly when interrupted", async () => {
    let ctrlC = () => {};
    async function* events(_req: unknown, options: { signal: AbortSignal }) {
      yield { event: create(EventSchema, { type: EventType.KEY_ADDED, pool: "openai", keyId: "k3" }) };
      ctrlC();
      if (options.signal.aborted) throw new ConnectError("operation was aborted", Code.Canceled);
    }
    const r = await run(["--json", "watch"], { watchEvents: events }, { onInterrupt: (stop) => void (ctrlC = stop) });
    expect(r.code).toBe(0);
    expect(r.calls[0].req).toEqual({ pool: "", includeLeaseEvents: false });
    expect(JSON.parse(r.stdout)).toEqual({ type: "EVENT_TYPE_KEY_ADDED", pool: "openai", keyId: "k3" });
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
