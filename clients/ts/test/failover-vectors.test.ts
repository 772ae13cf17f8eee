// Runs test/vectors/failover.json through the endpoint choice and the failover loop with fake
// endpoints, clock and random source.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Endpoints, withFailover } from "../src/endpoints.js";

interface Attempt {
  expect?: string;
  answer?: string;
  owner?: string;
  elapsed_ms?: number;
  sleep_ms?: number;
}
interface Step {
  call?: { pool: string | null };
  attempts?: Attempt[];
  result?: string;
  stream_open?: string;
  stream_break?: string;
}
interface Case {
  name: string;
  endpoints: string[];
  deadline_ms?: number;
  steps: Step[];
}
const vectors: { defaults: { deadline_ms: number; backoff_base_ms: number; backoff_cap_ms: number; random: number }; cases: Case[] } = JSON.parse(
  readFileSync(new URL("../../../test/vectors/failover.json", import.meta.url), "utf8"),
);

class Scripted extends Error {
  constructor(
    readonly code: string,
    readonly owner: string | null,
  ) {
    super(code);
  }
}

/** What the client did, in the vectors' words: each step as the client played it. */
async function play(c: Case): Promise<Step[]> {
  const d = vectors.defaults;
  const endpoints = new Endpoints(c.endpoints);
  let now = 0;
  let streamOn: string | undefined;
  const played: Step[] = [];
  for (const step of c.steps) {
    if (step.stream_open !== undefined) {
      streamOn = endpoints.current;
      played.push({ stream_open: streamOn });
      continue;
    }
    if (step.stream_break !== undefined) {
      endpoints.streamEnded(streamOn!);
      played.push({ stream_break: step.stream_break });
      continue;
    }
    const script = [...step.attempts!];
    const attempts: Attempt[] = [];
    const pool = step.call!.pool ?? undefined;
    const result = await withFailover(
      endpoints,
      pool,
      now + (c.deadline_ms ?? d.deadline_ms),
      {
        attempt: async (endpoint) => {
          const a = script.shift() ?? { answer: "OK" };
          attempts.push({ ...a, expect: endpoint });
          now += a.elapsed_ms ?? 0;
          if (a.answer === "OK") return a.owner ?? null;
          throw new Scripted(a.answer ?? "INTERNAL", a.owner ?? null);
        },
        answer: (o) => (o.ok ? { unavailable: false, owner: o.value } : { unavailable: (o.error as Scripted).code === "UNAVAILABLE", owner: (o.error as Scripted).owner }),
        now: () => now,
        sleep: async (ms) => {
          script.shift();
          attempts.push({ sleep_ms: ms });
          now += ms;
        },
        random: () => d.random,
      },
      { backoffBaseMs: d.backoff_base_ms, backoffCapMs: d.backoff_cap_ms },
    ).then(
      () => "OK",
      (e: unknown) => (e instanceof Scripted ? e.code : `unexpected: ${String(e)}`),
    );
    played.push({ call: step.call!, attempts, result });
  }
  return played;
}

describe("failover.json", () => {
  it("has cases", () => expect(vectors.cases.length).toBeGreaterThan(0));
  it.each(vectors.cases.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    expect(await play(c)).toEqual(c.steps);
  });
});
