// Raw RPCs, for tests that send what a well-behaved client never would (bytes that do not decode, JSON
// that is not the message): one caller per protocol, each taking the request messages already encoded
// (protobuf bytes, or JSON text for the JSON protocols) and telling how the call ended, with the
// KeyMesh ErrorDetail the answer carried.
import type * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { endStreamFromJson, errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { trailerParse } from "@connectrpc/connect/protocol-grpc-web";
import { ErrorDetailSchema, type ErrorDetail } from "../../server/src/gen/keymesh/v1/common_pb.js";

/** Native gRPC on the grpc-js port, then the four protocols of the HTTP port (gRPC over h2c, gRPC-Web, Connect binary and JSON). */
export const PROTOCOLS = ["grpc", "grpc-h2c", "grpc-web", "connect-proto", "connect-json"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export const isJson = (p: Protocol) => p === "connect-json";

export interface Outcome {
  /** 0 when the call succeeded. */
  code: Code | 0;
  message: string;
  /** The HTTP status, for the protocols sent with fetch. */
  httpStatus?: number;
  detail?: ErrorDetail;
  /** Messages received before the end. */
  responses: number;
  /** The test ended the call itself: a stream it had read for long enough. */
  stoppedByClient: boolean;
}

export interface RawCallOptions {
  /** How long a stream is read before the test ends it; a call still unanswered after `timeoutMs` fails. */
  streamMs: number;
  timeoutMs: number;
}

function fromError(err: ConnectError, extra: Partial<Outcome>): Outcome {
  return {
    code: err.code,
    message: err.rawMessage,
    detail: err.findDetails(ErrorDetailSchema)[0],
    responses: 0,
    stoppedByClient: false,
    ...extra,
  };
}

const ok = (extra: Partial<Outcome>): Outcome => ({ code: 0, message: "", responses: 0, stoppedByClient: false, ...extra });

function envelope(flags: number, data: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(data.byteLength, 1);
  return Buffer.concat([head, data]);
}

/** Splits complete frames off the front of `buf`; returns them and what is left. */
function frames(buf: Buffer): { frames: Array<{ flags: number; data: Buffer }>; rest: Buffer } {
  const out: Array<{ flags: number; data: Buffer }> = [];
  let pos = 0;
  while (buf.length - pos >= 5) {
    const len = buf.readUInt32BE(pos + 1);
    if (buf.length - pos - 5 < len) break;
    out.push({ flags: buf[pos]!, data: buf.subarray(pos + 5, pos + 5 + len) });
    pos += 5 + len;
  }
  return { frames: out, rest: buf.subarray(pos) };
}

const identity = (b: Buffer) => b;

/** A grpc-js client on raw bytes; the same client speaks to the grpc-js port and to the HTTP port's h2c gRPC. */
export class RawGrpcClient {
  private readonly client: grpc.Client;

  constructor(address: string) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure());
  }

  close(): void {
    this.client.close();
  }

  call(method: DescMethod, requests: Uint8Array[], opts: RawCallOptions): Promise<Outcome> {
    const path = `/${method.parent.typeName}/${method.name}`;
    return new Promise((resolve) => {
      let responses = 0;
      let stopped = false;
      let settled = false;
      const finish = (o: Outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(stop);
        clearTimeout(give);
        resolve(o);
      };
      const onError = (err: grpc.ServiceError | null) => {
        if (!err) return finish(ok({ responses }));
        const headers = new Headers({ "grpc-status": String(err.code), "grpc-message": encodeURIComponent(err.details ?? "") });
        const bin = err.metadata?.get("grpc-status-details-bin")[0];
        if (bin instanceof Buffer) headers.set("grpc-status-details-bin", bin.toString("base64"));
        const e = findTrailerError(headers) ?? new ConnectError(err.details, err.code as number);
        finish(fromError(e, { responses, stoppedByClient: stopped }));
      };
      let cancel = () => {};
      const stop = setTimeout(() => {
        stopped = true;
        cancel();
      }, opts.streamMs);
      const give = setTimeout(() => finish({ ...ok({ responses }), code: Code.DeadlineExceeded, message: `no answer within ${opts.timeoutMs} ms` }), opts.timeoutMs);
      switch (method.methodKind) {
        case "unary": {
          clearTimeout(stop);
          this.client.makeUnaryRequest(path, identity, identity, Buffer.from(requests[0] ?? []), (err) => onError(err));
          break;
        }
        case "server_streaming": {
          const call = this.client.makeServerStreamRequest(path, identity, identity, Buffer.from(requests[0] ?? []));
          cancel = () => call.cancel();
          call.on("data", () => responses++);
          call.on("error", (err: grpc.ServiceError) => onError(err));
          call.on("status", (s: grpc.StatusObject) => s.code === grpc.status.OK && onError(null));
          break;
        }
        default: {
          const call = this.client.makeBidiStreamRequest(path, identity, identity);
          cancel = () => call.cancel();
          call.on("data", () => responses++);
          call.on("error", (err: grpc.ServiceError) => onError(err));
          call.on("status", (s: grpc.StatusObject) => s.code === grpc.status.OK && onError(null));
          for (const r of requests) call.write(Buffer.from(r));
          call.end();
        }
      }
    });
  }
}

/** How the HTTP protocols reach the HTTP port: fetch (HTTP/1.1) or an HTTP/2 session (h2c, which bidi streams need). */
interface RawResponse {
  status: number;
  headers: Headers;
  body: AsyncIterable<Uint8Array>;
}
export type HttpSend = (path: string, headers: Record<string, string>, body: Buffer, signal: AbortSignal) => Promise<RawResponse>;

export function viaFetch(baseUrl: string): HttpSend {
  return async (path, headers, body, signal) => {
    const res = await fetch(`${baseUrl}${path}`, { method: "POST", headers, body: new Uint8Array(body), signal });
    return { status: res.status, headers: res.headers, body: (res.body ?? []) as AsyncIterable<Uint8Array> };
  };
}

export function viaHttp2(session: http2.ClientHttp2Session): HttpSend {
  return (path, headers, body, signal) =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": path, ...headers }, { signal });
      stream.once("error", reject);
      stream.once("response", (h) => {
        const out = new Headers();
        for (const [k, v] of Object.entries(h)) if (!k.startsWith(":") && v !== undefined) out.set(k, String(v));
        resolve({ status: Number(h[":status"]), headers: out, body: stream });
      });
      stream.end(body);
    });
}

/** Reads a streamed body frame by frame until it ends or the request's signal aborts. */
async function readFrames(body: AsyncIterable<Uint8Array>, onFrame: (flags: number, data: Buffer) => void): Promise<void> {
  let buf: Buffer = Buffer.alloc(0);
  for await (const chunk of body) {
    const split = frames(Buffer.concat([buf, chunk]));
    buf = split.rest;
    for (const f of split.frames) onFrame(f.flags, f.data);
  }
}

async function readAll(body: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** gRPC-Web and Connect against the HTTP port. */
export async function httpCall(send: HttpSend, protocol: Exclude<Protocol, "grpc" | "grpc-h2c">, method: DescMethod, requests: Uint8Array[], opts: RawCallOptions): Promise<Outcome> {
  const path = `/${method.parent.typeName}/${method.name}`;
  const unary = method.methodKind === "unary";
  const abort = new AbortController();
  let stopped = false;
  const stop = setTimeout(() => {
    stopped = true;
    abort.abort();
  }, unary ? opts.timeoutMs : opts.streamMs);
  let responses = 0;
  let httpStatus: number | undefined;
  try {
    if (protocol === "grpc-web") {
      const res = await send(path, { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" }, Buffer.concat(requests.map((r) => envelope(0, r))), abort.signal);
      httpStatus = res.status;
      const early = findTrailerError(res.headers);
      if (early) return fromError(early, { httpStatus });
      let trailerError: ConnectError | undefined;
      await readFrames(res.body, (flags, data) => {
        if (flags & 0x80) trailerError = findTrailerError(trailerParse(data));
        else responses++;
      });
      return trailerError ? fromError(trailerError, { httpStatus, responses }) : ok({ httpStatus, responses });
    }
    const json = protocol === "connect-json";
    if (unary) {
      const res = await send(path, { "content-type": json ? "application/json" : "application/proto", "connect-protocol-version": "1" }, Buffer.concat(requests.slice(0, 1)), abort.signal);
      httpStatus = res.status;
      const body = await readAll(res.body);
      if (res.status === 200) return ok({ httpStatus, responses: 1 });
      return fromError(errorFromJsonBytes(body, res.headers, new ConnectError(`HTTP ${res.status} without a Connect error`, Code.Unknown)), { httpStatus });
    }
    const res = await send(
      path,
      { "content-type": json ? "application/connect+json" : "application/connect+proto", "connect-protocol-version": "1" },
      Buffer.concat(requests.map((r) => envelope(0, r))),
      abort.signal,
    );
    httpStatus = res.status;
    if (res.status !== 200) return { ...ok({ httpStatus }), code: Code.Unknown, message: `HTTP ${res.status} on a stream` };
    let endError: ConnectError | undefined;
    await readFrames(res.body, (flags, data) => {
      if (flags & 0x02) endError = endStreamFromJson(data).error;
      else responses++;
    });
    return endError ? fromError(endError, { httpStatus, responses }) : ok({ httpStatus, responses });
  } catch (e) {
    if (stopped) {
      if (unary) return { ...ok({ httpStatus, responses }), code: Code.DeadlineExceeded, message: `no answer within ${opts.timeoutMs} ms` };
      return ok({ httpStatus, responses, stoppedByClient: true });
    }
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    return { ...ok({ httpStatus, responses }), code: Code.Unknown, message: `the connection failed: ${cause?.code ?? cause?.message ?? (e as Error).message}` };
  } finally {
    clearTimeout(stop);
  }
}
