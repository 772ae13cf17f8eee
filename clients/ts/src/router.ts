// A Transport over several KeyMesh endpoints: each unary call goes to its pool's owner or the current
// endpoint and fails over on UNAVAILABLE (endpoints.ts), streams go to the current endpoint.
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { DescMessage, DescMethodStreaming, DescMethodUnary, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, createContextKey, createContextValues, type StreamResponse, type Transport, type UnaryResponse } from "@connectrpc/connect";
import { type Answer, Endpoints, OWNER_HEADER, withFailover } from "./endpoints.js";
import { sleep } from "./lease.js";

/** The pool a call is about when its request does not name it (a lease's Release, MarkFailed, …). */
const POOL_OF_CALL = createContextKey<string | undefined>(undefined, { description: "keymesh pool of the call" });

/** Pins a connection to one resolved address of a host name (TLS and :authority keep the name). */
export interface PinnedAddress {
  address: string;
  family: number;
}

export interface RouterOptions {
  /** The endpoints as given: URLs whose host is an address or a name (all its addresses become endpoints). */
  seeds: URL[];
  /** A transport to one endpoint; pinned is set for an address a name resolved to. */
  connect(url: URL, pinned?: PinnedAddress): Transport;
  /** Whether to follow a keymesh-owner header naming this host:port. */
  mayFollow(hostPort: string): boolean;
  /** The deadline of a unary call that sets none. */
  defaultTimeoutMs: number;
  /** Resolves a host name to its addresses (default: the system resolver, dns.lookup). */
  lookup?: (hostname: string) => Promise<PinnedAddress[]>;
  backoffBaseMs?: number;
  backoffCapMs?: number;
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s/@:[\]]+):\d{1,5}$/;

export class RoutingTransport implements Transport {
  readonly #opts: RouterOptions;
  readonly #transports = new Map<string, Transport>();
  readonly #poolContexts = new Map<string, ContextValues>();
  readonly #policy: { backoffBaseMs: number; backoffCapMs: number };
  #endpoints: Endpoints | undefined;
  #resolving: Promise<Endpoints> | undefined;
  #refreshing: Promise<void> | undefined;

  constructor(opts: RouterOptions) {
    this.#opts = opts;
    this.#policy = { backoffBaseMs: opts.backoffBaseMs ?? 100, backoffCapMs: opts.backoffCapMs ?? 5_000 };
  }

  /** Call options' contextValues saying that a call is about pool (reused: one object per pool). */
  poolContext(pool: string): ContextValues {
    let values = this.#poolContexts.get(pool);
    if (!values) this.#poolContexts.set(pool, (values = createContextValues().set(POOL_OF_CALL, pool)));
    return values;
  }

  async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<UnaryResponse<I, O>> {
    const endpoints = this.#endpoints ?? (await this.#resolve());
    const named = (input as { pool?: unknown }).pool;
    const pool = contextValues?.get(POOL_OF_CALL) ?? (typeof named === "string" ? named : undefined);
    const deadline = Date.now() + (timeoutMs !== undefined && timeoutMs > 0 ? timeoutMs : this.#opts.defaultTimeoutMs);
    return withFailover(
      endpoints,
      pool,
      deadline,
      {
        attempt: (endpoint, remainingMs) => this.#transport(endpoint).unary(method, signal, Math.max(remainingMs, 1), header, input, contextValues),
        answer: (outcome) => (outcome.ok ? { unavailable: false, owner: this.#owner(outcome.value.header) } : this.#answerOfError(outcome.error)),
        now: Date.now,
        sleep: (ms) => sleep(ms, signal),
        random: Math.random,
        refresh: () => this.#refresh(endpoints),
      },
      this.#policy,
    );
  }

  async stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<StreamResponse<I, O>> {
    const endpoints = this.#endpoints ?? (await this.#resolve());
    const endpoint = endpoints.current;
    // A stream the caller did not end itself moves the current endpoint on (failover.json rule 7).
    const ended = () => {
      if (!signal?.aborted) endpoints.streamEnded(endpoint);
    };
    let response: StreamResponse<I, O>;
    try {
      response = await this.#transport(endpoint).stream(method, signal, timeoutMs, header, input, contextValues);
    } catch (e) {
      ended();
      throw e;
    }
    return { ...response, message: watchEnd(response.message, ended) };
  }

  #owner(header: Headers): string | null {
    const owner = header.get(OWNER_HEADER);
    return owner !== null && HOST_PORT.test(owner) && this.#opts.mayFollow(owner) ? owner : null;
  }

  #answerOfError(error: unknown): Answer {
    if (!(error instanceof ConnectError)) return { unavailable: false, owner: null };
    return { unavailable: error.code === Code.Unavailable || unavailableInGrpc(error), owner: this.#owner(error.metadata) };
  }

  #transport(endpoint: string): Transport {
    let transport = this.#transports.get(endpoint);
    if (!transport) {
      // An owner a replica named: same scheme and options as the endpoints given.
      transport = this.#opts.connect(new URL(`${this.#opts.seeds[0]!.protocol}//${endpoint}`));
      this.#transports.set(endpoint, transport);
    }
    return transport;
  }

  #resolve(): Promise<Endpoints> {
    this.#resolving ??= this.#resolveSeeds().then(
      (list) => (this.#endpoints = new Endpoints(list)),
      (e: unknown) => {
        this.#resolving = undefined;
        throw new ConnectError(`keymesh: cannot resolve the endpoints: ${String(e)}`, Code.Unavailable, undefined, undefined, e);
      },
    );
    return this.#resolving;
  }

  /** Resolves the host names again (when every endpoint said UNAVAILABLE: the addresses may have moved); keeps the list on failure. */
  #refresh(endpoints: Endpoints): Promise<void> {
    if (this.#opts.seeds.every((url) => isIP(url.hostname.replace(/^\[|\]$/g, "")))) return Promise.resolve();
    this.#refreshing ??= this.#resolveSeeds().then(
      (list) => endpoints.replace(list),
      () => undefined,
    ).finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  async #resolveSeeds(): Promise<string[]> {
    const list: string[] = [];
    const lookupAll = this.#opts.lookup ?? ((hostname: string) => lookup(hostname, { all: true }));
    const add = (key: string, make: () => Transport) => {
      if (!this.#transports.has(key)) this.#transports.set(key, make());
      if (!list.includes(key)) list.push(key);
    };
    for (const url of this.#opts.seeds) {
      const host = url.hostname.replace(/^\[|\]$/g, "");
      const port = url.port || (url.protocol === "https:" ? "443" : "80");
      if (isIP(host)) {
        add(url.port ? url.host : `${url.host}:${port}`, () => this.#opts.connect(url));
        continue;
      }
      for (const a of await lookupAll(host)) {
        add(a.family === 6 ? `[${a.address}]:${port}` : `${a.address}:${port}`, () => this.#opts.connect(url, a));
      }
    }
    return list;
  }
}

/**
 * The HTTP/2 failures that gRPC reports as UNAVAILABLE and connect-node as INTERNAL: a stream the server
 * refused (never processed, e.g. a replica stopping), a stream on a session that received GOAWAY, and a
 * session that closed with an error (the connection is gone).
 */
function unavailableInGrpc(error: ConnectError): boolean {
  for (let e: unknown = error.cause; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (code === "ERR_HTTP2_GOAWAY_SESSION" || code === "ERR_HTTP2_SESSION_ERROR") return true;
    if (code === "ERR_HTTP2_STREAM_ERROR" && e.message.includes("NGHTTP2_REFUSED_STREAM")) return true;
  }
  return false;
}

/** Passes a stream's messages through and calls ended when it finishes or fails (not when the reader stops early). */
async function* watchEnd<T>(messages: AsyncIterable<T>, ended: () => void): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (e) {
    ended();
    throw e;
  }
  ended();
}
