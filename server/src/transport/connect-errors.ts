// connect-es decodes a unary request before any interceptor runs, and answers what it cannot decode
// itself, without an ErrorDetail: a binary body that does not parse as INTERNAL "parse binary …" (its
// parser is shared with its clients, for whom a bad message is the server's fault), bad JSON, framing,
// compression or size under other codes. A unary handler wrapped here has such an answer rewritten by
// the listener's error mapper, in whichever of the three protocols it was written, when the call never
// reached the interceptor (ENTERED). Streaming calls decode inside the interceptor and need none of this.
import type { DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey } from "@connectrpc/connect";
import {
  compressedFlag,
  createAsyncIterable,
  encodeEnvelope,
  type Compression,
  type UniversalHandlerFn,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { codeToHttpStatus, contentTypeUnaryRegExp, errorFromJsonBytes, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { contentTypeRegExp as grpcContentType, findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { contentTypeRegExp as grpcWebContentType, trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

/** Set by the listener's interceptor on every call it sees. */
export const ENTERED = createContextKey(false, { description: "the call reached the interceptor" });

/**
 * What connect-es raised about a request, as the request's fault: it reports a body that does not
 * parse, or a compressed frame it cannot inflate, as INTERNAL.
 */
export function requestError(err: unknown, schema: DescMessage): unknown {
  if (err instanceof ConnectError && err.code === Code.Internal && err.details.length === 0) {
    return new ConnectError(`malformed ${schema.typeName}: ${err.rawMessage}`, Code.InvalidArgument, undefined, undefined, err);
  }
  return err;
}

export interface EarlyErrorOptions {
  /** The error as it must go out; returns the same error when it needs no change. */
  reshape(err: ConnectError): ConnectError;
  /** What the router accepts, to read an error body or trailer connect-es compressed. */
  compressions: Compression[];
  readMaxBytes: number;
}

const STATUS_FIELDS = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/** Rewrites `trailer` in place when its status must change; true when it did. */
function reshapeTrailer(trailer: Headers, opts: EarlyErrorOptions): boolean {
  const err = findTrailerError(trailer);
  if (!err) return false;
  const shaped = opts.reshape(err);
  if (shaped === err) return false;
  for (const name of STATUS_FIELDS) trailer.delete(name);
  setTrailerStatus(trailer, shaped);
  return true;
}

async function inflate(data: Uint8Array, encoding: string | null, opts: EarlyErrorOptions): Promise<Uint8Array | undefined> {
  const compression = opts.compressions.find((c) => c.name === encoding);
  return compression ? compression.decompress(data, opts.readMaxBytes) : undefined;
}

async function bytesOf(body: UniversalServerResponse["body"]): Promise<Uint8Array> {
  if (body === undefined) return new Uint8Array(0);
  if (body instanceof Uint8Array) return body;
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Connect unary: an error is the whole body, a JSON object, possibly compressed. */
async function reshapeConnect(res: UniversalServerResponse, opts: EarlyErrorOptions): Promise<UniversalServerResponse> {
  const raw = await bytesOf(res.body);
  const original = { ...res, body: createAsyncIterable([raw]) };
  const encoding = res.header?.get("content-encoding") ?? null;
  const json = encoding ? await inflate(raw, encoding, opts) : raw;
  if (!json) return original;
  let err: ConnectError;
  try {
    err = errorFromJsonBytes(json, undefined, new ConnectError("unreadable error body", Code.Unknown));
  } catch {
    return original;
  }
  const shaped = opts.reshape(err);
  if (shaped === err) return original;
  const body = errorToJsonBytes(shaped, undefined);
  const header = new Headers(res.header);
  header.delete("content-encoding");
  header.set("content-length", String(body.byteLength));
  return { status: codeToHttpStatus(shaped.code), header, body: createAsyncIterable([body]), trailer: res.trailer };
}

/** gRPC: the status is in the trailer, which connect-node writes once the body is done. */
async function* reshapeGrpc(res: UniversalServerResponse, entered: () => boolean, opts: EarlyErrorOptions): AsyncIterable<Uint8Array> {
  if (res.body) yield* res.body as AsyncIterable<Uint8Array>;
  if (!entered() && res.trailer) reshapeTrailer(res.trailer, opts);
}

/** gRPC-web: the status is the body's last frame, flagged as a trailer, possibly compressed. */
async function* reshapeGrpcWeb(res: UniversalServerResponse, entered: () => boolean, opts: EarlyErrorOptions): AsyncIterable<Uint8Array> {
  // connect-es writes each frame as one chunk.
  for await (const chunk of (res.body ?? []) as AsyncIterable<Uint8Array>) {
    if (entered() || chunk.byteLength < 5 || (chunk[0]! & trailerFlag) !== trailerFlag) {
      yield chunk;
      continue;
    }
    const data = (chunk[0]! & compressedFlag) === compressedFlag ? await inflate(chunk.subarray(5), res.header?.get("grpc-encoding") ?? null, opts) : chunk.subarray(5);
    const trailer = data && trailerParse(data);
    yield trailer && reshapeTrailer(trailer, opts) ? encodeEnvelope(trailerFlag, trailerSerialize(trailer)) : chunk;
  }
}

/** `handler` (a unary method's) with the errors connect-es answers before the interceptor reshaped. */
export function shapeEarlyErrors(handler: UniversalHandlerFn, opts: EarlyErrorOptions): UniversalHandlerFn {
  return async (req) => {
    const res = await handler(req);
    const entered = () => req.contextValues?.get(ENTERED) === true;
    const type = req.header.get("content-type") ?? "";
    if (grpcWebContentType.test(type)) return { ...res, body: reshapeGrpcWeb(res, entered, opts) };
    if (grpcContentType.test(type)) return { ...res, body: reshapeGrpc(res, entered, opts) };
    if (res.status !== 200 && contentTypeUnaryRegExp.test(type) && !entered()) return reshapeConnect(res, opts);
    return res;
  };
}
