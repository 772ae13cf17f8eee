import { describe, expect, it } from "vitest";
import { PoolEngine } from "../../src/domain/engine.js";
import { FakeClock } from "../fake-clock.js";
import { addKeys, addPool, codeOf, grantNow, harness, req, thrown } from "./helpers.js";

describe("leases", () => {
  it("clamps the ttl to the pool's [min, max] and recommends renewing at ttl/3", () => {
    const { engine, clock } = harness();
    addPool(engine, { minTtlMs: 2_000, maxTtlMs: 90_000, defaultTtlMs: 30_000 });
    addKeys(engine, "p", ["a"]);
    const def = grantNow(engine, req());
    expect(def.ttlMs).toBe(30_000);
    expect(def.expiresAt).toBe(clock.now() + 30_000);
    expect(def.renewIntervalMs).toBe(10_000);
    expect(grantNow(engine, req("p", { ttlMs: 10 })).ttlMs).toBe(2_000);
    const big = grantNow(engine, req("p", { ttlMs: 10_000_000 }));
    expect(big.ttlMs).toBe(90_000);
    expect(big.renewIntervalMs).toBe(30_000);
    expect(def.secret).toBe("sk-a");
  });

  it("ends a lease exactly once: a second release is lease_released and frees no second slot", () => {
    const { engine, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const g = grantNow(engine, req());
    engine.release(g.leaseId, {});
    const g2 = grantNow(engine, req());
    expect(codeOf(() => engine.release(g.leaseId, {}))).toBe("lease_released");
    expect(codeOf(() => engine.markFailed(g.leaseId, { httpStatus: 500, message: "" }))).toBe("lease_released");
    expect(codeOf(() => engine.markRateLimited(g.leaseId, {}))).toBe("lease_released");
    expect(codeOf(() => engine.renew(g.leaseId))).toBe("lease_released");
    expect(engine.stats("p").keys[0]!.activeLeases).toBe(1);
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    engine.release(g2.leaseId, {});
    expect(events.filter((e) => e.type === "lease_ended" && e.leaseId === g.leaseId)).toHaveLength(1);
  });

  it("lease_ended carries the reported outcome, typed, beside its reason in words", () => {
    const { engine, clock, events } = harness();
    addPool(engine, { failureThreshold: 100 });
    addKeys(engine, "p", ["a"]);
    engine.release(grantNow(engine, req()).leaseId, {});
    engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 502, message: "" });
    engine.markFailed(grantNow(engine, req()).leaseId, { reason: "client_error", httpStatus: 400, message: "" });
    engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 429, message: "" });
    clock.advance(60_000);
    engine.markRateLimited(grantNow(engine, req()).leaseId, {});
    clock.advance(600_000);
    engine.revokeLease(grantNow(engine, req()).leaseId, "operator");
    grantNow(engine, req("p", { ttlMs: 1_000 }));
    clock.advance(1_000);
    const ended = events.filter((e) => e.type === "lease_ended").map((e) => [e.outcome, e.reason]);
    expect(ended).toEqual([
      ["success", "released"],
      ["transient", "failed: transient"],
      ["client_error", "failed: client_error"],
      ["rate_limited", "rate_limited"],
      ["rate_limited", "rate_limited"],
      [undefined, "revoked"],
      [undefined, "expired"],
    ]);
  });

  it("fences: a stale id never touches the newer lease on the same key", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const old = grantNow(engine, req("p", { ttlMs: 5_000 }));
    clock.advance(5_000);
    const fresh = grantNow(engine, req("p", { ttlMs: 5_000 }));
    expect(fresh.keyId).toBe(old.keyId);
    expect(fresh.leaseId).not.toBe(old.leaseId);
    expect(codeOf(() => engine.release(old.leaseId, {}))).toBe("lease_expired");
    expect(codeOf(() => engine.renew(old.leaseId))).toBe("lease_expired");
    expect(codeOf(() => engine.revokeLease(old.leaseId, "x"))).toBe("lease_expired");
    expect(engine.listLeases("p").map((l) => l.leaseId)).toEqual([fresh.leaseId]);
    expect(engine.renew(fresh.leaseId).expiresAt).toBe(clock.now() + 5_000);
  });

  it("reclaims an expired lease at its deadline with a single armed timer", () => {
    const { engine, clock, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const leases = [grantNow(engine, req("p", { ttlMs: 3_000 }))];
    addKeys(engine, "p", ["b", "c"]);
    for (let i = 0; i < 50; i++) leases.push(grantNow(engine, req("p", { ttlMs: 4_000 + i })));
    expect(clock.pending).toBe(1);
    clock.advance(2_999);
    expect(engine.stats("p").keys[0]!.activeLeases).toBe(1);
    clock.advance(1);
    expect(events.some((e) => e.type === "lease_expired" && e.leaseId === leases[0]!.leaseId)).toBe(true);
    expect(engine.stats("p").keys[0]!.activeLeases).toBe(0);
    expect(events.filter((e) => e.type === "lease_expired")).toHaveLength(1);
    clock.advance(2_000);
    expect(engine.listLeases("p")).toHaveLength(0);
    expect(clock.pending).toBe(0);
  });

  it("renewal moves the deadline; renewing an ended lease is a definite error", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req("p", { ttlMs: 3_000 }));
    clock.advance(2_000);
    const r = engine.renew(g.leaseId, 6_000);
    expect(r).toEqual({ leaseId: g.leaseId, expiresAt: clock.now() + 6_000, ttlMs: 6_000, renewIntervalMs: 2_000 });
    clock.advance(5_999);
    expect(engine.renew(g.leaseId).ttlMs).toBe(6_000);
    clock.advance(6_000);
    expect(codeOf(() => engine.renew(g.leaseId))).toBe("lease_expired");
  });

  it("answers malformed ids with lease_id_malformed and forged ones with lease_unknown", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    expect(codeOf(() => engine.release("nope", {}))).toBe("lease_id_malformed");
    expect(codeOf(() => engine.release("lk1.!!.AAAAAAAAAAAAAAAAAAAAAA", {}))).toBe("lease_id_malformed");
    const [, payload, mac] = g.leaseId.split(".");
    const forgedMac = `${mac!.slice(0, 10)}${mac![10] === "A" ? "B" : "A"}${mac!.slice(11)}`;
    expect(codeOf(() => engine.release(`lk1.${payload}.${forgedMac}`, {}))).toBe("lease_unknown");
    const other = harness({ secret: new TextEncoder().encode("another-secret") });
    addPool(other.engine);
    addKeys(other.engine, "p", ["a"]);
    const foreign = grantNow(other.engine, req());
    expect(codeOf(() => engine.renew(foreign.leaseId))).toBe("lease_unknown");
    expect(thrown(() => engine.renew("x")).details.field).toBe("lease_id");
  });

  it("revocation pushes to watchers once and later calls answer lease_revoked", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    const seen: string[] = [];
    const unwatchOther = engine.watchLease(g.leaseId, () => seen.push("other"));
    engine.watchLease(g.leaseId, (reason, message) => seen.push(`${reason}:${message}`));
    unwatchOther();
    engine.revokeLease(g.leaseId, "operator said so");
    expect(seen).toEqual(["revoked:operator said so"]);
    expect(codeOf(() => engine.release(g.leaseId, {}))).toBe("lease_revoked");
    expect(codeOf(() => engine.watchLease(g.leaseId, () => {}))).toBe("lease_revoked");
  });

  it("a late report on an expired lease updates health once but frees nothing", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const g = grantNow(engine, req("p", { ttlMs: 1_000 }));
    clock.advance(1_000);
    const g2 = grantNow(engine, req("p", { ttlMs: 10_000 }));
    expect(codeOf(() => engine.markFailed(g.leaseId, { reason: "transient", httpStatus: 500, message: "" }))).toBe("lease_expired");
    expect(codeOf(() => engine.markFailed(g.leaseId, { reason: "transient", httpStatus: 500, message: "" }))).toBe("lease_expired");
    const s = engine.stats("p").keys[0]!;
    expect(s.consecutiveFailures).toBe(1);
    expect(s.activeLeases).toBe(1);
    engine.release(g2.leaseId, {});
  });

  it("remembers why each recent lease ended past its TTL, then answers from the token alone", () => {
    const clock = new FakeClock();
    const engine = new PoolEngine({ clock, leaseSecret: new Uint8Array(32), epoch: 1, endedReasons: 8 });
    addPool(engine, { defaultTtlMs: 10_000 });
    addKeys(engine, "p", ["a"]);
    const released = grantNow(engine, req());
    const revoked = grantNow(engine, req());
    const expired = grantNow(engine, req("p", { ttlMs: 1_000 }));
    engine.release(released.leaseId, {});
    engine.revokeLease(revoked.leaseId, "operator");
    clock.advance(60_000);
    engine.acquire(req());
    const codes = () => [released, revoked, expired].map((g) => codeOf(() => engine.renew(g.leaseId)));
    expect(codes()).toEqual(["lease_released", "lease_revoked", "lease_expired"]);
    // Eight grants later their reasons are forgotten; the token still says the lease is over, and past its TTL.
    for (let i = 0; i < 8; i++) engine.release(grantNow(engine, req()).leaseId, {});
    expect(codes()).toEqual(["lease_expired", "lease_expired", "lease_expired"]);
  });

  it("rejects bad acquire input naming the field", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const field = (fn: () => unknown) => thrown(fn).details.field;
    expect(field(() => engine.acquire(req("p", { ttlMs: -1 })))).toBe("lease_ttl");
    expect(field(() => engine.acquire(req("p", { waitTimeoutMs: -5 })))).toBe("wait_timeout");
    expect(field(() => engine.acquire(req("p", { estimatedTokens: -1 })))).toBe("estimated_tokens");
    expect(codeOf(() => engine.acquire(req("nope")))).toBe("pool_not_found");
  });
});
