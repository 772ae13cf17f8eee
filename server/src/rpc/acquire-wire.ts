// AcquireResponse written straight to protobuf wire bytes for the gRPC listener. Reflective
// create() + toBinary() was the largest share of an Acquire's CPU after the transport itself (issue 7,
// bench/README.md); this writes the same message in one pass. server/test/rpc/acquire-wire.test.ts pins
// it to the schema: a field added to AcquireResponse fails that test until it is written here too.
import { create, toBinary } from "@bufbuild/protobuf";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { AcquireResponseSchema } from "../gen/keymesh/v1/pool_pb.js";

/** Everything an Acquire answers; also the init shape the Connect listener encodes with protobuf-es. */
export interface AcquireReply {
  leaseId: string;
  key: string;
  keyId: string;
  keyLabel: string;
  keyMetadata: Record<string, string>;
  expiresAt: Timestamp;
  ttl: Duration;
  renewInterval: Duration;
  pool: string;
}

const LEN = 2;
const tag = (field: number) => (field << 3) | LEN;

function varintSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function putVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 128) {
    buf[pos++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

function stringSize(s: string): number {
  if (s === "") return 0;
  const n = Buffer.byteLength(s);
  return 1 + varintSize(n) + n;
}

function putString(buf: Buffer, pos: number, field: number, s: string): number {
  if (s === "") return pos;
  buf[pos++] = tag(field);
  pos = putVarint(buf, pos, Buffer.byteLength(s));
  return pos + buf.write(s, pos);
}

/** Body size of a Timestamp or Duration (fields 1 seconds and 2 nanos, zero values omitted). */
function timeBodySize(seconds: number, nanos: number): number {
  return (seconds === 0 ? 0 : 1 + varintSize(seconds)) + (nanos === 0 ? 0 : 1 + varintSize(nanos));
}

/** Size of a present Timestamp or Duration field: it is written even when zero, as its presence is meaningful. */
function timeSize(seconds: number, nanos: number): number {
  const body = timeBodySize(seconds, nanos);
  return 1 + varintSize(body) + body;
}

function putTime(buf: Buffer, pos: number, field: number, seconds: number, nanos: number): number {
  buf[pos++] = tag(field);
  pos = putVarint(buf, pos, timeBodySize(seconds, nanos));
  if (seconds !== 0) {
    buf[pos++] = 0x08;
    pos = putVarint(buf, pos, seconds);
  }
  if (nanos !== 0) {
    buf[pos++] = 0x10;
    pos = putVarint(buf, pos, nanos);
  }
  return pos;
}

/** Seconds as a number when this encoder's varints cover them (0 ≤ s < 2^53); negative values need 64-bit two's complement. */
function plainSeconds(t: Timestamp | Duration): number | undefined {
  const s = Number(t.seconds);
  return Number.isSafeInteger(s) && s >= 0 && t.nanos >= 0 ? s : undefined;
}

export function encodeAcquireResponse(r: AcquireReply): Uint8Array {
  const expSec = plainSeconds(r.expiresAt);
  const ttlSec = plainSeconds(r.ttl);
  const renewSec = plainSeconds(r.renewInterval);
  if (expSec === undefined || ttlSec === undefined || renewSec === undefined) {
    return toBinary(AcquireResponseSchema, create(AcquireResponseSchema, r));
  }
  let size = stringSize(r.leaseId) + stringSize(r.key) + stringSize(r.keyId) + stringSize(r.keyLabel) + stringSize(r.pool);
  const entries = Object.keys(r.keyMetadata);
  const entrySizes = new Array<number>(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const k = entries[i]!;
    const keyLen = Buffer.byteLength(k);
    const valueLen = Buffer.byteLength(r.keyMetadata[k]!);
    const body = 1 + varintSize(keyLen) + keyLen + 1 + varintSize(valueLen) + valueLen;
    entrySizes[i] = body;
    size += 1 + varintSize(body) + body;
  }
  size += timeSize(expSec, r.expiresAt.nanos) + timeSize(ttlSec, r.ttl.nanos) + timeSize(renewSec, r.renewInterval.nanos);

  const buf = Buffer.allocUnsafe(size);
  let pos = putString(buf, 0, 1, r.leaseId);
  pos = putString(buf, pos, 2, r.key);
  pos = putString(buf, pos, 3, r.keyId);
  pos = putString(buf, pos, 4, r.keyLabel);
  for (let i = 0; i < entries.length; i++) {
    const k = entries[i]!;
    const v = r.keyMetadata[k]!;
    buf[pos++] = tag(5);
    pos = putVarint(buf, pos, entrySizes[i]!);
    buf[pos++] = tag(1);
    pos = putVarint(buf, pos, Buffer.byteLength(k));
    pos += buf.write(k, pos);
    buf[pos++] = tag(2);
    pos = putVarint(buf, pos, Buffer.byteLength(v));
    pos += buf.write(v, pos);
  }
  pos = putTime(buf, pos, 6, expSec, r.expiresAt.nanos);
  pos = putTime(buf, pos, 7, ttlSec, r.ttl.nanos);
  pos = putTime(buf, pos, 8, renewSec, r.renewInterval.nanos);
  putString(buf, pos, 9, r.pool);
  return buf;
}
