// The alert rules in deploy/prometheus name only series the server exports, with labels those series
// carry; promtool (scripts/test.sh) tests that the rules fire, on series written by hand.
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { KeyStatsView } from "../../server/src/domain/types.js";
import { NO_LIMITS } from "../../server/src/domain/config.js";
import { emptyUsage } from "../../server/src/domain/usage.js";
import { createMetrics } from "../../server/src/ops/metrics.js";

const RULES = path.resolve(import.meta.dirname, "../../deploy/prometheus/keymesh-alerts.yml");

interface RuleFile {
  groups: Array<{ rules: Array<{ alert: string; expr: string }> }>;
}

/** Every keymesh_* selector of an expression, with the label matchers it has (`result="timeout"`). */
function selectors(expr: string): Array<{ name: string; labels: string[] }> {
  return [...expr.matchAll(/\b(keymesh_[a-z_]+)(?:\{([^}]*)\})?/g)].map(([, name, matchers]) => ({
    name,
    labels: matchers ? [...matchers.matchAll(/([a-z_]+)\s*=\s*"([^"]*)"/g)].map((m) => `${m[1]}="${m[2]}"`) : [],
  }));
}

async function exportedSeries(): Promise<string[]> {
  const metrics = createMetrics({ defaultMetrics: false });
  const key: KeyStatsView = {
    keyId: "k1", label: "k1", state: "enabled", eligible: true, activeLeases: 1, maxConcurrency: 0, successRate: 1,
    consecutiveFailures: 0, circuitState: "closed", cooldownRemainingMs: 0, budget: {}, totalLeases: 1,
    recentLeases: 1, inputTokens: 0, outputTokens: 0, priority: 0, quotaGroup: "", limits: NO_LIMITS, remaining: {},
    reservedTokens: 0, usage: emptyUsage(),
  };
  metrics.setSource({
    pools: () => ["openai"],
    poolStats: (pool) => ({ pool, totalKeys: 1, eligibleKeys: 1, activeLeases: 1, waiters: 0, keys: [key], usage: emptyUsage(), quotaGroups: [], servingPriority: 0, affinities: 0 }),
    unwrittenSince: () => undefined,
  });
  metrics.observeAcquire("openai", "granted", 1);
  metrics.observeAcquire("openai", "timeout", 1000, 1000);
  metrics.observeAcquire("openai", "no_key", 0.1);
  metrics.observeSnapshot(5);
  metrics.setDatabaseUp(true);
  return (await metrics.metricsText()).split("\n").filter((line) => line !== "" && !line.startsWith("#"));
}

describe("alert rules", () => {
  const rules = (parse(readFileSync(RULES, "utf8")) as RuleFile).groups.flatMap((g) => g.rules);

  it("cover the failure modes KeyMesh knows", () => {
    expect(rules.map((r) => r.alert).sort()).toEqual(
      ["KeyMeshAcquireTimeouts", "KeyMeshDatabaseDown", "KeyMeshPoolNoEligibleKey", "KeyMeshSnapshotsFailing"],
    );
  });

  it("select only series the server exports, with the label values they carry", async () => {
    const series = await exportedSeries();
    for (const rule of rules) {
      for (const { name, labels } of selectors(rule.expr)) {
        const lines = series.filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
        expect(lines, `${rule.alert}: ${name}`).not.toEqual([]);
        for (const label of labels) expect(lines.some((line) => line.includes(label)), `${rule.alert}: ${name}{${label}}`).toBe(true);
      }
    }
  });
});
