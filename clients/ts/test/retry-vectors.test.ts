// Runs test/vectors/retry.json through the retry loop with a fake pool, clock and random source.
import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorDetailSchema, ErrorReason } from "../src/gen/keymesh/v1/common_pb.js";
import type { OutcomeKind } from "../src/classify.js";
import { retryLoop } from "../src/retry.js";

interface ScriptStep {
  acquire?: { exclude: string[]; wait_ms: number };
  lend?: string;
  fail?: { code: string; reason?: string };
  elapsed_ms?: number;
  call?: string;
  outcome?: OutcomeKind;
  retry_after_ms?: number;
  sleep_ms?: number;
}
interface Case {
  name: string;
  budget_ms?: number;
  wait_ms?: number;
  exclude?: string[];
  script: ScriptStep[];
  result: "success" | "last_call" | "acquire_error";
}
const vectors: { defaults: Required<Omit<Case, "name" | "script" | "result">> & { backoff_base_ms: number; backoff_cap_ms: number; random: number }; cases: Case[] } =
  JSON.parse(readFileSync(new URL("../../../test/vectors/retry.json", import.meta.url), "utf8"));

const codeOf = (name: string) => Code[name.toLowerCase().replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()).replace(/^./, (c) => c.toUpperCase()) as keyof typeof Code];

/** The loop's actions, in the vectors' words. */
async function play(c: Case): Promise<{ actions: ScriptStep[]; result: string }> {
  const d = vectors.defaults;
  let now = 0;
  const actions: ScriptStep[] = [];
  const script = [...c.script];
  const nextStep = () => script.shift() ?? {};
  const callFailure = new Error("the call failed");
  let acquireError: unknown;
  const result = await retryLoop<{ keyId: string }, string>(
    {
      acquire: async (exclude, waitMs) => {
        const step = nextStep();
        actions.push({ acquire: { exclude: [...exclude], wait_ms: waitMs } });
        now += step.elapsed_ms ?? 0;
        if (step.lend !== undefined) return { keyId: step.lend };
        const fail = step.fail ?? { code: "INTERNAL" };
        const details = fail.reason ? [{ desc: ErrorDetailSchema, value: create(ErrorDetailSchema, { reason: ErrorReason[fail.reason as keyof typeof ErrorReason] }) }] : [];
        acquireError = new ConnectError("scripted", codeOf(fail.code), undefined, details);
        throw acquireError;
      },
      run: async (lease) => {
        const step = nextStep();
        actions.push({ call: lease.keyId });
        const kind = step.outcome ?? "success";
        return {
          outcome: { kind, retryAfterMs: step.retry_after_ms ?? null },
          result: () => {
            if (kind === "success") return "ok";
            throw callFailure;
          },
        };
      },
      now: () => now,
      sleep: async (ms) => {
        nextStep();
        actions.push({ sleep_ms: ms });
        now += ms;
      },
      random: () => d.random,
      aborted: () => false,
    },
    {
      budgetMs: c.budget_ms ?? d.budget_ms,
      waitMs: c.wait_ms ?? d.wait_ms,
      exclude: c.exclude ?? d.exclude,
      backoffBaseMs: d.backoff_base_ms,
      backoffCapMs: d.backoff_cap_ms,
    },
  ).then(
    () => "success",
    (e: unknown) => (e === callFailure ? "last_call" : e === acquireError ? "acquire_error" : `unexpected: ${String(e)}`),
  );
  return { actions, result };
}

/** The script as the actions it asks of the loop (answers left out). */
const expectedActions = (c: Case): ScriptStep[] =>
  c.script.map((s) => (s.acquire ? { acquire: s.acquire } : s.call !== undefined ? { call: s.call } : { sleep_ms: s.sleep_ms }));

describe("retry.json", () => {
  it("has cases", () => expect(vectors.cases.length).toBeGreaterThan(0));
  it.each(vectors.cases.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    expect(await play(c)).toEqual({ actions: expectedActions(c), result: c.result });
  });
});
