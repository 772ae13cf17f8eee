// The server's classifier against the shared vectors (test/vectors/classification.json): every case
// whose result follows from what MarkFailed carries, an HTTP status and a message.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { classifyStatus } from "../../src/domain/health.js";

interface ErrorShape {
  shape: "openai" | "anthropic" | "gemini" | "timeout" | "connection";
  status?: number | string;
  code?: number | string | null;
  type?: string | null;
  message?: string;
  error?: { type?: string; message?: string };
  details?: { "@type"?: string; reason?: string }[];
}

interface Case {
  name: string;
  input: { status: number | null; error: ErrorShape | null };
  expect: { outcome: string };
}

const vectors = JSON.parse(
  readFileSync(fileURLToPath(new URL("../../../test/vectors/classification.json", import.meta.url)), "utf8"),
) as { cases: Case[] };

/** Rules 2 and 3 of the vectors' README: SDK error codes, which never reach the server. */
const CODES_THAT_DECIDE = new Set(["insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error", "overloaded_error"]);

/** Rule 5's Gemini ErrorInfo reason: in the error's details, which MarkFailed does not carry. */
const REASONS_THAT_DECIDE = new Set(["API_KEY_INVALID", "API_KEY_EXPIRED"]);

/** What a client's MarkFailed carries for the case, or why the server cannot judge it. */
function markFailedOf(c: Case): { httpStatus: number; message: string } | string {
  const e = c.input.error;
  const codes = e ? [e.shape === "openai" ? e.code : undefined, e.type, e.error?.type] : [];
  if (codes.some((code) => typeof code === "string" && CODES_THAT_DECIDE.has(code))) return "decided by an SDK error code";
  const reasons = (e?.shape === "gemini" ? (e.details ?? []) : []).filter((d) => d["@type"]?.endsWith("google.rpc.ErrorInfo")).map((d) => d.reason);
  if (reasons.some((reason) => reason !== undefined && REASONS_THAT_DECIDE.has(reason))) return "decided by a Gemini ErrorInfo reason";
  // The error's own HTTP status wins; a timeout or a broken connection has none, which MarkFailed sends as 0.
  const status = !e ? c.input.status : e.shape === "gemini" ? e.code : e.shape === "timeout" || e.shape === "connection" ? 0 : e.status;
  if (typeof status !== "number") throw new Error(`${c.name}: no status in the vector`);
  if (status >= 200 && status <= 299) return "a success, which is a Release";
  return { httpStatus: status, message: (e?.shape === "anthropic" ? e.error?.message : e?.message) ?? "" };
}

describe("classifyStatus and the shared classification vectors", () => {
  const judged = vectors.cases.map((c) => ({ c, report: markFailedOf(c) }));

  it("agrees with every vector the server can judge from a status and a message", () => {
    const cases = judged.filter((j) => typeof j.report !== "string");
    expect(cases.length).toBeGreaterThanOrEqual(40);
    for (const { c, report } of cases) {
      const { httpStatus, message } = report as { httpStatus: number; message: string };
      expect({ name: c.name, outcome: classifyStatus(httpStatus, message) }).toEqual({ name: c.name, outcome: c.expect.outcome });
    }
  });

  it("leaves out only successes and cases an SDK error code or a Gemini ErrorInfo reason decides", () => {
    const left = judged.filter((j) => typeof j.report === "string").map((j) => [j.c.name, j.report]);
    expect(left).toEqual([
      ["openai 429 insufficient_quota is quota exhausted", "decided by an SDK error code"],
      ["openai 429 billing_hard_limit_reached is quota exhausted", "decided by an SDK error code"],
      ["anthropic 529 overloaded_error", "decided by an SDK error code"],
      ["anthropic overloaded_error inside a 200 stream", "decided by an SDK error code"],
      ["anthropic 402 billing_error", "decided by an SDK error code"],
      ["gemini 400 INVALID_ARGUMENT with ErrorInfo API_KEY_INVALID is auth", "decided by a Gemini ErrorInfo reason"],
      ["gemini 400 INVALID_ARGUMENT with ErrorInfo API_KEY_EXPIRED is auth", "decided by a Gemini ErrorInfo reason"],
      ["http 200 success", "a success, which is a Release"],
      ["http 204 success", "a success, which is a Release"],
    ]);
  });
});
