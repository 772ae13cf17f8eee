// The audit trail through the admin API in memory: who made each change (the token's name, never the
// token), before and after with the secret only as its hint, the log line, ADMIN_CHANGE on WatchEvents, a
// refused write that records nothing, and ListAuditEntries' filters and pages.
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { toJsonString } from "@bufbuild/protobuf";
import { AuditEntrySchema, EventType, type Event } from "../../src/gen/keymesh/v1/admin_pb.js";
import { createAuthorizer } from "../../src/ops/auth.js";
import { StoreUnavailable } from "../../src/store/errors.js";
import { services, settle } from "./harness.js";

const OPS_TOKEN = "ops-token-0123456789abcdef";
const SECRET = "sk-audit-secret-0000000000001234";
const ROTATED = "sk-audit-rotated-000000000005678";
const auth = { headers: { authorization: `Bearer ${OPS_TOKEN}` } };

function withTokens() {
  return services({ authorizer: createAuthorizer([{ token: OPS_TOKEN, name: "alice (ops)", scopes: ["admin"], origin: "test" }]) });
}

describe("audit trail", () => {
  it("records each change with the token's name, the object before and after, and the process", async () => {
    const s = withTokens();
    await s.adminClient.createPool({ pool: { name: "p", description: "first" } }, auth);
    await s.adminClient.addKey({ pool: "p", key: { id: "k", label: "old" }, secret: SECRET }, auth);
    await s.adminClient.updateKey({ key: { pool: "p", id: "k", label: "new" }, updateMask: { paths: ["label", "secret"] }, secret: ROTATED }, auth);
    await s.adminClient.disableKey({ pool: "p", keyId: "k", reason: "rotation" }, auth);
    s.clock.advance(1000);
    await s.adminClient.enableKey({ pool: "p", keyId: "k" }, auth);
    await s.adminClient.removeKey({ pool: "p", keyId: "k" }, auth);
    await s.adminClient.deletePool({ name: "p" }, auth);

    const entries = s.audit.entries;
    expect(entries.map((e) => [e.action, e.actor, e.pool, e.keyId])).toEqual([
      ["create_pool", "alice (ops)", "p", undefined],
      ["add_key", "alice (ops)", "p", "k"],
      ["update_key", "alice (ops)", "p", "k"],
      ["disable_key", "alice (ops)", "p", "k"],
      ["enable_key", "alice (ops)", "p", "k"],
      ["remove_key", "alice (ops)", "p", "k"],
      ["delete_pool", "alice (ops)", "p", undefined],
    ]);
    expect(entries.every((e) => e.replica === "test-host:1")).toBe(true);
    expect(entries[0]).toMatchObject({ after: { name: "p", description: "first", strategy: "round_robin" } });
    expect(entries[0]!.before).toBeUndefined();
    expect(entries[2]).toMatchObject({ before: { label: "old", secretHint: "sk-…1234" }, after: { label: "new", secretHint: "sk-…5678" } });
    expect(entries[3]).toMatchObject({ before: { disabled: false }, after: { disabled: true, disabledReason: "rotation" }, reason: "rotation" });
    expect(entries[4]!.at - entries[3]!.at).toBe(1000);
    expect(entries[6]).toMatchObject({ before: { name: "p", keyCount: 0 } });
    expect(entries[6]!.after).toBeUndefined();

    const everything = JSON.stringify([entries, s.logged]);
    for (const secret of [SECRET, ROTATED, OPS_TOKEN]) expect(everything).not.toContain(secret);
    expect(s.logged).toHaveLength(entries.length);
    expect(s.logged[2]).toEqual({ audit: entries[2] });
  });

  it("names the caller anonymous when auth is off, and records a revocation with the lease's holder", async () => {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p" } });
    await s.adminClient.addKey({ pool: "p", key: { id: "k" }, secret: SECRET });
    const { leaseId } = await s.pool.acquire({ pool: "p", holder: "worker-7" });
    await s.adminClient.revokeLease({ leaseId, reason: "stuck" });
    expect(s.audit.entries.at(-1)).toMatchObject({ action: "revoke_lease", actor: "anonymous", pool: "p", keyId: "k", leaseId, reason: "stuck", before: { holder: "worker-7" } });
  });

  it("records nothing and changes nothing when the store refuses the write", async () => {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p" } });
    s.config.failNext = new StoreUnavailable("database unavailable");
    await expect(s.adminClient.updatePool({ pool: { name: "p", description: "x" }, updateMask: { paths: ["description"] } })).rejects.toThrow();
    expect(s.audit.entries.map((e) => e.action)).toEqual(["create_pool"]);
    expect(s.logged).toHaveLength(1);
  });

  it("streams each recorded change on WatchEvents as ADMIN_CHANGE, pool filter applied", async () => {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p" } });
    await s.adminClient.createPool({ pool: { name: "q" } });
    const abort = new AbortController();
    const seen: Event[] = [];
    const watching = (async () => {
      for await (const res of s.adminClient.watchEvents({ pool: "p" }, { signal: abort.signal })) seen.push(res.event!);
    })().catch(() => undefined);
    await settle();
    await s.adminClient.addKey({ pool: "q", key: { id: "other" }, secret: SECRET });
    await s.adminClient.addKey({ pool: "p", key: { id: "k" }, secret: SECRET });
    await settle();
    abort.abort();
    await watching;
    const changes = seen.filter((e) => e.type === EventType.ADMIN_CHANGE);
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({ pool: "p", keyId: "k", reason: "add_key" });
    expect(changes[0]!.adminChange).toMatchObject({ action: "add_key", actor: "anonymous", pool: "p", keyId: "k", after: { id: "k", secretHint: "sk-…1234" } });
    expect(toJsonString(AuditEntrySchema, changes[0]!.adminChange!)).not.toContain(SECRET);
  });

  it("lists newest first, by pool and since, a page at a time", async () => {
    const s = services();
    for (const name of ["a", "b", "c", "d"]) {
      await s.adminClient.createPool({ pool: { name } });
      s.clock.advance(1000);
    }
    const all = await s.adminClient.listAuditEntries({});
    expect(all.entries.map((e) => e.pool)).toEqual(["d", "c", "b", "a"]);
    expect((await s.adminClient.listAuditEntries({ pool: "b" })).entries.map((e) => e.pool)).toEqual(["b"]);
    const since = timestampFromMs(timestampMs(all.entries[1]!.time!));
    expect((await s.adminClient.listAuditEntries({ since })).entries.map((e) => e.pool)).toEqual(["d", "c"]);

    const first = await s.adminClient.listAuditEntries({ pageSize: 3 });
    expect(first.entries.map((e) => e.pool)).toEqual(["d", "c", "b"]);
    const second = await s.adminClient.listAuditEntries({ pageSize: 3, pageToken: first.nextPageToken });
    expect([second.entries.map((e) => e.pool), second.nextPageToken]).toEqual([["a"], ""]);
    await expect(s.adminClient.listAuditEntries({ pool: "a", pageToken: first.nextPageToken })).rejects.toThrow(/other filters/);
    await expect(s.adminClient.listAuditEntries({ pageSize: -1 })).rejects.toThrow(/page_size/);
    const forged = Buffer.from(JSON.stringify({ s: ["", ""], a: ["1e9"] })).toString("base64url");
    await expect(s.adminClient.listAuditEntries({ pageToken: forged })).rejects.toThrow(/page_token: is not a token this server issued/);
  });
});
