import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { KeyConfig, KeyInput, PoolConfig, PoolInput } from "../../src/domain/types.js";
import {
  ConfigError,
  applyBootstrap,
  describeAction,
  loadConfigFile,
  parseConfig,
  planBootstrap,
  type BootstrapApi,
  type CurrentConfig,
  type DeclarativeConfig,
} from "../../src/ops/config.js";

const OPENAI_SECRET = "sk-openai-secret-0000000001";
const ENV = { OPENAI_KEY_1: OPENAI_SECRET, OPS_TOKEN: "ops-token-0123456789abcdef" };

const YAML_CONFIG = `# KeyMesh pools
pools:
  - name: openai
    strategy: least_busy
    min_ttl: 5s
    max_ttl: 1h
    default_ttl: 1m
    default_cooldown: 10s
    circuit_breaker:
      failure_threshold: 5
      open_duration: 30s
    description: OpenAI production keys
    managed: true
    keys:
      - id: k1
        secret: \${OPENAI_KEY_1}
        label: primary
        weight: 3
        max_concurrency: 8
        quota_group: org-a
        metadata:
          base_url: https://api.openai.com/v1
      - id: k2
        secret: sk-literal-secret-00000002
  - name: anthropic
    keys:
      - id: a1
        secret: sk-ant-secret-000000000001
        disabled: true
auth:
  tokens:
    - token_env: OPS_TOKEN
      name: ops team
      scopes: [admin, "use:*"]
    - token: api-token-0123456789ab
      scopes: ["use:openai"]
`;

/** Error of parsing `text`, as "file:line: field: problem". */
function errorOf(text: string, env: NodeJS.ProcessEnv = ENV): ConfigError {
  try {
    parseConfig(text, "keymesh.yaml", env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("config file", () => {
  it("reads pools, keys (with ${ENV} secrets) and auth tokens", () => {
    const config = parseConfig(YAML_CONFIG, "keymesh.yaml", ENV);
    expect(config.pools.map((p) => p.name)).toEqual(["openai", "anthropic"]);
    const [openai, anthropic] = config.pools;
    expect(openai.managed).toBe(true);
    expect(openai.settings).toEqual({
      strategy: "least_busy", minTtlMs: 5000, maxTtlMs: 3_600_000, defaultTtlMs: 60_000, defaultCooldownMs: 10_000,
      failureThreshold: 5, openDurationMs: 30_000, description: "OpenAI production keys",
    });
    expect(openai.keys[0]).toEqual({
      id: "k1", secret: OPENAI_SECRET, label: "primary", weight: 3, maxConcurrency: 8, quotaGroup: "org-a",
      metadata: { base_url: "https://api.openai.com/v1" },
    });
    expect(anthropic.managed).toBe(false);
    expect(anthropic.settings).toEqual({});
    expect(anthropic.keys[0].disabled).toBe(true);
    expect(config.tokens.map((t) => [t.token, t.name, t.scopes])).toEqual([
      [ENV.OPS_TOKEN, "ops team", ["admin", "use:*"]],
      ["api-token-0123456789ab", "auth.tokens[1]", ["use:openai"]],
    ]);
  });

  it("reads the same declaration from JSON", () => {
    const json = JSON.stringify({
      pools: [{ name: "openai", strategy: "weighted", keys: [{ id: "k1", secret: "${OPENAI_KEY_1}", weight: 2 }] }],
    }, null, 2);
    const config = parseConfig(json, "keymesh.json", ENV);
    expect(config.pools[0].settings.strategy).toBe("weighted");
    expect(config.pools[0].keys[0]).toEqual({ id: "k1", secret: OPENAI_SECRET, weight: 2 });
  });

  it("checks a file without its secrets: unresolved tokens and secrets pass the token rules", () => {
    const config = parseConfig(YAML_CONFIG, "keymesh.yaml", {}, { resolveSecrets: false });
    expect(config.tokens.map((t) => t.name)).toEqual(["ops team", "auth.tokens[1]"]);
  });

  it("accepts an empty file as declaring nothing", () => {
    expect(parseConfig("", "empty.yaml", {})).toEqual({ source: "empty.yaml", pools: [], tokens: [] });
  });

  it.each([
    ["a non-positive weight", YAML_CONFIG.replace("weight: 3", "weight: 0"), "keymesh.yaml:18: pools[0].keys[0].weight: must be a positive integer"],
    ["an unknown strategy", YAML_CONFIG.replace("least_busy", "fastest"), "keymesh.yaml:4: pools[0].strategy: must be one of round_robin, least_busy, weighted, least_used, latency"],
    ["a bad duration", YAML_CONFIG.replace("min_ttl: 5s", "min_ttl: 5 seconds"), 'keymesh.yaml:5: pools[0].min_ttl: must be a positive duration such as "500ms", "30s", "5m", "1h"'],
    ["min_ttl above max_ttl", YAML_CONFIG.replace("min_ttl: 5s", "min_ttl: 2h"), "keymesh.yaml:5: pools[0].min_ttl: must not exceed default_ttl"],
    ["a misspelled field", YAML_CONFIG.replace("quota_group: org-a", "quota_groop: org-a"), "keymesh.yaml:20: pools[0].keys[0].quota_groop: unknown field"],
    ["a missing key id", YAML_CONFIG.replace("      - id: k2\n        secret", "      - secret"), "keymesh.yaml:23: pools[0].keys[1].id: is required"],
    ["a missing secret", YAML_CONFIG.replace("        secret: sk-literal-secret-00000002\n", ""), "keymesh.yaml:23: pools[0].keys[1].secret: is required"],
    ["an unset environment variable", YAML_CONFIG.replace("${OPENAI_KEY_1}", "${OPENAI_KEY_9}"), "keymesh.yaml:16: pools[0].keys[0].secret: environment variable OPENAI_KEY_9 is not set"],
    ["a duplicate key id", YAML_CONFIG.replace("id: k2", "id: k1"), 'keymesh.yaml:23: pools[0].keys[1].id: duplicate key id "k1" (also keys[0])'],
    ["a duplicate pool", YAML_CONFIG.replace("name: anthropic", "name: openai"), 'keymesh.yaml:25: pools[1].name: duplicate pool "openai" (also pools[0])'],
    ["a non-string metadata value", YAML_CONFIG.replace("base_url: https://api.openai.com/v1", "port: 443"), "keymesh.yaml:22: pools[0].keys[0].metadata.port: must be a string"],
    ["a bad scope", YAML_CONFIG.replace('["use:openai"]', '["use:Bad Pool"]'), "keymesh.yaml:36: auth.tokens[1].scopes[0]: must be admin, use:* or use:<pool>"],
    ["a short token", YAML_CONFIG.replace("api-token-0123456789ab", "short"), "keymesh.yaml:35: auth.tokens[1].token: token must be at least 16 characters"],
    ["a token with a space", YAML_CONFIG.replace("api-token-0123456789ab", "'api-token 0123456789ab'"), "keymesh.yaml:35: auth.tokens[1].token: token must not contain whitespace"],
    ["a bad token name", YAML_CONFIG.replace("name: ops team", "name: ' no'"), "keymesh.yaml:33: auth.tokens[0].name: must be 1-63 characters of letters, digits, space and ._:@-"],
    ["a token name given twice", YAML_CONFIG.replace("    - token: api-token-0123456789ab", "    - name: ops team\n      token: api-token-0123456789ab"), 'keymesh.yaml:35: auth.tokens[1].name: duplicate token name "ops team" (also tokens[0])'],
    ["keys that are not a list", "pools:\n  - name: p\n    keys: nope\n", "keymesh.yaml:3: pools[0].keys: must be a list"],
    ["a bad pool name", "pools:\n  - name: Bad_Name\n", "keymesh.yaml:2: pools[0].name: must be 1-63 characters"],
    ["broken YAML", "pools:\n  - name: p\n    keys: [\n", "keymesh.yaml:4: invalid YAML/JSON"],
    ["an unknown top-level field", "pool:\n  - name: p\n", "keymesh.yaml:1: pool: unknown field (expected one of pools, auth)"],
  ])("names file, line and field for %s", (_name, text, expected) => {
    const error = errorOf(text);
    expect(error.message.slice(0, expected.length)).toBe(expected);
  });

  it("never quotes a secret in an error", () => {
    const text = "pools:\n  - name: p\n    keys:\n      - id: k\n        secret: sk-do-not-print-me-000000\n        weight: -1\n";
    expect(errorOf(text).message).not.toContain("sk-do-not-print-me");
    const broken = "pools:\n  - name: p\n    keys: [{ id: k, secret: sk-do-not-print-me-000000\n";
    expect(errorOf(broken).message).not.toContain("sk-do-not-print-me");
  });

  it("reports every problem of a file at once, in file order, each with its line", () => {
    const text = [
      "pools:", //                                  1
      "  - name: p", //                             2
      "    strategy: fastest", //                    3
      "    default_ttl: 2h", //                      4
      "    keys:", //                                5
      "      - id: k1", //                           6
      "        weight: 0", //                        7
      "        secret: sk-one-000000000000000", //   8
      "      - id: k2", //                           9
      "        colour: blue", //                    10
      "  - name: q", //                             11
      "    default_ttl: 2h", //                     12
      "auth:", //                                   13
      "  tokens:", //                               14
      "    - token: short", //                      15
      "      scopes: [admin]", //                   16
    ].join("\n");
    const error = errorOf(text);
    expect(error.problems.map((p) => `${p.line}: ${p.field}`)).toEqual([
      "3: pools[0].strategy",
      "4: pools[0].default_ttl",
      "7: pools[0].keys[0].weight",
      "9: pools[0].keys[1].secret",
      "10: pools[0].keys[1].colour",
      "12: pools[1].default_ttl",
      "15: auth.tokens[0].token",
    ]);
    expect(error.message.split("\n")).toHaveLength(7);
    expect(error.message).toContain("keymesh.yaml:12: pools[1].default_ttl: must not exceed max_ttl (1h unless the file sets it)");
  });

  it.each([
    ["default_ttl above the default max_ttl", "default_ttl: 2h", "pools[0].default_ttl: must not exceed max_ttl (1h unless the file sets it)"],
    ["max_ttl below the default min_ttl", "max_ttl: 500ms", "pools[0].max_ttl: must not be below min_ttl (1s unless the file sets it)"],
    ["max_cooldown below default_cooldown", "default_cooldown: 1m\n    max_cooldown: 30s", "pools[0].default_cooldown: must not exceed max_cooldown"],
    ["open_duration above the default max_open_duration", "circuit_breaker: { open_duration: 1h }", "pools[0].circuit_breaker.open_duration: must not exceed max_open_duration (10m unless the file sets it)"],
    ["a weight above the engine's bound", "keys: [{ id: k, secret: s, weight: 2000000 }]", "pools[0].keys[0].weight: must be a whole number in [1, 1000000]"],
  ])("checks the rules between fields as the server would, before any database: %s", (_name, fields, expected) => {
    expect(errorOf(`pools:\n  - name: p\n    ${fields}\n`).message).toBe(`keymesh.yaml:3: ${expected}`);
  });

  it("takes a default_ttl the bounds imply, and a max_ttl that makes room for a long default_ttl", () => {
    expect(parseConfig("pools:\n  - name: p\n    max_ttl: 30s\n", "f.yaml", {}).pools[0].settings).toEqual({ maxTtlMs: 30_000 });
    expect(parseConfig("pools:\n  - name: p\n    default_ttl: 2h\n    max_ttl: 3h\n", "f.yaml", {}).pools[0].settings.defaultTtlMs).toBe(7_200_000);
  });

  it("reads secrets from files (secret_file, token_file) relative to the config file, without their final newline", () => {
    const dir = mkdtempSync(join(tmpdir(), "keymesh-config-"));
    writeFileSync(join(dir, "openai.key"), "sk-from-a-file-0000000001\n");
    writeFileSync(join(dir, "admin.token"), "admin-token-from-a-file-01\n");
    writeFileSync(
      join(dir, "keymesh.yaml"),
      "pools:\n  - name: p\n    keys:\n      - id: k\n        secret_file: openai.key\nauth:\n  tokens:\n    - token_file: admin.token\n      scopes: [admin]\n",
    );
    const config = loadConfigFile(join(dir, "keymesh.yaml"), {});
    expect(config.pools[0].keys[0].secret).toBe("sk-from-a-file-0000000001");
    expect(config.tokens[0].token).toBe("admin-token-from-a-file-01");
    writeFileSync(join(dir, "bad.yaml"), "pools:\n  - name: p\n    keys:\n      - id: k\n        secret_file: missing.key\n      - id: j\n        secret: s\n        secret_file: openai.key\n");
    const problems = (() => {
      try {
        loadConfigFile(join(dir, "bad.yaml"), {});
      } catch (err) {
        return (err as ConfigError).message;
      }
    })();
    expect(problems).toBe(
      `${join(dir, "bad.yaml")}:5: pools[0].keys[0].secret_file: cannot read ${join(dir, "missing.key")}: no such file\n` +
        `${join(dir, "bad.yaml")}:8: pools[0].keys[1].secret_file: give secret or secret_file, not both`,
    );
  });

  it("reads declared budgets: a key's limits and priority, a pool's quota groups and default estimate, and reports bad ones", () => {
    const text = `pools:
  - name: llm
    default_estimated_tokens: 1000
    quota_groups:
      org: { tokens_per_minute: 90000, requests_per_day: 10000 }
    keys:
      - { id: k1, secret: sk-000000000000001, quota_group: org, priority: 0, limits: { requests_per_minute: 500 } }
      - { id: k2, secret: sk-000000000000002, priority: 1 }
`;
    const [pool] = parseConfig(text, "budgets.yaml", ENV).pools;
    expect(pool!.settings).toEqual({ defaultEstimatedTokens: 1000, quotaGroups: { org: { requestsPerMinute: 0, tokensPerMinute: 90_000, requestsPerDay: 10_000 } } });
    expect(pool!.keys.map((k) => [k.id, k.limits, k.priority])).toEqual([
      ["k1", { requestsPerMinute: 500, tokensPerMinute: 0, requestsPerDay: 0 }, 0],
      ["k2", undefined, 1],
    ]);
    const bad = `pools:
  - name: llm
    quota_groups:
      org: { tokens_per_minte: 5 }
    keys:
      - { id: k1, secret: sk-000000000000001, priority: 5000, limits: { requests_per_minute: -1 } }
`;
    expect(() => parseConfig(bad, "bad.yaml", ENV)).toThrow(
      "bad.yaml:4: pools[0].quota_groups.org.tokens_per_minte: unknown field (expected one of requests_per_minute, tokens_per_minute, requests_per_day)\n" +
        "bad.yaml:6: pools[0].keys[0].limits.requests_per_minute: must be a non-negative integer (0 is none)",
    );
    const tooHigh = `pools:\n  - name: llm\n    keys:\n      - { id: k1, secret: sk-000000000000001, priority: 5000 }\n`;
    expect(() => parseConfig(tooHigh, "high.yaml", ENV)).toThrow("high.yaml:4: pools[0].keys[0].priority: must be a whole number in [0, 1000] (0 is the first tier)");
  });

  it("names the file when it cannot be read, and reads one that exists", () => {
    const dir = mkdtempSync(join(tmpdir(), "keymesh-config-"));
    expect(() => loadConfigFile(join(dir, "absent.yaml"), ENV)).toThrow(`${join(dir, "absent.yaml")}: cannot read config file: no such file`);
    writeFileSync(join(dir, "keymesh.yaml"), YAML_CONFIG);
    expect(loadConfigFile(join(dir, "keymesh.yaml"), ENV).pools).toHaveLength(2);
  });
});

/** An in-memory server: applies actions with server-side defaults, as the engine would. */
class FakeServer implements BootstrapApi {
  pools: PoolConfig[] = [];
  keys: KeyConfig[] = [];
  calls: string[] = [];

  current(): CurrentConfig {
    return { pools: this.pools.map((p) => ({ ...p })), keys: this.keys.map((k) => ({ ...k, metadata: { ...k.metadata } })) };
  }

  createPool(input: PoolInput) {
    this.calls.push(`createPool ${input.name}`);
    this.pools.push({
      strategy: "round_robin", minTtlMs: 1000, maxTtlMs: 3_600_000, defaultTtlMs: 60_000, defaultCooldownMs: 10_000,
      maxCooldownMs: 300_000, failureThreshold: 3, openDurationMs: 30_000, maxOpenDurationMs: 600_000, halfOpenProbes: 1,
      description: "", quotaGroups: {}, defaultEstimatedTokens: 0, createdAt: 0, updatedAt: 0, ...input,
    });
  }

  updatePool(input: PoolInput) {
    this.calls.push(`updatePool ${input.name} ${Object.keys(input).join(",")}`);
    Object.assign(this.pools.find((p) => p.name === input.name)!, input);
  }

  addKey(input: KeyInput) {
    this.calls.push(`addKey ${input.pool}/${input.id}`);
    this.keys.push({
      id: input.id!, label: input.id!, secret: "", weight: 1, maxConcurrency: 0, quotaGroup: "", metadata: {},
      disabled: false, disabledReason: "", createdAt: 0, updatedAt: 0, ...input,
      limits: { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0, ...input.limits }, priority: input.priority ?? 0,
    });
  }

  updateKey(input: KeyInput) {
    this.calls.push(`updateKey ${input.pool}/${input.id} ${Object.keys(input).join(",")}`);
    Object.assign(this.key(input.pool, input.id!), input);
  }

  enableKey(pool: string, keyId: string) {
    this.calls.push(`enableKey ${pool}/${keyId}`);
    this.key(pool, keyId).disabled = false;
  }

  disableKey(pool: string, keyId: string, reason: string) {
    this.calls.push(`disableKey ${pool}/${keyId} ${reason}`);
    Object.assign(this.key(pool, keyId), { disabled: true, disabledReason: reason });
  }

  removeKey(pool: string, keyId: string) {
    this.calls.push(`removeKey ${pool}/${keyId}`);
    this.keys = this.keys.filter((k) => !(k.pool === pool && k.id === keyId));
  }

  private key(pool: string, id: string): KeyConfig {
    const key = this.keys.find((k) => k.pool === pool && k.id === id);
    if (!key) throw new Error(`key ${pool}/${id} not found`);
    return key;
  }
}

async function bootstrap(server: FakeServer, config: DeclarativeConfig): Promise<void> {
  await applyBootstrap(planBootstrap(config, server.current()), server, config.source);
}

describe("planBootstrap", () => {
  const config = parseConfig(YAML_CONFIG, "keymesh.yaml", ENV);

  it("creates everything on an empty server, then plans nothing", async () => {
    const server = new FakeServer();
    const first = planBootstrap(config, server.current());
    expect(first.map(describeAction)).toEqual([
      "create pool openai",
      "add key openai/k1",
      "add key openai/k2",
      "create pool anthropic",
      "add key anthropic/a1",
    ]);
    await applyBootstrap(first, server, config.source);
    expect(planBootstrap(config, server.current())).toEqual([]);
    expect(server.keys.find((k) => k.id === "a1")?.disabled).toBe(true);
    expect(server.keys.find((k) => k.id === "k1")?.secret).toBe(OPENAI_SECRET);
  });

  it("is idempotent when applied twice: the second run makes no call", async () => {
    const server = new FakeServer();
    await bootstrap(server, config);
    const callsAfterFirst = server.calls.length;
    await bootstrap(server, config);
    expect(server.calls.length).toBe(callsAfterFirst);
  });

  it("rotates a changed secret and plans nothing afterwards", async () => {
    const server = new FakeServer();
    await bootstrap(server, config);
    const rotated = parseConfig(YAML_CONFIG, "keymesh.yaml", { ...ENV, OPENAI_KEY_1: "sk-rotated-secret-00000009" });
    const plan = planBootstrap(rotated, server.current());
    expect(plan).toEqual([
      { kind: "update_key", key: { pool: "openai", id: "k1", secret: "sk-rotated-secret-00000009" }, fields: ["secret"] },
    ]);
    expect(describeAction(plan[0])).toBe("update key openai/k1 (secret)");
    await applyBootstrap(plan, server, rotated.source);
    expect(planBootstrap(rotated, server.current())).toEqual([]);
  });

  it("updates only the pool and key fields that differ, including metadata", async () => {
    const server = new FakeServer();
    await bootstrap(server, config);
    const edited = parseConfig(
      YAML_CONFIG.replace("strategy: least_busy", "strategy: latency").replace("https://api.openai.com/v1", "https://proxy.internal/v1").replace("weight: 3", "weight: 4"),
      "keymesh.yaml",
      ENV,
    );
    expect(planBootstrap(edited, server.current())).toEqual([
      { kind: "update_pool", pool: { name: "openai", strategy: "latency" }, fields: ["strategy"] },
      { kind: "update_key", key: { pool: "openai", id: "k1", weight: 4, metadata: { base_url: "https://proxy.internal/v1" } }, fields: ["weight", "metadata"] },
    ]);
  });

  it("plans a change of a key's limits or a pool's quota groups, and nothing once applied", async () => {
    const server = new FakeServer();
    await applyBootstrap(planBootstrap(config, server.current()), server, config.source);
    const changed = parseConfig(
      YAML_CONFIG.replace("quota_group: org-a", "quota_group: org-a\n        limits: { tokens_per_minute: 40000 }").replace(
        "description: OpenAI production keys",
        "description: OpenAI production keys\n    quota_groups: { org-a: { requests_per_minute: 100 } }",
      ),
      "keymesh.yaml",
      ENV,
    );
    const plan = planBootstrap(changed, server.current());
    expect(plan.map(describeAction)).toEqual(["update pool openai (quotaGroups)", "update key openai/k1 (limits)"]);
    await applyBootstrap(plan, server, config.source);
    expect(planBootstrap(changed, server.current())).toEqual([]);
  });

  it("leaves alone the fields the file does not declare, even after an operator changed them", async () => {
    const server = new FakeServer();
    await bootstrap(server, config);
    server.pools.find((p) => p.name === "anthropic")!.strategy = "weighted";
    server.keys.find((k) => k.id === "k2")!.weight = 7;
    expect(planBootstrap(config, server.current())).toEqual([]);
  });

  it("re-enables or disables a key to match a declared disabled flag", async () => {
    const server = new FakeServer();
    await bootstrap(server, config);
    server.keys.find((k) => k.id === "a1")!.disabled = false;
    server.keys.find((k) => k.id === "k1")!.disabled = true;
    expect(planBootstrap(config, server.current()).map(describeAction)).toEqual(["disable key anthropic/a1"]);
    const declaresEnabled = parseConfig(YAML_CONFIG.replace("quota_group: org-a", "quota_group: org-a\n        disabled: false"), "keymesh.yaml", ENV);
    const plan = planBootstrap(declaresEnabled, server.current());
    expect(plan.map(describeAction)).toEqual(["enable key openai/k1", "disable key anthropic/a1"]);
    await applyBootstrap(plan, server, "keymesh.yaml");
    expect(server.calls).toContain("disableKey anthropic/a1 disabled in keymesh.yaml");
    expect(planBootstrap(declaresEnabled, server.current())).toEqual([]);
  });

  it("removes unlisted keys only from managed pools, and never touches undeclared pools", async () => {
    const server = new FakeServer();
    await bootstrap(server, config);
    server.addKey({ pool: "openai", id: "manual-1", secret: "sk-manual-000000000000001" });
    server.addKey({ pool: "anthropic", id: "manual-2", secret: "sk-manual-000000000000002" });
    server.createPool({ name: "gemini" });
    server.addKey({ pool: "gemini", id: "g1", secret: "AIza-manual" });
    const plan = planBootstrap(config, server.current());
    expect(plan).toEqual([{ kind: "remove_key", pool: "openai", keyId: "manual-1" }]);
    await applyBootstrap(plan, server, config.source);
    expect(planBootstrap(config, server.current())).toEqual([]);
    expect(server.keys.map((k) => `${k.pool}/${k.id}`).sort()).toEqual(["anthropic/a1", "anthropic/manual-2", "gemini/g1", "openai/k1", "openai/k2"]);
  });

  it("names the file and the action when the server refuses one, without the secret", async () => {
    const server = new FakeServer();
    server.addKey = () => {
      throw new Error("pool_not_found: pool openai not found");
    };
    const error = await applyBootstrap(planBootstrap(config, server.current()), server, "keymesh.yaml").catch((e: Error) => e);
    expect((error as Error).message).toBe("keymesh.yaml: bootstrap failed to add key openai/k1: pool_not_found: pool openai not found");
    expect((error as Error).message).not.toContain(OPENAI_SECRET);
  });
});
