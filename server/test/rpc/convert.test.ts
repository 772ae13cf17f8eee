import { toJson } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema, durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { dur, ts } from "../../src/rpc/convert.js";

describe("ts and dur", () => {
  it("build the same messages as protobuf-es's converters", () => {
    for (const ms of [0, 1, 999, 1000, 1001, 60_000, 1_763_900_123_456, 253_402_300_799_999]) {
      expect(ts(ms)).toStrictEqual(timestampFromMs(ms));
      expect(dur(ms)).toStrictEqual(durationFromMs(ms));
    }
  });

  it("round a duration to whole milliseconds and clamp it at zero", () => {
    expect(dur(1.6)).toStrictEqual(durationFromMs(2));
    expect(dur(-5)).toStrictEqual(durationFromMs(0));
    expect(ts(undefined)).toBeUndefined();
    expect(dur(undefined)).toBeUndefined();
  });

  it("clamp to what protobuf can encode, so an answer always encodes, in JSON too", () => {
    for (const ms of [253_402_300_800_000, 2 ** 52, 1e20]) expect(toJson(TimestampSchema, ts(ms))).toBe("9999-12-31T23:59:59.999Z");
    for (const ms of [315_576_000_000_001, 2 ** 52, 1e20]) expect(toJson(DurationSchema, dur(ms))).toBe("315576000000s");
    expect(toJson(TimestampSchema, ts(-1e20))).toBe("0001-01-01T00:00:00Z");
  });
});
