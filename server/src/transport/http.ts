// The HTTP listener: Connect (JSON and binary), gRPC-Web and gRPC via connect-node, plus /healthz,
// /readyz, /metrics and the dashboard's static files at /. Cleartext HTTP/1.1 (curl, browsers) and h2c
// (gRPC) share one port: the first bytes of a connection tell which server gets it. With TLS, ALPN
// does the same job.
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";
import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, type ConnectRouter, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { StaticFile, StaticSite } from "./static-site.js";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

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

export function createHttpHandler(routes: HttpRoutes, opts: HttpListenerOptions): Handler {
  // Errors thrown by handlers (domain, store) become typed statuses, exactly as on the grpc-js listener.
  const mapErrors: Interceptor = (next) => async (req) => {
    try {
      return await next(req);
    } catch (e) {
      throw opts.mapError(e);
    }
  };
  const connect = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      for (const { service, impl } of routes.services) router.service(service, impl);
    },
    readMaxBytes: opts.readMaxBytes,
    jsonOptions: { ignoreUnknownFields: false },
    interceptors: [mapErrors],
    shutdownSignal: opts.shutdown,
    fallback: (req, res) => {
      void extras(req, res);
    },
  });
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
  return connect as Handler;
}

export interface HttpListener {
  server: net.Server;
  close(): Promise<void>;
}

/** Creates (does not listen) a server that speaks HTTP/1.1 and HTTP/2 on one port. */
export function createHttpListener(handler: Handler, tls?: { cert: Buffer; key: Buffer }): HttpListener {
  if (tls) {
    const server = http2.createSecureServer({ ...tls, allowHTTP1: true }, handler);
    return { server, close: gracefulClose(server, server) };
  }
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler);
  const server = net.createServer((socket) => {
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
