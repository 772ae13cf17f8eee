import { afterEach, describe, expect, it, vi } from "vitest";
import { DUPLICATE_SIGNAL_MS, settlesWithin, SignalPolicy, STOP_BOUNDS } from "../../src/ops/stop.js";

describe("SignalPolicy", () => {
  let now = 1_000_000;
  const policy = () => new SignalPolicy(() => now);

  it("the first SIGTERM or SIGINT stops; the same signal again within the window is a duplicate", () => {
    for (const first of ["SIGTERM", "SIGINT"] as const) {
      const p = policy();
      expect(p.decide(first)).toBe("stop");
      now += DUPLICATE_SIGNAL_MS - 1;
      expect(p.decide(first)).toBe("duplicate");
      expect(p.stopping).toBe(true);
    }
  });

  it("a later SIGTERM during a stop never cuts it short; a later SIGINT forces the exit", () => {
    const p = policy();
    expect(p.decide("SIGTERM")).toBe("stop");
    now += DUPLICATE_SIGNAL_MS;
    expect(p.decide("SIGTERM")).toBe("already_stopping");
    expect(p.decide("SIGINT")).toBe("force");
  });

  it("the window runs from the signal that counted, so repeated Ctrl-C forces after a second", () => {
    const p = policy();
    expect(p.decide("SIGINT")).toBe("stop");
    for (let i = 0; i < 3; i++) {
      now += DUPLICATE_SIGNAL_MS / 4;
      expect(p.decide("SIGINT")).toBe("duplicate");
    }
    now += DUPLICATE_SIGNAL_MS / 4;
    expect(p.decide("SIGINT")).toBe("force");
  });

  it("SIGHUP reloads, once per window, and not while stopping", () => {
    const p = policy();
    expect(p.decide("SIGHUP")).toBe("reload");
    expect(p.decide("SIGHUP")).toBe("duplicate");
    now += DUPLICATE_SIGNAL_MS;
    expect(p.decide("SIGHUP")).toBe("reload");
    expect(p.decide("SIGTERM")).toBe("stop");
    now += DUPLICATE_SIGNAL_MS;
    expect(p.decide("SIGHUP")).toBe("already_stopping");
  });
});

describe("settlesWithin", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("is true for work that settles in time, resolved or rejected, and false for work that does not", async () => {
    vi.useFakeTimers();
    expect(await settlesWithin(Promise.resolve(), 100)).toBe(true);
    expect(await settlesWithin(Promise.reject(new Error("x")), 100)).toBe(true);
    const hanging = settlesWithin(new Promise(() => undefined), 100);
    await vi.advanceTimersByTimeAsync(100);
    expect(await hanging).toBe(false);
  });

  it("the steps' bounds fit inside the whole stop's", () => {
    expect(STOP_BOUNDS.callsMs + STOP_BOUNDS.snapshotMs + STOP_BOUNDS.closeMs).toBeLessThan(STOP_BOUNDS.totalMs);
  });
});
