import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { dur, ts } from "../../src/rpc/convert.js";

describe("ts and dur", () => {
  it("build the same messages as protobuf-es's converters", () => {
    for (const ms of [0, 1, 999, 1000, 1001, 60_000, 1_763_900_123_456, 2 ** 52]) {
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
});
