// The availability heartbeat on a fake clock and a fake driver: an idle server notices an outage and the
// return of its database, and a closed one stops pinging.
import type postgres from "postgres";
import { describe, expect, it } from "vitest";
import { Availability } from "../../src/store/availability.js";
import { captureLog, FakeClock, settle } from "./helpers.js";

/** A driver whose every statement succeeds, or fails as a refused connection while `down`. */
function fakeDatabase() {
  const state = { down: false, statements: 0 };
  const sql = (() => {
    state.statements += 1;
    return state.down ? Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })) : Promise.resolve([]);
  }) as unknown as postgres.Sql;
  return { sql, state };
}

describe("Availability heartbeat", () => {
  it("pings every interval while up, so an idle server notices the database going and coming back", async () => {
    const clock = new FakeClock();
    const { sql, state } = fakeDatabase();
    const availability = new Availability(sql, captureLog().log, { clock, probeMinMs: 250, probeMaxMs: 1000 });
    const seen: boolean[] = [];
    availability.onAvailability((up) => seen.push(up));
    availability.startHeartbeat(10_000);
    await clock.advanceAsync(30_000);
    expect([state.statements, seen]).toEqual([3, []]);

    state.down = true;
    await clock.advanceAsync(10_000);
    await settle();
    expect([availability.up, seen]).toEqual([false, [false]]);
    state.down = false;
    await clock.advanceAsync(1000);
    await settle();
    expect([availability.up, seen]).toEqual([true, [false, true]]);

    availability.close();
    const before = state.statements;
    await clock.advanceAsync(60_000);
    expect(state.statements).toBe(before);
  });
});
