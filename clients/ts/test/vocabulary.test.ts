// Runs test/vectors/vocabulary.json: the names this client gives a lease's fields, outcomes and errors.
import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { durationFromMs } from "../src/duration.js";
import { ErrorDetailSchema, ErrorReason } from "../src/gen/keymesh/v1/common_pb.js";
import { AcquireResponseSchema } from "../src/gen/keymesh/v1/pool_pb.js";
import { keymeshError, Lease, OUTCOME_KINDS } from "../src/index.js";

interface ErrorCase {
  name: string;
  status: { code: string; message: string; detail?: { reason: string; retry_after_ms?: number; field?: string } };
  expect: { code: string; reason: string; retry_after_ms: number | null; field: string };
}
const vocabulary: { lease_fields: string[]; outcomes: string[]; errors: ErrorCase[] } = JSON.parse(
  readFileSync(new URL("../../../test/vectors/vocabulary.json", import.meta.url), "utf8"),
);
const camel = (snake: string) => snake.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
const codeOf = (name: string) => Code[camel(name.toLowerCase()).replace(/^./, (c) => c.toUpperCase()) as keyof typeof Code];

describe("vocabulary.json", () => {
  it("names a lease's fields alike", () => {
    const lease = new Lease(
      create(AcquireResponseSchema, { leaseId: "l1", pool: "p", key: "sk", keyId: "k", keyLabel: "K", keyMetadata: { a: "b" }, expiresAt: timestampFromMs(0), ttl: durationFromMs(1_000) }),
    );
    for (const field of vocabulary.lease_fields) expect(lease, field).toHaveProperty(camel(field));
  });
  it("names the outcomes alike", () => expect([...OUTCOME_KINDS]).toEqual(vocabulary.outcomes));
  it.each(vocabulary.errors.map((c) => [c.name, c] as const))("error: %s", (_name, c) => {
    const d = c.status.detail;
    const details = d
      ? [{ desc: ErrorDetailSchema, value: create(ErrorDetailSchema, { reason: ErrorReason[d.reason as keyof typeof ErrorReason], field: d.field ?? "", retryAfter: d.retry_after_ms === undefined ? undefined : durationFromMs(d.retry_after_ms) }) }]
      : [];
    const info = keymeshError(new ConnectError(c.status.message, codeOf(c.status.code), undefined, details));
    expect(info && { code: info.code, reason: info.reason, retry_after_ms: info.retryAfterMs, field: info.field }).toEqual(c.expect);
  });
});
