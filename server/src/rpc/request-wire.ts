// Hand-written decoders for the two requests of the lease cycle, Acquire and Release, on the gRPC
// listener: reflective fromBinary() was a twentieth of a cycle's CPU (issue 7, bench/README.md). They
// read the common case only (known fields, ASCII strings, each message field at most once, varints below
// 2^49) and hand anything else to protobuf-es, so every input decodes, or fails, exactly as protobuf-es
// decides. server/test/rpc/request-wire.test.ts pins them to the schema and to protobuf-es.
import { fromBinary } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { Usage } from "../gen/keymesh/v1/common_pb.js";
import { AcquireRequestSchema, ReleaseRequestSchema, type AcquireRequest, type ReleaseRequest } from "../gen/keymesh/v1/pool_pb.js";

/** Thrown inside the fast path when the input leaves the common case; never escapes this module. */
const UNCOMMON = Symbol("uncommon");

const VARINT = 0;
const LEN = 2;

class Reader {
  pos: number;

  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** A varint of at most 7 bytes (below 2^49); longer ones (negative or huge numbers) are uncommon. */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= this.end) throw UNCOMMON;
      const b = this.buf[this.pos++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    throw UNCOMMON;
  }

  /** The bounds of a length-delimited field's bytes. */
  span(): number {
    const len = this.varint();
    const start = this.pos;
    if (len > this.end - start) throw UNCOMMON;
    this.pos = start + len;
    return start;
  }

  /** An ASCII string (the same in every decoding); anything else is uncommon. */
  ascii(): string {
    const start = this.span();
    for (let i = start; i < this.pos; i++) if (this.buf[i]! >= 0x80) throw UNCOMMON;
    return this.buf.toString("latin1", start, this.pos);
  }
}

/** A nested message of two varint fields, 1 and 2 (Duration, Usage), zero when absent. */
function twoVarints(r: Reader): [number, number] {
  const start = r.span();
  const inner = new Reader(r.buf, start, r.pos);
  let first = 0;
  let second = 0;
  while (inner.pos < inner.end) {
    const tag = inner.varint();
    if (tag === ((1 << 3) | VARINT)) first = inner.varint();
    else if (tag === ((2 << 3) | VARINT)) second = inner.varint();
    else throw UNCOMMON;
  }
  return [first, second];
}

function duration(r: Reader): Duration {
  const [seconds, nanos] = twoVarints(r);
  // int32 nanos: values at or above 2^31 wrap to negative, which protobuf-es does and this does not.
  if (nanos >= 2 ** 31) throw UNCOMMON;
  return { $typeName: "google.protobuf.Duration", seconds: BigInt(seconds), nanos };
}

function usage(r: Reader): Usage {
  const [inputTokens, outputTokens] = twoVarints(r);
  return { $typeName: "keymesh.v1.Usage", inputTokens: BigInt(inputTokens), outputTokens: BigInt(outputTokens) };
}

function fastAcquire(bytes: Buffer): AcquireRequest {
  const r = new Reader(bytes, 0, bytes.length);
  let pool = "";
  let holder = "";
  let estimatedTokens = 0;
  let waitTimeout: Duration | undefined;
  let leaseTtl: Duration | undefined;
  const excludeKeyIds: string[] = [];
  let affinity = "";
  while (r.pos < r.end) {
    const tag = r.varint();
    switch (tag) {
      case (1 << 3) | LEN:
        pool = r.ascii();
        break;
      case (2 << 3) | LEN:
        // A repeated message field merges into the first: protobuf-es does that.
        if (waitTimeout) throw UNCOMMON;
        waitTimeout = duration(r);
        break;
      case (3 << 3) | LEN:
        if (leaseTtl) throw UNCOMMON;
        leaseTtl = duration(r);
        break;
      case (4 << 3) | LEN:
        holder = r.ascii();
        break;
      case (5 << 3) | VARINT:
        estimatedTokens = r.varint();
        break;
      case (6 << 3) | LEN:
        excludeKeyIds.push(r.ascii());
        break;
      case (7 << 3) | LEN:
        affinity = r.ascii();
        break;
      default:
        throw UNCOMMON;
    }
  }
  return { $typeName: "keymesh.v1.AcquireRequest", pool, waitTimeout, leaseTtl, holder, estimatedTokens: BigInt(estimatedTokens), excludeKeyIds, affinity };
}

function fastRelease(bytes: Buffer): ReleaseRequest {
  const r = new Reader(bytes, 0, bytes.length);
  let leaseId = "";
  let latency: Duration | undefined;
  let used: Usage | undefined;
  while (r.pos < r.end) {
    const tag = r.varint();
    switch (tag) {
      case (1 << 3) | LEN:
        leaseId = r.ascii();
        break;
      case (2 << 3) | LEN:
        if (latency) throw UNCOMMON;
        latency = duration(r);
        break;
      case (3 << 3) | LEN:
        if (used) throw UNCOMMON;
        used = usage(r);
        break;
      default:
        // rate_limit (4) and unknown fields go to protobuf-es.
        throw UNCOMMON;
    }
  }
  return { $typeName: "keymesh.v1.ReleaseRequest", leaseId, latency, usage: used, rateLimit: undefined };
}

const asBuffer = (bytes: Uint8Array): Buffer => (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));

function common<T>(read: (bytes: Buffer) => T, bytes: Uint8Array): T | undefined {
  try {
    return read(asBuffer(bytes));
  } catch (e) {
    if (e === UNCOMMON) return undefined;
    throw e;
  }
}

/** The request when it is in the common case; undefined when protobuf-es must decide. */
export const readAcquireRequest = (bytes: Uint8Array): AcquireRequest | undefined => common(fastAcquire, bytes);
export const readReleaseRequest = (bytes: Uint8Array): ReleaseRequest | undefined => common(fastRelease, bytes);

export const decodeAcquireRequest = (bytes: Uint8Array): AcquireRequest => readAcquireRequest(bytes) ?? fromBinary(AcquireRequestSchema, bytes);
export const decodeReleaseRequest = (bytes: Uint8Array): ReleaseRequest => readReleaseRequest(bytes) ?? fromBinary(ReleaseRequestSchema, bytes);
