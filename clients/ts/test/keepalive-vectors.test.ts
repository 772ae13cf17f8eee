// Runs test/vectors/keepalive.json against the renewal schedule with a fake clock.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Renewals } from "../src/renewals.js";

interface Step {
  at_ms: number;
  hold?: { lease_id: string; ttl_ms: number; renew_interval_ms: number };
  renewed?: { lease_id: string; ttl_ms: number; renew_interval_ms: number };
  gone?: { lease_id: string; reason: string };
  break?: string;
  release?: string;
  expect?: { stream?: string; opened?: number; sent?: string[]; ended?: Record<string, string> };
}

const vectors: { cases: { name: string; steps: Step[] }[] } = JSON.parse(
  readFileSync(new URL("../../../test/vectors/keepalive.json", import.meta.url), "utf8"),
);

/** Plays a script as the stream driver would: stepping at every wake-up and after every event. */
function play(steps: Step[]) {
  const ended: Record<string, string> = {};
  const renewals = new Renewals<string>((id, reason) => (ended[id] = reason));
  let now = 0;
  let opened = 0;
  let sent: string[] = [];
  let wake: number | null = null;
  const drive = () => {
    const s = renewals.step(now);
    if (s.open) opened++;
    sent.push(...s.send);
    wake = s.wakeAtMs;
  };
  const checks: { at: number; expected: Step["expect"]; got: Step["expect"] }[] = [];
  for (const step of steps) {
    while (wake !== null && wake <= step.at_ms) {
      now = wake;
      drive();
    }
    now = step.at_ms;
    let wakeNow = true;
    if (step.hold) wakeNow = renewals.hold(step.hold.lease_id, step.hold.lease_id, step.hold.ttl_ms, step.hold.renew_interval_ms, now);
    if (step.release) wakeNow = renewals.release(step.release);
    if (step.renewed) renewals.renewed(step.renewed.lease_id, step.renewed.ttl_ms, step.renewed.renew_interval_ms, now);
    if (step.gone) renewals.gone(step.gone.lease_id, step.gone.reason);
    if (step.break) renewals.broken(now);
    if (wakeNow) drive();
    if (step.expect) {
      const got = { stream: renewals.stream, opened, sent: [...sent].sort(), ended: { ...ended } };
      const e = step.expect;
      checks.push({
        at: now,
        expected: { stream: e.stream ?? got.stream, opened: e.opened ?? got.opened, sent: [...(e.sent ?? [])].sort(), ended: e.ended ?? {} },
        got,
      });
      sent = [];
      for (const id of Object.keys(ended)) delete ended[id];
    }
  }
  return checks;
}

describe("keepalive.json", () => {
  it("has cases", () => expect(vectors.cases.length).toBeGreaterThan(0));
  it.each(vectors.cases.map((c) => [c.name, c] as const))("%s", (_name, c) => {
    for (const check of play(c.steps)) expect({ at_ms: check.at, ...check.got }).toEqual({ at_ms: check.at, ...check.expected });
  });
});
