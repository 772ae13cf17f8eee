// The configuration examples in docs/operations.md work as printed: the config file parses with every
// setting it shows, and its tokens let a backend acquire (a use: scope) beside the operator's admin token.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createAuthorizer, parseAuthTokensEnv } from "../../server/src/ops/auth.js";
import { parseConfig } from "../../server/src/ops/config.js";

const page = readFileSync(path.resolve(import.meta.dirname, "../../docs/operations.md"), "utf8");

/** The contents of the page's fenced blocks of one language. */
function blocks(lang: string): string[] {
  return [...page.matchAll(new RegExp(`^\`\`\`${lang}\\n([^]*?)^\`\`\``, "gm"))].map((m) => m[1]!);
}

describe("docs/operations.md", () => {
  it("has a config file example that the server accepts, every setting included", () => {
    const [yaml] = blocks("yaml");
    const env = { OPENAI_KEY_1: "sk-example-0123456789abcdef", OPS_TOKEN: "ops-token-0123456789", BACKEND_TOKEN: "backend-token-0123456789" };
    const config = parseConfig(yaml!, "operations.md", env);
    const [pool] = config.pools;
    expect(pool).toMatchObject({ name: "openai", managed: true });
    expect(Object.keys(pool!.settings).sort()).toEqual(
      [
        "defaultCooldownMs", "defaultEstimatedTokens", "defaultTtlMs", "description", "failureThreshold", "halfOpenProbes", "maxCooldownMs",
        "maxOpenDurationMs", "maxTtlMs", "minTtlMs", "openDurationMs", "quotaGroups", "strategy",
      ],
    );
    expect(pool!.keys[0]).toMatchObject({ id: "k1", secret: env.OPENAI_KEY_1, maxConcurrency: 8, quotaGroup: "org-a", priority: 0, disabled: false });
    expect(pool!.keys[0]!.limits).toEqual({ requestsPerMinute: 4950, tokensPerMinute: 990_000, requestsPerDay: 0 });
    const auth = createAuthorizer(config.tokens);
    const acquire = { service: "keymesh.v1.KeyPoolService", name: "Acquire" };
    expect(auth.authorize(acquire, `Bearer ${env.BACKEND_TOKEN}`, "openai")).toEqual({ ok: true, name: "auth.tokens[1]" });
    expect(auth.authorize(acquire, `Bearer ${env.OPS_TOKEN}`, "openai")).toMatchObject({ ok: false, code: "permission_denied" });
    expect(auth.authorize({ service: "keymesh.v1.PoolAdminService", name: "ListPools" }, `Bearer ${env.OPS_TOKEN}`, undefined)).toEqual({ ok: true, name: "ops team" });
  });

  it("has a KEYMESH_AUTH_TOKENS example that parses", () => {
    const line = blocks("sh").flatMap((b) => b.split("\n")).find((l) => l.startsWith("KEYMESH_AUTH_TOKENS="));
    const grants = parseAuthTokensEnv(line!.slice("KEYMESH_AUTH_TOKENS=".length).replace(/^'|'$/g, ""));
    expect(grants.map((g) => [g.name, g.scopes])).toEqual([
      ["ops team", ["admin"]],
      ["KEYMESH_AUTH_TOKENS[2]", ["use:openai", "use:anthropic"]],
    ]);
  });
});
