import { describe, expect, it } from "vitest";
import { isEligible } from "../../src/domain/key.js";
import { SnapshotChanges } from "../../src/domain/snapshot-changes.js";
import { FakeClock } from "../fake-clock.js";
import { keyEntry, poolEntry } from "./helpers.js";

const NONE = { remaining: undefined, limit: undefined, resetMs: undefined };

describe("a key's eligibility", () => {
  it("follows every change to what it depends on, with no refresh to remember", () => {
    const clock = new FakeClock();
    const k = keyEntry(poolEntry(), new SnapshotChanges(100), "a");
    const eligible = (tokens = 0) => isEligible(k, clock.now(), tokens, undefined);
    const steps: Array<[string, () => void, boolean]> = [
      ["disabled", () => k.disable("maintenance"), false],
      ["enabled", () => k.enable(), true],
      ["draining", () => k.drain(false), false],
      ["done draining", () => k.stopDraining(), true],
      ["draining for removal", () => k.drain(true), false],
      ["enabled again", () => k.enable(), true],
      ["auto-disabled", () => k.autoDisable("quota", "billing", clock.now()), false],
      ["enabled by an operator", () => k.enable(), true],
      ["request budget spent", () => k.reportBudget({ remaining: 0, limit: 10, resetMs: 5_000 }, NONE, clock.now(), clock.now() + 1), false],
      ["its reset passed", () => clock.advance(5_000), true],
      ["reported with one left", () => k.reportBudget({ remaining: 1, limit: undefined, resetMs: 5_000 }, NONE, clock.now(), clock.now() + 1), true],
      ["that one lent", () => k.debitRequest(clock.now(), clock.now() + 1), false],
      ["a newer report", () => k.reportBudget({ remaining: 3, limit: undefined, resetMs: 5_000 }, NONE, clock.now(), clock.now() + 1), true],
      ["no tokens left", () => k.reportBudget(NONE, { remaining: 0, limit: 1_000, resetMs: 2_000 }, clock.now(), clock.now() + 1), false],
      ["tokens reset", () => clock.advance(2_000), true],
      ["full at max_concurrency 1", () => (k.configure({ ...k.cfg, maxConcurrency: 1 }, clock.now()), k.active++), false],
      ["unlimited again", () => k.configure({ ...k.cfg, maxConcurrency: 0 }, clock.now()), true],
      ["restored auto-disabled", () => k.restore({ ...k.toRuntime(clock.now()), autoDisabled: { cause: "auth", message: "401", at: clock.now() } }, clock.now()), false],
    ];
    const seen = steps.map(([name, change]) => {
      change();
      return [name, eligible()];
    });
    expect(seen).toEqual(steps.map(([name, , want]) => [name, want]));
  });

  it("counts the tokens a caller estimates against the token budget", () => {
    const clock = new FakeClock();
    const k = keyEntry(poolEntry(), new SnapshotChanges(100), "a");
    k.reportBudget(NONE, { remaining: 500, limit: 1_000, resetMs: 60_000 }, clock.now(), clock.now() + 1);
    expect([isEligible(k, clock.now(), 500, undefined), isEligible(k, clock.now(), 501, undefined)]).toEqual([true, false]);
    expect(isEligible(k, clock.now(), 0, new Set(["a"]))).toBe(false);
  });
});
