// The environment variables of the audit trail, the metrics and the store: defaults, values, and a bad value
// refused naming its variable.
import { describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/app/config.js";

describe("configFromEnv", () => {
  it("defaults to 90 days of audit entries, per-key series for pools up to 1000 keys, a 30 s statement timeout", () => {
    expect(configFromEnv({})).toMatchObject({ auditRetentionMs: 90 * 86_400_000, metricsMaxKeys: 1000, statementTimeoutMs: 30_000 });
  });

  it("reads each, 0 turning per-key series and the statement timeout off", () => {
    const env = { KEYMESH_AUDIT_RETENTION: "7d", KEYMESH_METRICS_MAX_KEYS: "0", KEYMESH_STATEMENT_TIMEOUT: "0" };
    expect(configFromEnv(env)).toMatchObject({ auditRetentionMs: 7 * 86_400_000, metricsMaxKeys: 0, statementTimeoutMs: 0 });
    expect(configFromEnv({ KEYMESH_STATEMENT_TIMEOUT: "2m", KEYMESH_METRICS_MAX_KEYS: "50" })).toMatchObject({ statementTimeoutMs: 120_000, metricsMaxKeys: 50 });
  });

  it.each([
    ["KEYMESH_AUDIT_RETENTION", "0", 'KEYMESH_AUDIT_RETENTION: "0" is not a positive duration'],
    ["KEYMESH_METRICS_MAX_KEYS", "-1", 'KEYMESH_METRICS_MAX_KEYS: "-1" is not a non-negative integer'],
    ["KEYMESH_METRICS_MAX_KEYS", "many", 'KEYMESH_METRICS_MAX_KEYS: "many" is not a non-negative integer'],
    ["KEYMESH_STATEMENT_TIMEOUT", "soon", 'KEYMESH_STATEMENT_TIMEOUT: "soon" is not a duration'],
  ])("refuses %s=%s, naming it", (name, value, message) => {
    expect(() => configFromEnv({ [name]: value })).toThrow(message);
  });
});
