// The HTTP listener: Connect (JSON and binary), gRPC-Web and gRPC via connect-node, plus /healthz,
// /readyz, /metrics and the dashboard's static files at /. Cleartext HTTP/1.1 (curl, browsers) and h2c
// (gRPC) share one port: the first bytes of a connection tell which server gets it. With TLS, ALPN
// does the same job.
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex, type Readable } from "node:stream";
import type { DescMessage, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createConnectRouter,
  createContextValues,
  type Interceptor,
  type ServiceImpl,
  type StreamResponse,
} from "@connectrpc/connect";
import type { UniversalHandlerFn } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { ENTERED, requestError, shapeEarlyErrors } from "./connect-errors.js";
import type { CallObserver, RequestCheck } from "./grpc-adapter.js";
import type { Keepalive } from "./listeners.js";
import type { StaticFile, StaticSite } from "./static-site.js";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * How long an idle HTTP/1.1 connection is kept: longer than the 60 s idle timeout of common load
 * balancers and HTTP clients, so they close it first. With Node's default of 5 s, a request sent as the
 * server closes the connection meets a reset.
 */
const HTTP1_IDLE_MS = 65_000;

export interface HttpRoutes {
  /** Each service with its implementation (the same objects the grpc-js listener mounts). */
  services: Array<{ service: DescService; impl: ServiceImpl<DescService> }>;
  healthz(): { status: number; body: string };
  readyz(): Promise<{ status: number; body: string }>;
  metrics(): Promise<{ contentType: string; body: string }>;
  /** The dashboard, served to GET and HEAD. */
  site: StaticSite;
}

export interface HttpListenerOptions {
  readMaxBytes: number;
  shutdown: AbortSignal;
  mapError: (err: unknown) => ConnectError;
  checkRequest: RequestCheck;
  /** Told of every call that reaches a handler; one connect-es refuses before (a body it cannot decode) is not counted. */
  observe?: CallObserver;
}

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

interface PlainResponse {
  writeHead(status: number, headers: Record<string, string>): unknown;
  end(): unknown;
  end(body: string | Buffer): unknown;
}

function send(res: PlainResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  res.end(body);
}

function sendFile(req: { method?: string; headers: http.IncomingHttpHeaders }, res: PlainResponse, file: StaticFile): void {
  if (req.headers["if-none-match"] === file.etag) {
    res.writeHead(304, file.headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...file.headers, "content-length": String(file.body.length) });
  if (req.method === "HEAD") res.end();
  else res.end(file.body);
}

/**
 * A request's body as connect-es reads it. It stops reading a body over the size limit, which would
 * destroy the request and, on HTTP/1.1, reset its connection before the answer arrives; and a body the
 * client cut off is CANCELED, not an error of the server.
 */
async function* requestBody(req: Readable): AsyncIterable<Uint8Array> {
  try {
    yield* req.iterator({ destroyOnReturn: false }) as AsyncIterable<Uint8Array>;
  } catch (e) {
    throw new ConnectError("the client closed the request before sending all of it", Code.Canceled, undefined, undefined, e);
  }
}

/** How much of a body its answer did not need is read and dropped, in multiples of the size limit, before the request is cut off. */
const DISCARD_MAX_FACTOR = 16;

/** Reads and drops what is left of a request's body, up to `limit` bytes; beyond that `cut` ends the request. */
function discardRest(req: Readable, limit: number, cut: () => void): void {
  let dropped = 0;
  req.on("data", (chunk: Buffer) => {
    dropped += chunk.byteLength;
    if (dropped > limit) cut();
  });
  req.resume();
}

/** Each request of a stream checked as it arrives; what connect-es raises while decoding one is the request's fault. */
async function* checked(schema: DescMessage, requests: AsyncIterable<unknown>, check: RequestCheck): AsyncIterable<unknown> {
  try {
    for await (const message of requests) {
      check(schema, message);
      yield message;
    }
  } catch (e) {
    throw requestError(e, schema);
  }
}

/** A stream's responses, with an error that ends it mapped like any other; `done` hears its status. */
async function* mapped(responses: AsyncIterable<unknown>, mapError: (err: unknown) => ConnectError, done: (code: Code | 0) => void): AsyncIterable<unknown> {
  let code: Code | 0 = Code.Canceled;
  try {
    yield* responses;
    code = 0;
  } catch (e) {
    const err = mapError(e);
    code = err.code;
    throw err;
  } finally {
    done(code);
  }
}

export function createHttpHandler(routes: HttpRoutes, opts: HttpListenerOptions): Handler {
  // Checks requests and maps what handlers throw (domain, store) to typed statuses, exactly as on the
  // grpc-js listener; for a stream, also what ends it after the first response.
  const edge: Interceptor = (next) => async (req) => {
    req.contextValues.set(ENTERED, true);
    const started = opts.observe ? performance.now() : 0;
    const done = (code: Code | 0) => opts.observe?.("http", req.method, code, performance.now() - started);
    try {
      if (!req.stream) {
        opts.checkRequest(req.method.input, req.message);
        const res = await next(req);
        done(0);
        return res;
      }
      const res = await next({ ...req, message: checked(req.method.input, req.message, opts.checkRequest) as typeof req.message });
      return { ...res, message: mapped((res as StreamResponse).message, opts.mapError, done) } as StreamResponse;
    } catch (e) {
      const err = opts.mapError(e);
      done(err.code);
      throw err;
    }
  };
  const compressions = [compressionGzip, compressionBrotli];
  const router = createConnectRouter({
    acceptCompression: compressions,
    readMaxBytes: opts.readMaxBytes,
    jsonOptions: { ignoreUnknownFields: false },
    interceptors: [edge],
    shutdownSignal: opts.shutdown,
  });
  for (const { service, impl } of routes.services) router.service(service, impl);
  const paths = new Map<string, { handle: UniversalHandlerFn; unary: boolean }>();
  for (const h of router.handlers) {
    const reshape = (err: ConnectError) => opts.mapError(requestError(err, h.method.input));
    const unary = h.method.methodKind === "unary";
    paths.set(h.requestPath, { handle: unary ? shapeEarlyErrors(h, { reshape, compressions, readMaxBytes: opts.readMaxBytes }) : h, unary });
  }
  const extras = async (req: { method?: string; url?: string; headers: http.IncomingHttpHeaders }, res: PlainResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    const file = req.method === "GET" || req.method === "HEAD" ? routes.site.get(path) : undefined;
    try {
      if (req.method === "GET" && path === "/healthz") {
        const r = routes.healthz();
        send(res, r.status, "text/plain; charset=utf-8", r.body);
      } else if (req.method === "GET" && path === "/readyz") {
        const r = await routes.readyz();
        send(res, r.status, "text/plain; charset=utf-8", r.body);
      } else if (req.method === "GET" && path === "/metrics") {
        const r = await routes.metrics();
        send(res, 200, r.contentType, r.body);
      } else if (file) {
        sendFile(req, res, file);
      } else {
        send(res, 404, "text/plain; charset=utf-8", "not found\n");
      }
    } catch (e) {
      send(res, 500, "text/plain; charset=utf-8", `${(e as Error).message}\n`);
    }
  };
  return (req, res) => {
    const route = paths.get((req.url ?? "").split("?", 1)[0]!);
    if (!route) {
      void extras(req, res);
      return;
    }
    let uReq;
    try {
      uReq = universalRequestFromNodeRequest(req, res, undefined, createContextValues());
      uReq.body = requestBody(req);
    } catch {
      // A request connect-node cannot describe (an HTTP/1.0 one without Host): thrown from here, it would end the process.
      send(res, 400, "text/plain; charset=utf-8", "bad request: no authority (Host header)\n");
      return;
    }
    route
      .handle(uReq)
      .then((uRes) => {
        // A call can be answered before its body has all arrived: a unary one whose body is over the size
        // limit, a stream that ends first. The rest is read and dropped (up to a bound), so that the
        // client finishes sending and reads the answer instead of meeting a reset; an HTTP/1.1
        // connection cannot carry another request after such a call, so it closes after the answer.
        const h2 = req instanceof http2.Http2ServerRequest;
        if (!h2 && (!route.unary || !req.complete)) uRes.header?.set("connection", "close");
        const cut = h2 ? () => req.stream.close(http2.constants.NGHTTP2_CANCEL) : () => req.socket.destroy();
        const drop = () => req.readableEnded || discardRest(req, DISCARD_MAX_FACTOR * opts.readMaxBytes, cut);
        if (route.unary) drop();
        else res.once("finish", drop);
        return universalResponseToNodeResponse(uRes, res);
      })
      .catch(() => {
        // Only writing the answer fails here (the client went away or reset the stream): drop what is left of it.
        if (!res.writableEnded) res.destroy();
      });
  };
}

export interface HttpListener {
  server: net.Server;
  close(): Promise<void>;
}

/**
 * Pings an HTTP/2 session every interval and closes it when the answer takes longer than the timeout,
 * so a client that froze or vanished without closing its connection does not hold it forever.
 */
function pingWhileOpen(session: http2.Http2Session, { intervalMs, timeoutMs }: Keepalive): void {
  let deadline: NodeJS.Timeout | undefined;
  const interval = setInterval(() => {
    if (deadline || session.destroyed) return;
    deadline = setTimeout(() => session.destroy(), timeoutMs);
    deadline.unref();
    try {
      session.ping(() => {
        clearTimeout(deadline);
        deadline = undefined;
      });
    } catch {
      // The session is closing; its close event stops the pings.
    }
  }, intervalMs);
  interval.unref();
  session.once("close", () => {
    clearInterval(interval);
    clearTimeout(deadline);
  });
}

/** Creates (does not listen) a server that speaks HTTP/1.1 and HTTP/2 on one port. */
export function createHttpListener(handler: Handler, opts: { tls?: { cert: Buffer; key: Buffer }; keepalive: Keepalive }): HttpListener {
  const { tls, keepalive } = opts;
  if (tls) {
    const server = http2.createSecureServer({ ...tls, allowHTTP1: true, noDelay: true }, handler);
    server.on("session", (session: http2.Http2Session) => pingWhileOpen(session, keepalive));
    return { server, close: gracefulClose(server, server) };
  }
  const h1 = http.createServer({ keepAliveTimeout: HTTP1_IDLE_MS }, handler);
  const h2 = http2.createServer(handler);
  h2.on("session", (session: http2.Http2Session) => pingWhileOpen(session, keepalive));
  // Without noDelay, Nagle's algorithm holds HTTP/2's small frames for the peer's delayed ACK: about 40 ms a call over h2c.
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.once("data", (chunk: Buffer) => {
      socket.pause();
      const prefix = Math.min(chunk.length, H2_PREFACE.length);
      if (chunk.length >= 3 && H2_PREFACE.subarray(0, prefix).equals(chunk.subarray(0, prefix))) {
        h2.emit("connection", replaying(socket, chunk));
      } else {
        socket.unshift(chunk);
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  });
  return { server, close: gracefulClose(server, h2, h1) };
}

/**
 * Stops accepting, asks HTTP/2 clients to go away and closes idle HTTP/1.1 connections; whatever is
 * still open two seconds later is destroyed, so a client holding a session cannot stall shutdown.
 */
function gracefulClose(server: net.Server, h2: http2.Http2Server | http2.Http2SecureServer, h1?: http.Server): () => Promise<void> {
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  h2.on("session", (session: http2.Http2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  return async () => {
    for (const session of sessions) session.close();
    h1?.closeIdleConnections();
    const closed = closeServer(server);
    const force = setTimeout(() => {
      for (const socket of sockets) socket.destroy();
    }, 2000);
    force.unref();
    await closed;
    clearTimeout(force);
  };
}

/**
 * The socket as a stream that first replays `first`. The HTTP/2 server reads a net.Socket's native
 * handle directly, which would skip bytes already read from it; through a plain Duplex it cannot.
 */
function replaying(socket: net.Socket, first: Buffer): Duplex {
  const stream = new Duplex({
    read: () => {
      socket.resume();
    },
    write: (chunk, encoding, callback) => {
      socket.write(chunk, encoding, callback);
    },
    final: (callback) => {
      socket.end(callback);
    },
    destroy: (err, callback) => {
      socket.destroy(err ?? undefined);
      callback(err);
    },
  });
  stream.push(first);
  socket.on("data", (data: Buffer) => {
    if (!stream.push(data)) socket.pause();
  });
  socket.once("end", () => stream.push(null));
  socket.once("error", (err) => stream.destroy(err));
  socket.once("close", () => stream.destroy());
  return stream;
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
