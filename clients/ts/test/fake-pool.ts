// An in-memory KeyPoolService (connect's router transport) that lends keys in order, records
// every call, and lets a test push revocations and wait for renewals.
import { create } from "@bufbuild/protobuf";
import { durationFromMs as dur } from "../src/duration.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createRouterTransport, type ServiceImpl } from "@connectrpc/connect";
import { createKeyMeshClient, type KeyMeshClient } from "../src/index.js";
import { ErrorDetailSchema, ErrorReason } from "../src/gen/keymesh/v1/common_pb.js";
import {
  type AcquireRequest,
  type KeepAliveRequest,
  type KeepAliveResponse,
  KeepAliveResponseSchema,
  KeyPoolService,
  type MarkFailedRequest,
  type MarkRateLimitedRequest,
  type ReleaseRequest,
} from "../src/gen/keymesh/v1/pool_pb.js";

export type Ended =
  | { kind: "release"; req: ReleaseRequest }
  | { kind: "markFailed"; req: MarkFailedRequest }
  | { kind: "markRateLimited"; req: MarkRateLimitedRequest };

/** A queue whose consumers wait for the next item. */
export class Channel<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiters: ((v: T) => void)[] = [];
  push(v: T) {
    const w = this.#waiters.shift();
    if (w) w(v);
    else this.#items.push(v);
  }
  next(timeoutMs = 5_000): Promise<T> {
    const v = this.#items.shift();
    if (v !== undefined) return Promise.resolve(v);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("timed out waiting")), timeoutMs);
      this.#waiters.push((x) => {
        clearTimeout(timer);
        resolve(x);
      });
    });
  }
  async *[Symbol.asyncIterator]() {
    for (;;) yield await this.next(60_000);
  }
}

export class FakePool {
  ttlMs = 60_000;
  renewIntervalMs = 5;
  keepAliveError: ConnectError | undefined;
  /** When set, every renewal is answered "gone: expired". */
  refuse = false;
  /** When set, Release fails with it. */
  releaseError: ConnectError | undefined;
  /** KeepAlive streams opened. */
  streams = 0;
  acquires: AcquireRequest[] = [];
  ended = new Channel<Ended>();
  renewals = new Channel<string>();
  #revocations = new Set<Channel<string>>();
  #seq = 0;

  constructor(readonly keys: string[]) {}

  warnings: string[] = [];

  client(): KeyMeshClient {
    const transport = createRouterTransport(({ service }) => service(KeyPoolService, this.impl()));
    return createKeyMeshClient({ baseUrl: "http://in-memory", transport, logger: { warn: (msg: string) => this.warnings.push(msg) } });
  }

  /** Pushes "gone: revoked" for the lease on every open KeepAlive stream. */
  revoke(leaseId: string) {
    for (const ch of this.#revocations) ch.push(leaseId);
  }

  async awaitRenewals(leaseId: string, n: number) {
    for (let seen = 0; seen < n; ) if ((await this.renewals.next()) === leaseId) seen++;
  }

  impl(): ServiceImpl<typeof KeyPoolService> {
    return {
      acquire: (req) => {
        this.acquires.push(req);
        const keyId = this.keys.find((k) => !req.excludeKeyIds.includes(k));
        if (keyId === undefined) {
          throw new ConnectError("no key available", Code.ResourceExhausted, undefined, [
            { desc: ErrorDetailSchema, value: { reason: ErrorReason.NO_KEY_AVAILABLE, retryAfter: dur(1000) } },
          ]);
        }
        return {
          leaseId: `lease-${++this.#seq}`,
          key: `sk-secret-${keyId}`,
          keyId,
          keyLabel: `label-${keyId}`,
          keyMetadata: { base_url: "http://127.0.0.1:1/v1" },
          pool: req.pool,
          expiresAt: timestampFromMs(Date.now() + this.ttlMs),
          ttl: dur(this.ttlMs),
          renewInterval: dur(this.renewIntervalMs),
        };
      },
      release: (req) => {
        this.ended.push({ kind: "release", req });
        if (this.releaseError) throw this.releaseError;
        return {};
      },
      markFailed: (req) => {
        this.ended.push({ kind: "markFailed", req });
        return { classifiedAs: req.reason };
      },
      markRateLimited: (req) => {
        this.ended.push({ kind: "markRateLimited", req });
        return {};
      },
      renewLease: () => {
        throw new ConnectError("unused", Code.Unimplemented);
      },
      keepAlive: (reqs, ctx) => this.#keepAlive(reqs, ctx.signal),
    };
  }

  async *#keepAlive(reqs: AsyncIterable<KeepAliveRequest>, signal: AbortSignal): AsyncGenerator<KeepAliveResponse> {
    this.streams++;
    if (this.keepAliveError) throw this.keepAliveError;
    const out = new Channel<KeepAliveResponse | null>();
    const revocations = new Channel<string>();
    this.#revocations.add(revocations);
    (async () => {
      for await (const id of revocations) {
        out.push(create(KeepAliveResponseSchema, { leaseId: id, result: { case: "gone", value: { reason: ErrorReason.LEASE_REVOKED, message: "key disabled by operator" } } }));
      }
    })().catch(() => {});
    (async () => {
      for await (const req of reqs) {
        if (this.refuse) {
          out.push(create(KeepAliveResponseSchema, { leaseId: req.leaseId, result: { case: "gone", value: { reason: ErrorReason.LEASE_EXPIRED, message: "expired" } } }));
          continue;
        }
        out.push(
          create(KeepAliveResponseSchema, {
            leaseId: req.leaseId,
            result: { case: "renewed", value: { expiresAt: timestampFromMs(Date.now() + this.ttlMs), ttl: dur(this.ttlMs), renewInterval: dur(this.renewIntervalMs) } },
          }),
        );
        this.renewals.push(req.leaseId);
      }
      out.push(null);
    })().catch(() => out.push(null));
    try {
      while (!signal.aborted) {
        const next = await out.next(60_000);
        if (next === null) return;
        yield next;
      }
    } finally {
      this.#revocations.delete(revocations);
    }
  }
}
