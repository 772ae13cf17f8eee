import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { ErrorReason } from "./gen/keymesh/v1/common_pb.js";
import { type KeepAliveRequest, KeepAliveRequestSchema, KeyPoolService } from "./gen/keymesh/v1/pool_pb.js";
import { durationFromMs, msFromDuration } from "./duration.js";
import { LeaseGoneError } from "./errors.js";
import { type Lease, leaseState } from "./lease.js";

interface KeptLease {
  lease: Lease;
  request: KeepAliveRequest;
  dueMs: number;
  gone: (g: LeaseGoneError) => void;
}

/** An async iterable of stream requests that the sender pushes into. */
class RequestQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  push(item: T): void {
    if (this.#ended) return;
    this.#items.push(item);
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      while (this.#items.length > 0) yield this.#items.shift()!;
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }
}

/**
 * Renews every lease a client holds over one KeepAlive stream (etcd's LeaseKeepAlive model), open
 * only while some lease is held. A lease is renewed at once when it joins or the stream reopens, so
 * the server can push its revocation, then every renew interval.
 */
export class Keeper {
  readonly #pool: Client<typeof KeyPoolService>;
  readonly #leases = new Map<string, KeptLease>();
  #running = false;
  #wake: (() => void) | undefined;

  constructor(pool: Client<typeof KeyPoolService>) {
    this.#pool = pool;
  }

  /** Renews lease until the returned stop is called; gone is called instead when it ends early. */
  keep(lease: Lease, ttlMs: number | undefined, gone: (g: LeaseGoneError) => void): () => void {
    const request = create(KeepAliveRequestSchema, { leaseId: lease.id, ttl: ttlMs ? durationFromMs(ttlMs) : undefined });
    this.#leases.set(lease.id, { lease, request, dueMs: Date.now(), gone });
    if (!this.#running) {
      this.#running = true;
      void this.#run();
    }
    this.#poke();
    return () => {
      this.#leases.delete(lease.id);
      this.#poke();
    };
  }

  #poke(): void {
    this.#wake?.();
  }

  /** Resolves after ms, or earlier when a lease joins or leaves or the stream breaks. */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, Math.max(ms, 0));
      this.#wake = done;
    });
  }

  #end(id: string, g: LeaseGoneError): void {
    const kept = this.#leases.get(id);
    this.#leases.delete(id);
    kept?.gone(g);
  }

  async #run(): Promise<void> {
    for (;;) {
      await this.#serve();
      if (this.#leases.size === 0) {
        this.#running = false;
        return;
      }
      await this.#pause(this.#expire());
    }
  }

  /** Ends leases that can no longer be renewed in time; returns how long to wait before reopening. */
  #expire(): number {
    let pause = 1_000;
    for (const [id, kept] of [...this.#leases]) {
      if (Date.now() > leaseState(kept.lease).deadlineMs) {
        this.#end(id, new LeaseGoneError(ErrorReason.LEASE_EXPIRED, "no renewal succeeded before expiry"));
      } else {
        pause = Math.min(pause, leaseState(kept.lease).renewIntervalMs / 2);
      }
    }
    return pause;
  }

  /** Runs one stream until it breaks or no lease is left. */
  async #serve(): Promise<void> {
    const abort = new AbortController();
    const requests = new RequestQueue<KeepAliveRequest>();
    for (const kept of this.#leases.values()) kept.dueMs = 0; // a new stream must renew every lease
    let broken = false;
    const reader = (async () => {
      for await (const resp of this.#pool.keepAlive(requests, { signal: abort.signal, timeoutMs: 0 })) {
        const kept = this.#leases.get(resp.leaseId);
        if (!kept) continue;
        if (resp.result.case === "renewed") {
          leaseState(kept.lease).renewed(msFromDuration(resp.result.value.ttl), msFromDuration(resp.result.value.renewInterval));
        } else if (resp.result.case === "gone") {
          this.#end(resp.leaseId, new LeaseGoneError(resp.result.value.reason, resp.result.value.message));
        }
      }
    })()
      .catch(() => undefined)
      .finally(() => {
        broken = true;
        this.#poke();
      });
    while (!broken) {
      const { due, nextMs } = this.#schedule(Date.now());
      if (this.#leases.size === 0) break;
      for (const request of due) requests.push(request);
      await this.#pause(nextMs - Date.now());
    }
    requests.end();
    abort.abort();
    await reader;
  }

  /** The renewals due now (ending leases already past expiry) and when the next one falls due. */
  #schedule(nowMs: number): { due: KeepAliveRequest[]; nextMs: number } {
    const due: KeepAliveRequest[] = [];
    let nextMs = nowMs + 60_000;
    for (const [id, kept] of [...this.#leases]) {
      if (nowMs > leaseState(kept.lease).deadlineMs) {
        this.#end(id, new LeaseGoneError(ErrorReason.LEASE_EXPIRED, "no renewal answered before expiry"));
        continue;
      }
      if (kept.dueMs <= nowMs) {
        due.push(kept.request);
        kept.dueMs = nowMs + leaseState(kept.lease).renewIntervalMs;
      }
      nextMs = Math.min(nextMs, kept.dueMs);
    }
    return { due, nextMs };
  }
}
