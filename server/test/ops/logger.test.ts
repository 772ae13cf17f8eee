import { describe, expect, it } from "vitest";
import { createLogger, scrubSecrets } from "../../src/ops/logger.js";

const OPENAI = "sk-proj-Abc123def456ghi789jkl012mno345";
const ANTHROPIC = "sk-ant-api03-ZYXwvu987tsr654qpo321nml";
const GEMINI = "AIzaSyD-1234567890abcdefghijklmnopqrstu";
const BEARER = "opaque.token.value.0123456789";

function capture(level = "debug") {
  const lines: string[] = [];
  const logger = createLogger(level, { write: (line: string) => void lines.push(line) });
  return { logger, lines, text: () => lines.join("") };
}

describe("logger", () => {
  it("redacts secret-named fields at the top level and one level down", () => {
    const { logger, text } = capture();
    logger.info({ secret: "plain-secret-value", grant: { key: "plain-key-value", token: "plain-token-value" } }, "granted");
    expect(text()).not.toContain("plain-secret-value");
    expect(text()).not.toContain("plain-key-value");
    expect(text()).not.toContain("plain-token-value");
    expect(JSON.parse(text()).grant.key).toBe("[redacted]");
  });

  it("masks provider keys and bearer tokens that appear in messages, errors and bindings", () => {
    const { logger, text } = capture();
    logger.child({ holder: `worker using ${GEMINI}` }).warn(`retrying with ${OPENAI}`);
    logger.error(new Error(`provider rejected ${ANTHROPIC}`), "upstream failed");
    logger.info({ headers: { authorization: `Bearer ${BEARER}` } }, `header was Bearer ${BEARER}`);
    logger.info(`multi-line\n${OPENAI}`);
    const out = text();
    for (const raw of [OPENAI, ANTHROPIC, GEMINI, BEARER]) expect(out).not.toContain(raw);
    expect(out).toContain("sk-…o345");
    expect(out).toContain("sk-…1nml");
    expect(out).toContain("Bearer opa…6789");
  });

  it("writes one JSON object per line with a string level", () => {
    const { logger, lines } = capture("info");
    logger.debug("hidden");
    logger.info({ pool: "openai" }, "pool created");
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]);
    expect(entry).toMatchObject({ level: "info", msg: "pool created", pool: "openai", service: "keymesh" });
  });

  it("rejects an unknown level", () => {
    expect(() => createLogger("verbose", { write: () => {} })).toThrow(/KEYMESH_LOG_LEVEL: "verbose" is not a level/);
  });

  it("leaves words that merely contain a key prefix alone", () => {
    expect(scrubSecrets("task-queue-abcdefghijklmnopqrstu risk-assessment-abcdefghijklmnop")).toBe(
      "task-queue-abcdefghijklmnopqrstu risk-assessment-abcdefghijklmnop",
    );
  });
});
