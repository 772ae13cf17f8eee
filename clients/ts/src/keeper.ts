import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { type KeepAliveRequest, KeepAliveRequestSchema, KeyPoolService } from "./gen/keymesh/v1/pool_pb.js";
import { durationFromMs, msFromDuration } from "./duration.js";
import { errorReasonName, LeaseGoneError } from "./errors.js";
import { type Lease, leaseState } from "./lease.js";
import { Renewals } from "./renewals.js";

interface KeptLease {
  lease: Lease;
  ttlMs: number | undefined;
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
 * Renews every lease a client holds over one KeepAlive stream (etcd's LeaseKeepAlive model), on the
 * schedule of Renewals: nothing when a lease joins, a stream only once a renewal falls due, closed
 * when no lease is left.
 */
export class Keeper {
  readonly #pool: Client<typeof KeyPoolService>;
  readonly #renewals = new Renewals<KeptLease>((kept, reason, message) => kept.gone(new LeaseGoneError(reason, message)));
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stream: { requests: RequestQueue<KeepAliveRequest>; abort: AbortController } | undefined;

  constructor(pool: Client<typeof KeyPoolService>) {
    this.#pool = pool;
  }

  /** Renews lease until the returned stop is called; gone is called instead when it ends early. */
  keep(lease: Lease, ttlMs: number | undefined, gone: (g: LeaseGoneError) => void): () => void {
    const state = leaseState(lease);
    const now = Date.now();
    if (this.#renewals.hold(lease.leaseId, { lease, ttlMs, gone }, state.deadlineMs - now, state.renewIntervalMs, now)) this.#drive();
    return () => {
      if (this.#renewals.release(lease.leaseId)) this.#drive();
    };
  }

  #drive(): void {
    const now = Date.now();
    const step = this.#renewals.step(now);
    if (step.close || step.open) this.#closeStream();
    if (step.open) this.#openStream();
    for (const kept of step.send) {
      this.#stream?.requests.push(create(KeepAliveRequestSchema, { leaseId: kept.lease.leaseId, ttl: kept.ttlMs ? durationFromMs(kept.ttlMs) : undefined }));
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (step.wakeAtMs !== null) {
      // Unreferenced: a pending renewal alone does not keep the process alive.
      this.#timer = setTimeout(() => this.#drive(), Math.max(step.wakeAtMs - now, 0));
      this.#timer.unref?.();
    }
  }

  #closeStream(): void {
    this.#stream?.requests.end();
    this.#stream?.abort.abort();
    this.#stream = undefined;
  }

  #openStream(): void {
    const stream = { requests: new RequestQueue<KeepAliveRequest>(), abort: new AbortController() };
    this.#stream = stream;
    void (async () => {
      for await (const resp of this.#pool.keepAlive(stream.requests, { signal: stream.abort.signal, timeoutMs: 0 })) {
        if (resp.result.case === "renewed") {
          const { ttl, renewInterval } = resp.result.value;
          this.#renewals.renewed(resp.leaseId, msFromDuration(ttl), msFromDuration(renewInterval), Date.now());
          const kept = this.#renewals.get(resp.leaseId);
          if (kept) leaseState(kept.lease).renewed(msFromDuration(ttl), msFromDuration(renewInterval));
        } else if (resp.result.case === "gone") {
          this.#renewals.gone(resp.leaseId, errorReasonName(resp.result.value.reason), resp.result.value.message);
          this.#drive();
        }
      }
    })()
      .catch(() => undefined)
      .finally(() => {
        if (this.#stream !== stream) return; // closed on purpose
        this.#stream = undefined;
        this.#renewals.broken(Date.now());
        this.#drive();
      });
  }
}
