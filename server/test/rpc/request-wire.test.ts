import { describe, expect, it } from "vitest";
import { create, equals, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { AcquireRequestSchema, ReleaseRequestSchema } from "../../src/gen/keymesh/v1/pool_pb.js";
import {
  decodeAcquireRequest,
  decodeReleaseRequest,
  readAcquireRequest,
  readReleaseRequest,
} from "../../src/rpc/request-wire.js";

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const ascii = ["a", "Z", "0", "-", "_", ".", " ", "~"];
const other = ["é", "日", "😀"];

function text(next: () => number, max: number, nonAscii: boolean): string {
  const n = Math.floor(next() * (max + 1));
  let out = "";
  for (let i = 0; i < n; i++) out += nonAscii && next() < 0.2 ? other[Math.floor(next() * other.length)] : ascii[Math.floor(next() * ascii.length)];
  return out;
}

function int64(next: () => number): bigint {
  const r = next();
  if (r < 0.5) return BigInt(Math.floor(next() * 100_000));
  if (r < 0.7) return 0n;
  if (r < 0.85) return BigInt(Math.floor(next() * 2 ** 53));
  return -BigInt(Math.floor(next() * 1000) + 1);
}

function randomAcquire(next: () => number, nonAscii: boolean) {
  return {
    pool: text(next, 20, nonAscii),
    holder: text(next, 30, nonAscii),
    waitTimeout: next() < 0.5 ? durationFromMs(Math.floor(next() * 100_000)) : undefined,
    leaseTtl: next() < 0.5 ? durationFromMs(Math.floor(next() * 10 ** 9)) : undefined,
    estimatedTokens: int64(next),
    excludeKeyIds: Array.from({ length: Math.floor(next() * 4) }, () => text(next, 8, nonAscii)),
    affinity: next() < 0.5 ? text(next, 24, nonAscii) : "",
  };
}

function randomRelease(next: () => number, nonAscii: boolean) {
  return {
    leaseId: text(next, 120, nonAscii),
    latency: next() < 0.5 ? durationFromMs(Math.floor(next() * 60_000)) : undefined,
    usage: next() < 0.5 ? { inputTokens: int64(next), outputTokens: int64(next) } : undefined,
    rateLimit: next() < 0.2 ? { requestsRemaining: int64(next), requestsReset: durationFromMs(1000) } : undefined,
  };
}

/** Both decoders agree: the same message, or both reject the bytes. */
function expectAgreement<T extends DescMessage>(schema: T, decode: (b: Uint8Array) => unknown, bytes: Uint8Array): void {
  let expected: unknown;
  let expectedError = false;
  try {
    expected = fromBinary(schema, bytes);
  } catch {
    expectedError = true;
  }
  if (expectedError) {
    expect(() => decode(bytes)).toThrow();
    return;
  }
  const actual = decode(bytes);
  expect(equals(schema, actual as never, expected as never)).toBe(true);
}

describe("hand-written request decoders", () => {
  it("know every field of their messages: a field added to the schema must be added to the decoder", () => {
    const shape = (schema: DescMessage) => schema.fields.map((f) => `${f.number}:${f.localName}:${f.fieldKind}`);
    expect(shape(AcquireRequestSchema)).toEqual(["1:pool:scalar", "2:waitTimeout:message", "3:leaseTtl:message", "4:holder:scalar", "5:estimatedTokens:scalar", "6:excludeKeyIds:list", "7:affinity:scalar"]);
    expect(shape(ReleaseRequestSchema)).toEqual(["1:leaseId:scalar", "2:latency:message", "3:usage:message", "4:rateLimit:message"]);
  });

  it("read the common case themselves and equal protobuf-es on it", () => {
    for (let seed = 1; seed <= 400; seed++) {
      const next = rng(seed);
      const acquire = create(AcquireRequestSchema, { ...randomAcquire(next, false), estimatedTokens: BigInt(Math.floor(next() * 1e6)) });
      const read = readAcquireRequest(toBinary(AcquireRequestSchema, acquire));
      expect(read, `seed ${seed}`).toBeDefined();
      expect(equals(AcquireRequestSchema, read!, acquire), `seed ${seed}`).toBe(true);
      const release = create(ReleaseRequestSchema, { ...randomRelease(next, false), rateLimit: undefined, usage: { inputTokens: 12n, outputTokens: 400n } });
      const readRelease = readReleaseRequest(toBinary(ReleaseRequestSchema, release));
      expect(readRelease, `seed ${seed}`).toBeDefined();
      expect(equals(ReleaseRequestSchema, readRelease!, release), `seed ${seed}`).toBe(true);
    }
  });

  it("hand non-ASCII strings, negative numbers, rate limits and unknown fields to protobuf-es", () => {
    expect(readAcquireRequest(toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: "pöol" })))).toBeUndefined();
    expect(readAcquireRequest(toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: "p", estimatedTokens: -1n })))).toBeUndefined();
    expect(readReleaseRequest(toBinary(ReleaseRequestSchema, create(ReleaseRequestSchema, { leaseId: "x", rateLimit: {} })))).toBeUndefined();
    const unknownField = Uint8Array.from([...toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: "p" })), (15 << 3) | 0, 1]);
    expect(readAcquireRequest(unknownField)).toBeUndefined();
    expectAgreement(AcquireRequestSchema, decodeAcquireRequest, unknownField);
  });

  it("decode whatever protobuf-es decodes, to the same message, for random valid messages", () => {
    for (let seed = 1; seed <= 400; seed++) {
      const next = rng(seed * 7919);
      expectAgreement(AcquireRequestSchema, decodeAcquireRequest, toBinary(AcquireRequestSchema, create(AcquireRequestSchema, randomAcquire(next, true))));
      expectAgreement(ReleaseRequestSchema, decodeReleaseRequest, toBinary(ReleaseRequestSchema, create(ReleaseRequestSchema, randomRelease(next, true))));
    }
  });

  it("merge a message field sent twice and keep the last of a scalar sent twice, as protobuf-es does", () => {
    const a = toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: "a", waitTimeout: { seconds: 5n } }));
    const b = toBinary(AcquireRequestSchema, create(AcquireRequestSchema, { pool: "b", waitTimeout: { nanos: 7 } }));
    const both = Uint8Array.from([...a, ...b]);
    expectAgreement(AcquireRequestSchema, decodeAcquireRequest, both);
    const decoded = decodeAcquireRequest(both);
    expect(decoded.pool).toBe("b");
    expect(decoded.waitTimeout).toMatchObject({ seconds: 5n, nanos: 7 });
  });

  it("reject or accept corrupted bytes exactly as protobuf-es does", () => {
    for (let seed = 1; seed <= 600; seed++) {
      const next = rng(seed * 104729);
      const valid = next() < 0.5 ? toBinary(AcquireRequestSchema, create(AcquireRequestSchema, randomAcquire(next, true))) : toBinary(ReleaseRequestSchema, create(ReleaseRequestSchema, randomRelease(next, true)));
      const bytes = Uint8Array.from(valid);
      const mode = next();
      let mutated: Uint8Array;
      if (mode < 0.3) mutated = bytes.subarray(0, Math.floor(next() * bytes.length));
      else if (mode < 0.6) {
        for (let i = 0; i < 3 && bytes.length > 0; i++) bytes[Math.floor(next() * bytes.length)] = Math.floor(next() * 256);
        mutated = bytes;
      } else mutated = Uint8Array.from({ length: Math.floor(next() * 40) }, () => Math.floor(next() * 256));
      expectAgreement(AcquireRequestSchema, decodeAcquireRequest, mutated);
      expectAgreement(ReleaseRequestSchema, decodeReleaseRequest, mutated);
    }
  });
});
