import { create } from "@bufbuild/protobuf";
import { type Duration, DurationSchema } from "@bufbuild/protobuf/wkt";

/** A protobuf Duration from milliseconds. */
export function durationFromMs(ms: number): Duration {
  const whole = Math.floor(ms);
  return create(DurationSchema, { seconds: BigInt(Math.floor(whole / 1000)), nanos: (whole % 1000) * 1_000_000 });
}

/** Milliseconds of a protobuf Duration (0 when unset). */
export function msFromDuration(d: Duration | undefined): number {
  return d ? Number(d.seconds) * 1000 + Math.floor(d.nanos / 1_000_000) : 0;
}
