import { describe, expect, it } from "vitest";
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AcquireResponseSchema } from "../../src/gen/keymesh/v1/pool_pb.js";
import { encodeAcquireResponse, type AcquireReply } from "../../src/rpc/acquire-wire.js";

function reply(overrides: Partial<AcquireReply> = {}): AcquireReply {
  return {
    leaseId: "lk1.WzEsMiwzLDQsImEiLCJiIl0.AAAAAAAAAAAAAAAAAAAAAA",
    key: "sk-test-0123456789",
    keyId: "k1",
    keyLabel: "primary",
    keyMetadata: { region: "eu", tier: "" },
    expiresAt: timestampFromMs(1_790_000_000_123),
    ttl: durationFromMs(30_000),
    renewInterval: durationFromMs(10_000),
    pool: "openai",
    ...overrides,
  };
}

/** The message protobuf-es decodes from the hand-written bytes equals the one it builds from the same reply. */
function expectSameMessage(r: AcquireReply): void {
  const bytes = encodeAcquireResponse(r);
  expect(equals(AcquireResponseSchema, fromBinary(AcquireResponseSchema, bytes), create(AcquireResponseSchema, r))).toBe(true);
}

// A tiny deterministic generator, so a failure names its seed.
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const alphabet = ["a", "Z", "0", "-", "_", ".", "é", "日", "😀", "\u0000", " "];

function text(next: () => number, max: number): string {
  const n = Math.floor(next() * (max + 1));
  let out = "";
  for (let i = 0; i < n; i++) out += alphabet[Math.floor(next() * alphabet.length)];
  return out;
}

describe("encodeAcquireResponse", () => {
  it("writes the schema's fields: a field added to AcquireResponse must be added to the encoder", () => {
    expect(AcquireResponseSchema.fields.map((f) => `${f.number}:${f.localName}:${f.fieldKind}`)).toEqual([
      "1:leaseId:scalar",
      "2:key:scalar",
      "3:keyId:scalar",
      "4:keyLabel:scalar",
      "5:keyMetadata:map",
      "6:expiresAt:message",
      "7:ttl:message",
      "8:renewInterval:message",
      "9:pool:scalar",
    ]);
  });

  it("encodes a typical grant exactly as protobuf-es does", () => {
    const r = reply();
    expect(Buffer.from(encodeAcquireResponse(r))).toEqual(Buffer.from(toBinary(AcquireResponseSchema, create(AcquireResponseSchema, r))));
  });

  it("keeps zero durations and timestamps present, and omits empty strings", () => {
    const r = reply({ leaseId: "", keyLabel: "", keyMetadata: {}, ttl: durationFromMs(0), renewInterval: durationFromMs(999), expiresAt: timestampFromMs(0) });
    const decoded = fromBinary(AcquireResponseSchema, encodeAcquireResponse(r));
    expect(decoded.ttl).toBeDefined();
    expect(decoded.expiresAt).toBeDefined();
    expect(decoded.renewInterval?.nanos).toBe(999_000_000);
    expectSameMessage(r);
  });

  it("round-trips long and multi-byte strings, large values and many metadata entries", () => {
    for (let seed = 1; seed <= 300; seed++) {
      const next = rng(seed);
      const metadata: Record<string, string> = {};
      const entries = Math.floor(next() * 6);
      for (let i = 0; i < entries; i++) metadata[`${text(next, 8)}${i}`] = text(next, next() < 0.1 ? 300 : 12);
      const r = reply({
        leaseId: text(next, next() < 0.1 ? 200 : 40),
        key: text(next, 80),
        keyId: text(next, 10),
        keyLabel: text(next, 10),
        keyMetadata: metadata,
        expiresAt: timestampFromMs(Math.floor(next() * 2 ** 52)),
        ttl: durationFromMs(Math.floor(next() * 10 ** 9)),
        renewInterval: durationFromMs(Math.floor(next() * 10 ** 6)),
        pool: text(next, 20),
      });
      try {
        expectSameMessage(r);
      } catch (e) {
        throw new Error(`seed ${seed}: ${(e as Error).message}`);
      }
    }
  });

  it("falls back to protobuf-es for values its varints do not cover (negative seconds)", () => {
    const r = reply({ expiresAt: timestampFromMs(-1500) });
    expect(Number(r.expiresAt.seconds)).toBeLessThan(0);
    expectSameMessage(r);
  });
});
