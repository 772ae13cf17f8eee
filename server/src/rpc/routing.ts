// Routing between replicas (DESIGN "Replicas"): a call about a pool this replica serves runs here; one about
// a pool another replica owns is forwarded to it over gRPC, once (a forwarded call carries keymesh-forwarded
// and is never forwarded again); with no owner to forward to, it is UNAVAILABLE with POOL_NOT_SERVED and a
// retry-after. Every answer about a pool names its owner in the keymesh-owner response header. A KeepAlive
// stream renews each lease where its pool is served: here, or over a KeepAlive stream to the owner.
import { create, fromBinary, toBinary, type DescMethod, type DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, createClient, type Client, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { ErrorDetailSchema, ErrorReason } from "../gen/keymesh/v1/common_pb.js";
import { KeyPoolService, type KeepAliveRequest } from "../gen/keymesh/v1/pool_pb.js";
import { Channel } from "./channel.js";
import { keymeshError } from "./errors.js";

const OWNER_HEADER = "keymesh-owner";
const FORWARDED_HEADER = "keymesh-forwarded";

/** What routing asks of the replica coordinator. */
export interface Placement {
  /** This replica's advertised address. */
  readonly address: string;
  serves(pool: string): boolean;
  /** The owner's address as last seen, undefined when no replica serves the pool. */
  ownerOf(pool: string): string | undefined;
  /** Whether the pool exists in the database as last seen. */
  knows(pool: string): boolean;
  /** Reads the pools' owners from the database again (a pool created on another replica since the last look). */
  locate(): Promise<void>;
  /** The other live replicas' addresses. */
  peers(): string[];
}

export interface RoutingDeps {
  placement: Placement;
  /** The pool a lease id names (unverified: the owner checks its signature), undefined when malformed. */
  leasePool: (leaseId: string) => string | undefined;
  /** Counts a forwarded call. */
  onForward?: (method: string) => void;
}

type AnyRequest = Record<string, unknown> & { pool?: unknown; name?: unknown; leaseId?: unknown; key?: { pool?: unknown } };

/** The pool a request is about, by method; undefined for calls about no single pool (ListPools, CreatePool). */
function poolOf(method: string, req: AnyRequest, leasePool: RoutingDeps["leasePool"]): string | undefined {
  switch (method) {
    case "createPool":
    case "listPools":
      return undefined;
    case "getPool":
    case "deletePool":
      return req.name as string;
    case "updatePool":
      return (req.pool as { name?: string } | undefined)?.name;
    case "updateKey":
      return req.key?.pool as string | undefined;
    case "release":
    case "markFailed":
    case "markRateLimited":
    case "renewLease":
    case "revokeLease":
      return leasePool(req.leaseId as string);
    default:
      return typeof req.pool === "string" && req.pool !== "" ? req.pool : undefined;
  }
}

const RETRY_AFTER_MS = 250;

function notServed(pool: string): ConnectError {
  return keymeshError(Code.Unavailable, ErrorReason.POOL_NOT_SERVED, `pool "${pool}" is not served by any replica right now: retry`, { retryAfterMs: RETRY_AFTER_MS });
}

/**
 * Clients of the other replicas, by address: grpc-js for forwarded unary calls (connect-node's client costs about
 * a millisecond a call more), Connect clients for the streams.
 */
class Peers {
  readonly #clients = new Map<string, Map<DescService, Client<DescService>>>();
  readonly #raw = new Map<string, grpc.Client>();

  raw(address: string): grpc.Client {
    let client = this.#raw.get(address);
    if (!client) {
      client = new grpc.Client(address, grpc.credentials.createInsecure());
      this.#raw.set(address, client);
    }
    return client;
  }

  close(): void {
    for (const client of this.#raw.values()) client.close();
    this.#raw.clear();
  }

  client<S extends DescService>(service: S, address: string): Client<S> {
    let byService = this.#clients.get(address);
    if (!byService) {
      byService = new Map();
      this.#clients.set(address, byService);
    }
    let client = byService.get(service);
    if (!client) {
      client = createClient(service, createGrpcTransport({ baseUrl: `http://${address}` }));
      byService.set(service, client);
    }
    return client as unknown as Client<S>;
  }
}

export class Router {
  readonly #placement: Placement;
  readonly #leasePool: RoutingDeps["leasePool"];
  readonly #onForward: NonNullable<RoutingDeps["onForward"]>;
  readonly #peers = new Peers();

  constructor(deps: RoutingDeps) {
    this.#placement = deps.placement;
    this.#leasePool = deps.leasePool;
    this.#onForward = deps.onForward ?? (() => {});
  }

  /** `impl` with every unary call routed to the pool's owner, and KeepAlive renewing through the owners. */
  wrap<S extends DescService>(service: S, impl: ServiceImpl<S>): ServiceImpl<S> {
    const out: Record<string, unknown> = {};
    const methods = impl as unknown as Record<string, (req: unknown, ctx: HandlerContext) => unknown>;
    for (const method of service.methods) {
      const local = methods[method.localName]!.bind(impl);
      if (method.methodKind === "unary") out[method.localName] = this.#unary(service, method, local);
      else if (service.typeName === KeyPoolService.typeName && method.localName === "keepAlive") {
        out[method.localName] = (reqs: AsyncIterable<KeepAliveRequest>, ctx: HandlerContext) => this.#keepAlive(reqs, ctx, local as never);
      } else if (method.methodKind === "server_streaming") {
        out[method.localName] = (req: unknown, ctx: HandlerContext) => this.#merged(service, method, req, ctx, local as never);
      } else out[method.localName] = local;
    }
    return out as unknown as ServiceImpl<S>;
  }

  #unary(service: DescService, method: DescMethod, local: (req: unknown, ctx: HandlerContext) => unknown) {
    const name = method.localName;
    const placement = this.#placement;
    const route = (pool: string, req: AnyRequest, ctx: HandlerContext): unknown => {
      // A pool the database does not have either is left to the handler: NOT_FOUND.
      if (placement.serves(pool) || !placement.knows(pool)) {
        ctx.responseHeader.set(OWNER_HEADER, placement.address);
        return local(req, ctx);
      }
      return this.#forward(service, method, pool, req, ctx, local);
    };
    return (req: AnyRequest, ctx: HandlerContext): unknown => {
      const pool = poolOf(name, req, this.#leasePool);
      if (pool === undefined) return local(req, ctx);
      if (placement.serves(pool)) {
        ctx.responseHeader.set(OWNER_HEADER, placement.address);
        return local(req, ctx);
      }
      if (placement.knows(pool)) return this.#forward(service, method, pool, req, ctx, local);
      return placement.locate().then(
        () => route(pool, req, ctx),
        () => route(pool, req, ctx),
      );
    };
  }

  async #forward(
    service: DescService,
    method: DescMethod,
    pool: string,
    req: unknown,
    ctx: HandlerContext,
    local: (req: unknown, ctx: HandlerContext) => unknown,
    located = false,
  ): Promise<unknown> {
    const owner = this.#placement.ownerOf(pool);
    // No owner as last seen: the pool may have been deleted or claimed since; look again once.
    if (owner === undefined && !located) {
      await this.#placement.locate().catch(() => undefined);
      if (this.#placement.serves(pool) || !this.#placement.knows(pool)) {
        ctx.responseHeader.set(OWNER_HEADER, this.#placement.address);
        return local(req, ctx);
      }
      return this.#forward(service, method, pool, req, ctx, local, true);
    }
    if (owner === undefined || owner === this.#placement.address || ctx.requestHeader.get(FORWARDED_HEADER) !== null) throw notServed(pool);
    ctx.responseHeader.set(OWNER_HEADER, owner);
    this.#onForward(method.name);
    try {
      return await this.#unaryOn(owner, service, method, req, ctx);
    } catch (e) {
      throw unreachable(e, owner);
    }
  }

  /** The call on `owner` over grpc-js, the caller's credentials and deadline with it; its error as the owner sent it. */
  #unaryOn(owner: string, service: DescService, method: DescMethod, req: unknown, ctx: HandlerContext): Promise<unknown> {
    const metadata = new grpc.Metadata();
    metadata.set(FORWARDED_HEADER, "1");
    const auth = ctx.requestHeader.get("authorization");
    if (auth) metadata.set("authorization", auth);
    const timeoutMs = ctx.timeoutMs();
    const options: grpc.CallOptions = timeoutMs === undefined ? {} : { deadline: Date.now() + Math.max(0, timeoutMs) };
    return new Promise((resolve, reject) => {
      this.#peers.raw(owner).makeUnaryRequest(
        `/${service.typeName}/${method.name}`,
        (message: unknown) => Buffer.from(toBinary(method.input, create(method.input, message as never))),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        req,
        metadata,
        options,
        (err, res) => (err ? reject(fromGrpcError(err)) : resolve(res)),
      );
    });
  }

  /** Closes the connections to the other replicas (graceful stop). */
  close(): void {
    this.#peers.close();
  }

  /**
   * A server stream (WatchEvents) merged from this replica and every other live one: each streams what happens in
   * the pools it owns, so together they cover every pool. A peer that goes away leaves the merge.
   */
  async *#merged(
    service: DescService,
    method: DescMethod,
    req: unknown,
    ctx: HandlerContext,
    local: (req: unknown, ctx: HandlerContext) => AsyncIterable<unknown>,
  ): AsyncGenerator<unknown> {
    const peers = ctx.requestHeader.get(FORWARDED_HEADER) === null ? this.#placement.peers() : [];
    if (peers.length === 0) {
      yield* local(req, ctx);
      return;
    }
    const out = new Channel<unknown>();
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    let failure: unknown;
    let open = 1 + peers.length;
    const finished = () => {
      if (--open === 0) out.close();
    };
    void (async () => {
      try {
        for await (const res of local(req, ctx)) out.push(res);
      } catch (e) {
        failure = e;
        out.close();
      } finally {
        finished();
      }
    })();
    for (const peer of peers) {
      const client = this.#peers.client(service, peer) as unknown as Record<string, (req: unknown, opts: object) => AsyncIterable<unknown>>;
      void (async () => {
        try {
          for await (const res of client[method.localName]!(req, { headers: this.#forwardHeaders(ctx), signal: stop.signal })) out.push(res);
        } catch {
          // The peer went away or refused: its pools' events are missed, the rest go on.
        } finally {
          finished();
        }
      })();
    }
    try {
      yield* out.drain(ctx.signal);
      if (failure !== undefined) throw failure;
    } finally {
      stop.abort();
      ctx.signal.removeEventListener("abort", onAbort);
    }
  }

  #forwardHeaders(ctx: HandlerContext): Record<string, string> {
    const headers: Record<string, string> = { [FORWARDED_HEADER]: "1" };
    const auth = ctx.requestHeader.get("authorization");
    if (auth) headers.authorization = auth;
    return headers;
  }

  /**
   * Leases of pools served here renew in the local stream; each other lease goes to a KeepAlive stream of this
   * call's own on its pool's owner, whose answers (renewals, and revocations it pushes) come back on this one.
   * When an owner cannot be reached the stream ends UNAVAILABLE: the client reconnects and re-sends.
   */
  async *#keepAlive(
    requests: AsyncIterable<KeepAliveRequest>,
    ctx: HandlerContext,
    local: (reqs: AsyncIterable<KeepAliveRequest>, ctx: HandlerContext) => AsyncIterable<unknown>,
  ): AsyncGenerator<unknown> {
    const placement = this.#placement;
    const forwarded = ctx.requestHeader.get(FORWARDED_HEADER) !== null;
    const here = new Channel<KeepAliveRequest>();
    const out = new Channel<unknown>();
    const upstreams = new Map<string, Channel<KeepAliveRequest>>();
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    let failure: unknown;
    const fail = (e: unknown) => {
      failure ??= e;
      out.close();
    };
    let open = 1;
    const finished = () => {
      if (--open === 0) out.close();
    };
    const upstream = (owner: string): Channel<KeepAliveRequest> => {
      let requestsToOwner = upstreams.get(owner);
      if (requestsToOwner) return requestsToOwner;
      const channel = new Channel<KeepAliveRequest>();
      upstreams.set(owner, channel);
      open++;
      this.#onForward("KeepAlive");
      const client = this.#peers.client(KeyPoolService, owner);
      void (async () => {
        try {
          for await (const res of client.keepAlive(channel, { headers: this.#forwardHeaders(ctx), signal: stop.signal })) out.push(res);
        } catch (e) {
          if (!stop.signal.aborted) fail(unreachable(e, owner));
        } finally {
          finished();
        }
      })();
      return channel;
    };
    const closeInputs = () => {
      here.close();
      for (const channel of upstreams.values()) channel.close();
    };
    void (async () => {
      try {
        for await (const req of requests) {
          const pool = this.#leasePool(req.leaseId);
          if (pool === undefined || placement.serves(pool) || !placement.knows(pool)) {
            here.push(req);
            continue;
          }
          // A stream from another replica is never sent on: the lease's pool moved, and its client reconnects.
          const owner = placement.ownerOf(pool);
          if (forwarded || owner === undefined || owner === placement.address) return fail(notServed(pool));
          upstream(owner).push(req);
        }
      } catch (e) {
        fail(e);
      } finally {
        closeInputs();
      }
    })();
    void (async () => {
      try {
        for await (const res of local(here, ctx)) out.push(res);
      } catch (e) {
        fail(e);
      } finally {
        finished();
      }
    })();
    try {
      yield* out.drain(ctx.signal);
      if (failure !== undefined) throw failure;
    } finally {
      stop.abort();
      ctx.signal.removeEventListener("abort", onAbort);
      closeInputs();
    }
  }
}

/** A grpc-js failure as a ConnectError, with the ErrorDetail the owner sent. */
function fromGrpcError(err: grpc.ServiceError): ConnectError {
  const trailer = new Headers({ "grpc-status": String(err.code), "grpc-message": encodeURIComponent(err.details ?? "") });
  const details = err.metadata?.get("grpc-status-details-bin")[0];
  if (details instanceof Buffer) trailer.set("grpc-status-details-bin", details.toString("base64"));
  return findTrailerError(trailer) ?? new ConnectError(err.details ?? "", Code.Unknown);
}

/**
 * The owner's own answer passes through, its code, message and details without the metadata of its transport
 * (its status trailers among them, which are this answer's own to write); a failure to reach it is OWNER_UNREACHABLE.
 */
function unreachable(e: unknown, owner: string): ConnectError {
  const err = ConnectError.from(e);
  if (err.findDetails(ErrorDetailSchema).length > 0) {
    const answer = new ConnectError(err.rawMessage, err.code, undefined, undefined, e);
    answer.details = err.details;
    return answer;
  }
  return keymeshError(Code.Unavailable, ErrorReason.OWNER_UNREACHABLE, `the pool's owner (${owner}) could not be reached: retry`, { retryAfterMs: RETRY_AFTER_MS, cause: e });
}
