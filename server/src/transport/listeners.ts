// Both listeners around one set of service implementations. Built without listening; listen() binds
// (port 0 picks a free port) and shutdown() stops them gracefully.
import { setMaxListeners } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import type { ConnectError, ServiceImpl } from "@connectrpc/connect";
import { addServiceToGrpc, type CallObserver, type RequestCheck, type WireCodecs } from "./grpc-adapter.js";
import { reflectionServices } from "./reflection.js";
import { file_health_v1_health, Health } from "../gen/health/v1/health_pb.js";
import { createHttpHandler, createHttpListener, type HttpListener, type HttpRoutes } from "./http.js";

/** A service and its implementation, as the listeners mount them; made by `serviceEntry`. */
export interface ServiceEntry {
  service: DescService;
  impl: ServiceImpl<DescService>;
  codecs?: WireCodecs;
}

/** Pairs `impl` with `service`, checked against each other here; the listeners need no more than the pair. */
export function serviceEntry<S extends DescService>(service: S, impl: ServiceImpl<S>, codecs?: WireCodecs): ServiceEntry {
  return { service, impl: impl as ServiceImpl<DescService>, codecs };
}

export interface ListenerOptions {
  services: ServiceEntry[];
  /** Proto files served by reflection. */
  files: DescFile[];
  mapError: (err: unknown) => ConnectError;
  /** Applied to every KeyMesh request on both listeners after decoding, before a handler runs. */
  checkRequest: RequestCheck;
  /** Told of every KeyMesh call either listener answers (metrics). */
  observeRpc?: CallObserver;
  maxMessageBytes: number;
  /** HTTP/2 keepalive pings on both listeners; KEEPALIVE by default. */
  keepalive?: Keepalive;
  tls?: { cert: Buffer; key: Buffer };
  healthz: HttpRoutes["healthz"];
  readyz: HttpRoutes["readyz"];
  metrics: HttpRoutes["metrics"];
  site: HttpRoutes["site"];
}

export interface BoundPorts {
  grpcPort: number;
  httpPort: number;
}

/** How often each HTTP/2 connection is pinged, and how long its peer has to answer before the connection is closed. */
export interface Keepalive {
  intervalMs: number;
  timeoutMs: number;
}

/** A client that stops answering pings (frozen, or gone without a FIN) is dropped within 80 s. */
const KEEPALIVE: Keepalive = { intervalMs: 60_000, timeoutMs: 20_000 };

/**
 * grpc.health.v1 service name that is SERVING while the database is reachable. The server as a whole
 * ("") and each KeyMesh service stay SERVING through an outage, as lending goes on from memory.
 */
export const DATABASE_HEALTH_SERVICE = "keymesh.database";

class PortInUseError extends Error {
  constructor(readonly address: string) {
    super(`cannot listen on ${address}: address already in use`);
    this.name = "PortInUseError";
  }
}

export class Listeners {
  readonly grpc: grpc.Server;
  private readonly http: HttpListener;
  private readonly health = new HealthImplementation();
  private serving = false;
  private databaseReachable = true;
  private readonly shutdownController = new AbortController();

  constructor(private readonly opts: ListenerOptions) {
    const shutdown = this.shutdownController.signal;
    // Every call in flight that waits or streams listens for shutdown; there is no leak to warn about.
    setMaxListeners(0, shutdown);
    const keepalive = opts.keepalive ?? KEEPALIVE;
    this.grpc = new grpc.Server({
      "grpc.max_receive_message_length": opts.maxMessageBytes,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.keepalive_time_ms": keepalive.intervalMs,
      "grpc.keepalive_timeout_ms": keepalive.timeoutMs,
      // No channelz service is served, so its per-call and per-message bookkeeping would be pure cost.
      "grpc.enable_channelz": 0,
    });
    for (const { service, impl, codecs } of opts.services) {
      addServiceToGrpc(this.grpc, service, impl, { mapError: opts.mapError, shutdown, codecs, checkRequest: opts.checkRequest, observe: opts.observeRpc });
    }
    this.health.addToServer(this.grpc);
    const described = [...opts.services.map((s) => s.service), Health];
    for (const { service, impl } of reflectionServices(described, [...opts.files, file_health_v1_health])) {
      addServiceToGrpc(this.grpc, service, impl, { mapError: opts.mapError, shutdown });
    }
    const handler = createHttpHandler(
      { services: opts.services, healthz: opts.healthz, readyz: opts.readyz, metrics: opts.metrics, site: opts.site },
      { readMaxBytes: opts.maxMessageBytes, shutdown, mapError: opts.mapError, checkRequest: opts.checkRequest, observe: opts.observeRpc },
    );
    this.http = createHttpListener(handler, { tls: opts.tls, keepalive });
    this.setServing(false);
  }

  /** grpc.health.v1 for the server as a whole and for each KeyMesh service: SERVING from start until shutdown. */
  setServing(serving: boolean): void {
    this.serving = serving;
    const status = serving ? "SERVING" : "NOT_SERVING";
    this.health.setStatus("", status);
    for (const { service } of this.opts.services) this.health.setStatus(service.typeName, status);
    this.reportDatabase();
  }

  /** grpc.health.v1 for DATABASE_HEALTH_SERVICE: SERVING while serving and the database answers. */
  setDatabaseReachable(reachable: boolean): void {
    this.databaseReachable = reachable;
    this.reportDatabase();
  }

  private reportDatabase(): void {
    this.health.setStatus(DATABASE_HEALTH_SERVICE, this.serving && this.databaseReachable ? "SERVING" : "NOT_SERVING");
  }

  async listen(host: string, grpcPort: number, httpPort: number): Promise<BoundPorts> {
    const creds = this.opts.tls
      ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: this.opts.tls.cert, private_key: this.opts.tls.key }])
      : grpc.ServerCredentials.createInsecure();
    const grpcAddress = host.includes(":") ? `[${host}]:${grpcPort}` : `${host}:${grpcPort}`;
    const boundGrpc = await new Promise<number>((resolve, reject) =>
      this.grpc.bindAsync(grpcAddress, creds, (err, port) =>
        err ? reject(/in use|EADDRINUSE|No address added/i.test(err.message) ? new PortInUseError(grpcAddress) : err) : resolve(port),
      ),
    );
    const boundHttp = await new Promise<number>((resolve, reject) => {
      const server = this.http.server;
      const onError = (err: NodeJS.ErrnoException) =>
        reject(err.code === "EADDRINUSE" ? new PortInUseError(`${host}:${httpPort}`) : err);
      server.once("error", onError);
      server.listen(httpPort, host, () => {
        server.off("error", onError);
        resolve((server.address() as { port: number }).port);
      });
    });
    return { grpcPort: boundGrpc, httpPort: boundHttp };
  }

  /** Stops accepting, ends open streams with a clean status, and waits up to `graceMs` for calls to finish. */
  async shutdown(graceMs: number): Promise<void> {
    this.setServing(false);
    this.shutdownController.abort();
    const grpcDone = new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.grpc.forceShutdown();
        resolve();
      }, graceMs);
      force.unref();
      this.grpc.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    await Promise.all([grpcDone, this.http.close()]);
  }
}
