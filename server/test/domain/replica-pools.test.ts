// The engine's part in replicas: a pool this process stops serving keeps its state but acts on no
// deadline until it serves it again, and a pool dropped from memory leaves no trace in the next snapshot.
import { describe, expect, it } from "vitest";
import { PoolEngine } from "../../src/domain/engine.js";
import type { DomainEvent } from "../../src/domain/types.js";
import { FakeClock } from "../fake-clock.js";
import { addKeys, addPool, grantNow, req, settle, flush } from "./helpers.js";

function servedEngine() {
  const clock = new FakeClock();
  const served = new Set<string>(["p"]);
  const events: DomainEvent[] = [];
  const engine = new PoolEngine({ clock, leaseSecret: new TextEncoder().encode("secret"), epoch: 1, onEvent: (e) => events.push(e), serves: (p) => served.has(p) });
  addPool(engine);
  addKeys(engine, "p", ["k"], { maxConcurrency: 1 });
  return { clock, served, events, engine };
}

describe("pools this replica stops serving", () => {
  it("expires nothing while not served, however long, and expires on time once served again", async () => {
    const { clock, served, events, engine } = servedEngine();
    const lease = grantNow(engine, req("p", { ttlMs: 10_000 }));
    served.delete("p");
    engine.suspendPool("p", 250);
    clock.advance(60_000);
    expect(events.filter((e) => e.type === "lease_expired")).toEqual([]);
    expect(engine.isLive(lease.leaseId)).toBe(true);
    served.add("p");
    engine.resumePool("p");
    clock.advance(0);
    await flush();
    expect(events.filter((e) => e.type === "lease_expired").map((e) => e.leaseId)).toEqual([lease.leaseId]);
  });

  it("answers its waiters pool_not_served with a retry-after when it stops serving", () => {
    const { engine } = servedEngine();
    grantNow(engine, req("p"));
    const waiting = settle(engine.acquire(req("p", { waitTimeoutMs: 5000 })) as Promise<never>);
    engine.suspendPool("p", 250);
    return flush().then(() => {
      expect(waiting.error?.code).toBe("pool_not_served");
      expect(waiting.error?.details.retryAfterMs).toBe(250);
    });
  });

  it("drops a pool from memory with no event, no expiry and nothing in the next export", () => {
    const { clock, events, engine } = servedEngine();
    engine.exportRuntime();
    const lease = grantNow(engine, req("p", { ttlMs: 10_000 }));
    events.length = 0;
    engine.unloadPool("p", 250);
    clock.advance(60_000);
    expect(events).toEqual([]);
    expect(engine.hasPool("p")).toBe(false);
    expect(engine.isLive(lease.leaseId)).toBe(false);
    const changes = engine.exportChanges()!;
    expect({ keys: [...changes.keys], leases: changes.leases, removed: changes.removedKeys }).toEqual({ keys: [], leases: [], removed: [] });
  });

  it("treats a lease id of a later epoch it never loaded as unknown, and one it loaded as another replica's", () => {
    const clock = new FakeClock();
    const secret = new TextEncoder().encode("secret");
    const other = new PoolEngine({ clock, leaseSecret: secret, epoch: 7 });
    addPool(other);
    addKeys(other, "p", ["k"]);
    const theirs = grantNow(other, req("p", { ttlMs: 60_000 }));
    const mine = new PoolEngine({ clock, leaseSecret: secret, epoch: 3 });
    addPool(mine);
    addKeys(mine, "p", ["k"]);
    expect(() => mine.renew(theirs.leaseId)).toThrow(/not granted/);
    mine.load([], [], undefined, { 7: 0 });
    expect(mine.renew(theirs.leaseId).leaseId).toBe(theirs.leaseId);
  });
});
