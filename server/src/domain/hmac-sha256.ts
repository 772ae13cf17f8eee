// HMAC-SHA256 (RFC 2104 over FIPS 180-4 SHA-256) in plain JavaScript, for the MAC in every lease id
// (lease-token.ts). node:crypto's createHmac builds and frees a native object per call and looks its
// digest up by name: under load that was about 9 µs of server CPU per Acquire (issue 7, bench/README.md).
// Here the key's two padded blocks are hashed once, at construction, so a MAC over a lease id's payload
// is a few block compressions and one 32-byte allocation. server/test/domain/hmac-sha256.test.ts checks
// it against RFC 4231's vectors and node:crypto.
import { createHash } from "node:crypto";

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
  0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
  0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
  0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
  0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
  0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
const BLOCK = 64;

/** The message schedule, shared: compress() runs to completion before anything else can call it. */
const W = new Int32Array(64);

/** One SHA-256 block compression of `block[off, off + 64)` into `state`. */
function compress(state: Int32Array, block: Uint8Array, off: number): void {
  for (let i = 0; i < 16; i++, off += 4) {
    W[i] = (block[off]! << 24) | (block[off + 1]! << 16) | (block[off + 2]! << 8) | block[off + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15]!;
    const y = W[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
  }
  let a = state[0]!;
  let b = state[1]!;
  let c = state[2]!;
  let d = state[3]!;
  let e = state[4]!;
  let f = state[5]!;
  let g = state[6]!;
  let h = state[7]!;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[i]! + W[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

/** Appends SHA-256 padding for a message of `length` bytes whose tail sits at `buf[0, tail)`; returns the padded size. */
function pad(buf: Buffer, tail: number, length: number): number {
  const size = Math.ceil((tail + 9) / BLOCK) * BLOCK;
  buf[tail] = 0x80;
  buf.fill(0, tail + 1, size - 8);
  const bits = length * 8;
  buf.writeUInt32BE(Math.floor(bits / 2 ** 32), size - 8);
  buf.writeUInt32BE(bits >>> 0, size - 4);
  return size;
}

export class HmacSha256 {
  /** SHA-256 state after the key XOR ipad block, and after the key XOR opad block. */
  readonly #inner = new Int32Array(IV);
  readonly #outer = new Int32Array(IV);
  readonly #state = new Int32Array(8);
  #scratch = Buffer.alloc(4 * BLOCK);

  constructor(key: Uint8Array) {
    const k = key.length > BLOCK ? createHash("sha256").update(key).digest() : key;
    const block = new Uint8Array(BLOCK);
    for (let i = 0; i < BLOCK; i++) block[i] = (k[i] ?? 0) ^ 0x36;
    compress(this.#inner, block, 0);
    for (let i = 0; i < BLOCK; i++) block[i] = (k[i] ?? 0) ^ 0x5c;
    compress(this.#outer, block, 0);
  }

  /** HMAC-SHA256 of the UTF-8 bytes of `message`, 32 bytes. */
  digest(message: string): Buffer {
    const n = Buffer.byteLength(message);
    if (this.#scratch.length < n + BLOCK + 9) this.#scratch = Buffer.alloc(2 * (n + BLOCK + 9));
    const buf = this.#scratch;
    const st = this.#state;
    st.set(this.#inner);
    buf.write(message, 0);
    const size = pad(buf, n, BLOCK + n);
    for (let off = 0; off < size; off += BLOCK) compress(st, buf, off);
    for (let i = 0; i < 8; i++) buf.writeInt32BE(st[i]!, i * 4);
    pad(buf, 32, BLOCK + 32);
    st.set(this.#outer);
    compress(st, buf, 0);
    const out = Buffer.allocUnsafe(32);
    for (let i = 0; i < 8; i++) out.writeInt32BE(st[i]!, i * 4);
    return out;
  }
}
