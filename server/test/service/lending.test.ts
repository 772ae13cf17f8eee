// Lending and Admin as classes with fakes: which grants are durable before the reply, what the journal is
// given, the drained key's removal, and write-through that leaves nothing half-applied.
import { describe, expect, it } from "vitest";
import type { Grant } from "../../src/domain/types.js";
import { StoreRefused, StoreUnavailable } from "../../src/store/errors.js";
import { services, settle } from "./harness.js";

const input = (pool: string, holder = "worker-1") => ({ pool, waitTimeoutMs: 0, holder, estimatedTokens: 0, excludeKeyIds: [] });

async function withKeys(s: ReturnType<typeof services>, keys: Array<{ id: string; maxConcurrency?: number }>) {
  await s.admin.createPool("ops", { name: "p" });
  for (const k of keys) await s.admin.addKey("ops", { pool: "p", id: k.id, secret: `sk-${k.id}-000000000000`, maxConcurrency: k.maxConcurrency });
}

describe("Lending", () => {
  it("answers a grant of a limited key only once the journal made it durable", async () => {
    const s = services();
    await withKeys(s, [{ id: "limited", maxConcurrency: 1 }]);
    s.journal.hold = true;
    const granted = s.lending.acquire(input("p"));
    expect(granted).toBeInstanceOf(Promise);
    let answered = false;
    void (granted as Promise<Grant>).then(() => (answered = true));
    await settle();
    expect(answered).toBe(false);
    expect(s.journal.durable).toHaveLength(1);
    s.journal.release();
    await settle();
    expect(answered).toBe(true);
    expect(s.journal.behind).toEqual([]);
  });

  it("answers a grant of an unlimited key synchronously and journals it behind", async () => {
    const s = services();
    await withKeys(s, [{ id: "open" }]);
    s.clock.advance(1234);
    const grant = s.lending.acquire(input("p", "holder-a")) as Grant;
    expect(grant.keyId).toBe("open");
    expect(s.journal.durable).toEqual([]);
    expect(s.journal.behind).toEqual([
      {
        leaseId: grant.leaseId,
        pool: "p",
        keyId: "open",
        holder: "holder-a",
        acquiredAt: s.clock.now(),
        expiresAt: grant.expiresAt,
        ttlMs: grant.ttlMs,
        epoch: 7,
        seq: 1,
      },
    ]);
  });

  it("journals a waiter's grant of a limited key before answering it", async () => {
    const s = services();
    await withKeys(s, [{ id: "only", maxConcurrency: 1 }]);
    const held = (await s.lending.acquire(input("p"))) as Grant;
    const waiting = s.lending.acquire({ ...input("p"), waitTimeoutMs: 5000 }) as Promise<Grant>;
    s.journal.hold = true;
    s.lending.release(held.leaseId, {});
    let answered: Grant | undefined;
    void waiting.then((g) => (answered = g));
    await settle();
    expect([answered, s.journal.durable.length]).toEqual([undefined, 2]);
    s.journal.release();
    await settle();
    expect(answered?.leaseId).toBe(s.journal.durable[1]!.leaseId);
  });

  it("journals every end of a lease: release, outcome reports, expiry and revocation", async () => {
    const s = services();
    await withKeys(s, [{ id: "a" }, { id: "b" }]);
    const grants = Array.from({ length: 5 }, () => s.lending.acquire({ ...input("p"), ttlMs: 60_000 }) as Grant);
    const [released, failed, limited, expiring, revoked] = grants;
    s.lending.release(released!.leaseId, {});
    s.lending.markFailed(failed!.leaseId, { httpStatus: 500, message: "" });
    s.lending.markRateLimited(limited!.leaseId, {});
    s.lending.renew(expiring!.leaseId, 1000);
    s.engine.revokeLease(revoked!.leaseId, "operator");
    s.clock.advance(1001);
    const ended = (g: Grant) => ({ leaseId: g.leaseId, pool: g.record.pool, epoch: g.epoch, seq: g.seq });
    expect(s.journal.ends).toEqual([ended(released!), ended(failed!), ended(limited!), ended(revoked!), ended(expiring!)]);
  });

  it("answers an end only once the journal made it durable, and an admin revocation too", async () => {
    const s = services();
    await withKeys(s, [{ id: "a", maxConcurrency: 2 }]);
    const first = (await s.lending.acquire(input("p"))) as Grant;
    const second = (await s.lending.acquire(input("p"))) as Grant;
    s.journal.hold = true;
    const answers: string[] = [];
    void s.pool.release({ leaseId: first.leaseId }).then(() => answers.push("release"));
    void s.adminClient.revokeLease({ leaseId: second.leaseId }).then(() => answers.push("revoke"));
    await settle();
    expect(answers).toEqual([]);
    // The slots are free at once: only the answers wait.
    expect(s.engine.listLeases("p")).toEqual([]);
    s.journal.release();
    await settle();
    expect(answers.sort()).toEqual(["release", "revoke"]);
  });

  it("answers a grant whose record the database refused with that error, and frees its slot", async () => {
    const s = services();
    await withKeys(s, [{ id: "one", maxConcurrency: 1 }]);
    s.journal.refuse = new StoreRefused("the database refused this lease's record");
    await expect(s.lending.acquire(input("p"))).rejects.toBeInstanceOf(StoreRefused);
    expect(s.engine.listLeases("p")).toEqual([]);
    const next = (await s.lending.acquire(input("p"))) as Grant;
    expect(next.keyId).toBe("one");
    // Over the wire it is a shaped INVALID_ARGUMENT, never INTERNAL.
    await s.lending.release(next.leaseId, {});
    s.journal.refuse = new StoreRefused("the database refused this lease's record");
    await expect(s.pool.acquire({ pool: "p", holder: "h" })).rejects.toMatchObject({ code: 3 });
    expect(s.internal).toEqual([]);
  });

  it("deletes a drained key from the config store when its last lease ends", async () => {
    const s = services();
    await withKeys(s, [{ id: "k", maxConcurrency: 2 }]);
    const lease = (await s.lending.acquire(input("p"))) as Grant;
    await s.admin.removeKey("ops", "p", "k", true);
    expect(s.config.writes.map((w) => w.op)).not.toContain("deleteKey");
    s.lending.release(lease.leaseId, {});
    await settle();
    expect(s.config.writes.at(-1)).toEqual({ op: "deleteKey", value: "p/k" });
  });
});

describe("Admin", () => {
  it("leaves the engine as it was when the store refuses the write", async () => {
    const s = services();
    await withKeys(s, [{ id: "k" }]);
    s.config.failNext = new StoreUnavailable("database unavailable");
    await expect(s.admin.updatePool("ops", { name: "p", description: "changed" })).rejects.toBeInstanceOf(StoreUnavailable);
    expect(s.engine.getPool("p").description).toBe("");
    s.config.failNext = new StoreUnavailable("database unavailable");
    await expect(s.admin.disableKey("ops", "p", "k", false, "rotation")).rejects.toBeInstanceOf(StoreUnavailable);
    expect(s.engine.getKey("p", "k").state).toBe("enabled");
  });
});
