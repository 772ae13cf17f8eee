// Mounts a connect-es ServiceImpl on a @grpc/grpc-js Server, using the protobuf-es descriptor for
// (de)serialisation, so one implementation serves both stacks. Requests arrive as raw bytes and are
// decoded here: grpc-js would answer a decode failure with INTERNAL, the contract says INVALID_ARGUMENT.
import * as grpc from "@grpc/grpc-js";
import { fromBinary, toBinary, create, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

type AnyImpl = (input: unknown, ctx: HandlerContext) => unknown;

/** Why a handler's signal aborts once its call is over; one instance, as ending a call is the hot path. */
const CALL_ENDED = new ConnectError("call ended", Code.Canceled);

/** Called for every error a handler throws; returns what goes on the wire. */
type ErrorMapper = (err: unknown) => ConnectError;

const identity = (b: Buffer): Buffer => b;

/**
 * A HandlerContext for grpc-js calls. The AbortSignal, header conversions and context values are
 * created on first use: most unary calls never touch them, and allocating them per call is what makes
 * connect-node's gRPC path several times slower than bare grpc-js (DESIGN.md, Topology).
 */
class GrpcHandlerContext implements HandlerContext {
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  private controller: AbortController | undefined;
  private reqHeader: Headers | undefined;
  private resHeader: Headers | undefined;
  private resTrailer: Headers | undefined;
  private ctxValues: ContextValues | undefined;
  private ended = false;

  private readonly started: number;

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    private readonly call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
    private readonly shutdown: AbortSignal,
    private readonly observe: CallObserver | undefined,
  ) {
    this.started = observe ? performance.now() : 0;
  }

  /** Reports the call's status once it is answered. */
  finish(code: Code | 0): void {
    this.observe?.("grpc", this.method, code, performance.now() - this.started);
  }

  get url(): string {
    return this.call.getPath();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      const controller = new AbortController();
      this.controller = controller;
      if (this.ended || this.call.cancelled) {
        controller.abort(CALL_ENDED);
      } else {
        (this.call as NodeJS.EventEmitter).once("cancelled", () => controller.abort(new ConnectError("call cancelled by the client", Code.Canceled)));
        if (this.shutdown.aborted) {
          controller.abort(this.shutdown.reason);
        } else {
          // Removed when the call ends: the shutdown signal outlives every call.
          const onShutdown = () => controller.abort(this.shutdown.reason);
          this.shutdown.addEventListener("abort", onShutdown, { once: true });
          controller.signal.addEventListener("abort", () => this.shutdown.removeEventListener("abort", onShutdown), { once: true });
        }
        const remaining = this.timeoutMs();
        if (remaining !== undefined) {
          const timer = setTimeout(() => controller.abort(new ConnectError("deadline exceeded", Code.DeadlineExceeded)), Math.max(0, remaining));
          timer.unref();
          controller.signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
        }
      }
    }
    return this.controller.signal;
  }

  timeoutMs(): number | undefined {
    const deadline = this.call.getDeadline();
    if (deadline === Infinity) return undefined;
    const at = deadline instanceof Date ? deadline.getTime() : deadline;
    return at - Date.now();
  }

  get requestHeader(): Headers {
    if (!this.reqHeader) {
      const headers = new Headers();
      for (const [name, value] of Object.entries(this.call.metadata.getMap())) {
        if (typeof value === "string") headers.append(name, value);
      }
      this.reqHeader = headers;
    }
    return this.reqHeader;
  }

  get responseHeader(): Headers {
    return (this.resHeader ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.resTrailer ??= new Headers());
  }

  get values(): ContextValues {
    return (this.ctxValues ??= createContextValues());
  }

  /** Metadata to send before the first response (only when a handler set some). */
  headerMetadata(): grpc.Metadata | undefined {
    return this.resHeader ? toMetadata(this.resHeader) : undefined;
  }

  trailerMetadata(): grpc.Metadata | undefined {
    return this.resTrailer ? toMetadata(this.resTrailer) : undefined;
  }

  end(): void {
    this.ended = true;
    this.controller?.abort(CALL_ENDED);
  }
}

function toMetadata(headers: Headers): grpc.Metadata {
  const md = new grpc.Metadata();
  headers.forEach((value, name) => {
    if (name.endsWith("-bin")) md.add(name, Buffer.from(value, "base64"));
    else md.add(name, value);
  });
  return md;
}

/** grpc-js status for a ConnectError, with details in grpc-status-details-bin as connect encodes them. */
function toStatus(err: ConnectError, trailer: grpc.Metadata | undefined): Partial<grpc.StatusObject> {
  const metadata = trailer ?? new grpc.Metadata();
  for (const [name, value] of err.metadata) metadata.add(name, value);
  const details = setTrailerStatus(new Headers(), err).get("grpc-status-details-bin");
  if (details) metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
  return { code: err.code as number as grpc.status, details: err.rawMessage, metadata };
}

/** Decodes a request and applies the listener's checks to it; bytes that do not decode are INVALID_ARGUMENT. */
function decoder(schema: DescMessage, read: (bytes: Uint8Array) => unknown = (bytes) => fromBinary(schema, bytes), check?: RequestCheck): (bytes: Buffer) => unknown {
  return (bytes) => {
    let message: unknown;
    try {
      message = read(bytes);
    } catch (e) {
      throw new ConnectError(`malformed ${schema.typeName}: ${(e as Error).message}`, Code.InvalidArgument);
    }
    check?.(schema, message);
    return message;
  };
}

/** Told of every call a listener answers: its status code (0 is OK) and how long it took (a stream: open to end). */
export type CallObserver = (listener: "grpc" | "http", method: DescMethod, code: Code | 0, durationMs: number) => void;

/** Throws when a decoded request is out of bounds (rpc/limits.ts). */
export type RequestCheck = (schema: DescMessage, message: unknown) => void;

/**
 * Hand-written codecs by method local name, used instead of protobuf-es reflection on hot methods. A
 * decoder must accept and reject exactly what fromBinary does; its errors become INVALID_ARGUMENT.
 */
export type WireCodecs = Record<string, { decode?: (bytes: Uint8Array) => unknown; encode?: (out: never) => Uint8Array }>;

export interface GrpcMountOptions {
  mapError: ErrorMapper;
  /** Aborted on graceful shutdown: every open handler's signal aborts with it. */
  shutdown: AbortSignal;
  codecs?: WireCodecs;
  /** Applied to every request after it is decoded, before the handler sees it. */
  checkRequest?: RequestCheck;
  observe?: CallObserver;
}

const EMPTY = new Uint8Array(0);

/** protobuf-es encoding of a handler's init object; one with no fields set is the empty message whatever its type. */
function reflectiveEncoder(schema: DescMessage): (init: unknown) => Uint8Array {
  return (init) => {
    for (const _ in init as object) return toBinary(schema, create(schema, init as never));
    return EMPTY;
  };
}

/** Adds `impl` for `service` to a grpc-js server. */
export function addServiceToGrpc<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
  opts: GrpcMountOptions,
): void {
  const definition: Record<string, grpc.MethodDefinition<Buffer, Uint8Array>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const fn = (impl as unknown as Record<string, AnyImpl>)[method.localName].bind(impl);
    definition[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: (msg: Uint8Array) => Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength),
      responseDeserialize: identity,
      originalName: method.localName,
    };
    handlers[method.name] = handlerFor(service, method, fn, opts);
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}

function handlerFor(service: DescService, method: DescMethod, fn: AnyImpl, opts: GrpcMountOptions): grpc.UntypedHandleCall {
  const codec = opts.codecs?.[method.localName];
  const encode = (codec?.encode as ((out: unknown) => Uint8Array) | undefined) ?? reflectiveEncoder(method.output);
  const decode = decoder(method.input, codec?.decode, opts.checkRequest);
  switch (method.methodKind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<Buffer, Uint8Array>, callback: grpc.sendUnaryData<Uint8Array>) => {
        const ctx = new GrpcHandlerContext(service, method, call, opts.shutdown, opts.observe);
        let result: unknown;
        try {
          result = fn(decode(call.request), ctx);
        } catch (e) {
          answerUnary(ctx, call, callback, encode, opts.mapError, e ?? new Error("threw"), undefined);
          return;
        }
        if (result instanceof Promise) {
          result.then(
            (out) => answerUnary(ctx, call, callback, encode, opts.mapError, undefined, out),
            (e) => answerUnary(ctx, call, callback, encode, opts.mapError, e ?? new Error("rejected"), undefined),
          );
        } else {
          answerUnary(ctx, call, callback, encode, opts.mapError, undefined, result);
        }
      };
    case "server_streaming":
      return (call: grpc.ServerWritableStream<Buffer, Uint8Array>) => {
        const ctx = new GrpcHandlerContext(service, method, call, opts.shutdown, opts.observe);
        void pump(ctx, call, () => fn(decode(call.request), ctx) as AsyncIterable<unknown>, encode, opts);
      };
    case "bidi_streaming":
      return (call: grpc.ServerDuplexStream<Buffer, Uint8Array>) => {
        const ctx = new GrpcHandlerContext(service, method, call, opts.shutdown, opts.observe);
        const requests = readRequests(call, decode);
        void pump(ctx, call, () => fn(requests, ctx) as AsyncIterable<unknown>, encode, opts);
      };
    default:
      throw new Error(`${method.methodKind} methods are not part of the KeyMesh contract`);
  }
}

/** Ends a unary call with the handler's result or error. A plain function: a closure per call costs more than it reads. */
function answerUnary(
  ctx: GrpcHandlerContext,
  call: grpc.ServerUnaryCall<Buffer, Uint8Array>,
  callback: grpc.sendUnaryData<Uint8Array>,
  encode: (out: unknown) => Uint8Array,
  mapError: ErrorMapper,
  err: unknown,
  out: unknown,
): void {
  const header = ctx.headerMetadata();
  if (header) call.sendMetadata(header);
  ctx.end();
  if (err !== undefined) {
    const mapped = mapError(err);
    callback(toStatus(mapped, ctx.trailerMetadata()));
    ctx.finish(mapped.code);
    return;
  }
  let bytes: Uint8Array;
  try {
    bytes = encode(out);
  } catch (e) {
    const mapped = mapError(e);
    callback(toStatus(mapped, ctx.trailerMetadata()));
    ctx.finish(mapped.code);
    return;
  }
  callback(null, bytes, ctx.trailerMetadata());
  ctx.finish(0);
}

async function* readRequests(call: grpc.ServerDuplexStream<Buffer, Uint8Array>, decode: (bytes: Buffer) => unknown) {
  // A plain `for await` destroys the duplex when the client half-closes, and with it the status we still owe.
  for await (const chunk of call.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) yield decode(chunk);
}

async function pump(
  ctx: GrpcHandlerContext,
  call: grpc.ServerWritableStream<Buffer, Uint8Array> | grpc.ServerDuplexStream<Buffer, Uint8Array>,
  start: () => AsyncIterable<unknown>,
  encode: (init: unknown) => Uint8Array,
  opts: GrpcMountOptions,
): Promise<void> {
  let headerSent = false;
  let code: Code | 0 = 0;
  const sendHeader = () => {
    if (headerSent) return;
    headerSent = true;
    const header = ctx.headerMetadata();
    if (header) call.sendMetadata(header);
  };
  try {
    for await (const out of start()) {
      if (call.cancelled) break;
      sendHeader();
      if (!call.write(encode(out))) await waitDrain(call, ctx.signal);
    }
    sendHeader();
    if (!call.cancelled) {
      const trailer = ctx.trailerMetadata();
      call.end(trailer);
    } else {
      code = Code.Canceled;
    }
  } catch (e) {
    sendHeader();
    // A client gone mid-stream ends its reads with a premature close: nobody is left to answer.
    if (call.cancelled || (e as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE") {
      code = Code.Canceled;
    } else {
      const mapped = opts.mapError(e);
      code = mapped.code;
      call.emit("error", toStatus(mapped, ctx.trailerMetadata()));
    }
  } finally {
    ctx.end();
    ctx.finish(code);
  }
}

function waitDrain(call: NodeJS.EventEmitter, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    call.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}
