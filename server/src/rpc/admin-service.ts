// PoolAdminService: maps requests (field masks included) to the Admin service, which writes through to
// the store, and answers reads from the engine.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { PoolEngine, PoolWithCount } from "../domain/engine.js";
import { invalidArgument } from "../domain/errors.js";
import { mask } from "../domain/mask.js";
import { NO_LIMITS } from "../domain/config.js";
import type { KeyConfig, KeyInput, Limits, PoolConfig } from "../domain/types.js";
import type {
  AddKeyRequest,
  CreatePoolRequest,
  DeletePoolRequest,
  DisableKeyRequest,
  EnableKeyRequest,
  GetKeyRequest,
  GetPoolRequest,
  GetPoolStatsRequest,
  ListKeysRequest,
  ListAuditEntriesRequest,
  ListLeasesRequest,
  PoolAdminService,
  RemoveKeyRequest,
  RevokeLeaseRequest,
  UpdateKeyRequest,
  UpdatePoolRequest,
  WatchEventsRequest,
} from "../gen/keymesh/v1/admin_pb.js";
import { KeyState } from "../gen/keymesh/v1/admin_pb.js";
import { auditEntryToProto, dur, ts, eventToProto, keyToProto, leaseToProto, limitsFromProto, poolFieldsFromProto, poolToProto, statsToProto } from "./convert.js";
import type { Admin } from "../service/admin.js";
import type { AuditTrail } from "../store/audit-trail.js";
import type { EventHub } from "./event-hub.js";
import { MAX_PAGE_SIZE, page, readToken, sortable, writeToken } from "./paging.js";
import type { Guard } from "./guard.js";

export interface AdminDeps {
  /** Reads. */
  engine: PoolEngine;
  /** Writes. */
  admin: Admin;
  /** The record of writes. */
  audit: Pick<AuditTrail, "list">;
  events: EventHub;
  guard: Guard;
  /** Every pool with its key count, from the database: with several replicas this one holds only its own. */
  listPools: () => Promise<PoolWithCount[]>;
  replicas: ReplicaView;
  now: () => number;
}

/** What the admin API shows of the replicas (service/replicas.ts). */
interface ReplicaView {
  /** This replica's address. */
  readonly address: string;
  termOf(pool: string): number | undefined;
  /** Whether the pool exists, held here or by another replica, as last read. */
  knows(pool: string): boolean;
  /** Reads the pools' owners again. */
  locate(): Promise<void>;
  /** The live members, read from the database now. */
  describe(): Promise<Array<{ id: string; address: string; heartbeatAgeMs: number; startedAt: number; pools: string[] }>>;
}

const poolPaths: Record<string, (keyof PoolConfig)[]> = {
  strategy: ["strategy"],
  min_ttl: ["minTtlMs"],
  max_ttl: ["maxTtlMs"],
  default_ttl: ["defaultTtlMs"],
  default_cooldown: ["defaultCooldownMs"],
  max_cooldown: ["maxCooldownMs"],
  description: ["description"],
  circuit_breaker: ["failureThreshold", "openDurationMs", "maxOpenDurationMs", "halfOpenProbes"],
  "circuit_breaker.failure_threshold": ["failureThreshold"],
  "circuit_breaker.open_duration": ["openDurationMs"],
  "circuit_breaker.max_open_duration": ["maxOpenDurationMs"],
  "circuit_breaker.half_open_probes": ["halfOpenProbes"],
  quota_groups: ["quotaGroups"],
  default_estimated_tokens: ["defaultEstimatedTokens"],
};

const keyPaths: Record<string, keyof KeyConfig> = {
  label: "label",
  weight: "weight",
  max_concurrency: "maxConcurrency",
  quota_group: "quotaGroup",
  limits: "limits",
  priority: "priority",
  metadata: "metadata",
  secret: "secret",
};

/** UpdateKey's paths into Key.limits: one limit changes, the others stay. */
const limitPaths: Record<string, keyof Limits> = {
  "limits.requests_per_minute": "requestsPerMinute",
  "limits.tokens_per_minute": "tokensPerMinute",
  "limits.requests_per_day": "requestsPerDay",
};
/** Audit entries are larger than list items elsewhere; a page holds fewer by default. */
const AUDIT_PAGE_SIZE = 100;

/** Field mask paths arrive in proto form ("max_ttl") over binary and in JSON form ("maxTtl") over Connect JSON. */
const snake = (path: string) => path.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

export class PoolAdminServiceImpl implements ServiceImpl<typeof PoolAdminService> {
  constructor(private readonly d: AdminDeps) {}

  async createPool(req: CreatePoolRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    if (!req.pool) throw invalidArgument("pool", "is required");
    const cfg = await this.d.admin.createPool(actor, { ...poolFieldsFromProto(req.pool), name: req.pool.name });
    return { pool: poolToProto(this.d.engine.getPool(cfg.name)) };
  }

  getPool(req: GetPoolRequest, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    return { pool: poolToProto(this.d.engine.getPool(req.name)) };
  }

  async listPools(_req: unknown, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    return { pools: (await this.d.listPools()).map(poolToProto) };
  }

  async updatePool(req: UpdatePoolRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    if (!req.pool) throw invalidArgument("pool", "is required");
    const fields = poolFieldsFromProto(req.pool);
    const paths = req.updateMask?.paths.map(snake) ?? [];
    let changes: Partial<PoolConfig>;
    if (paths.length === 0) {
      changes = fields;
    } else {
      changes = {};
      for (const path of paths) {
        const targets = poolPaths[path];
        if (!targets) throw invalidArgument("update_mask", `unknown or read-only pool field "${path}"`);
        for (const t of targets) (changes as Record<string, unknown>)[t] = fields[t as keyof typeof fields];
      }
    }
    const cfg = await this.d.admin.updatePool(actor, { ...changes, name: req.pool.name });
    return { pool: poolToProto(this.d.engine.getPool(cfg.name)) };
  }

  async deletePool(req: DeletePoolRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    await this.d.admin.deletePool(actor, req.name, req.force);
    return {};
  }

  async addKey(req: AddKeyRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    const k = req.key;
    if (k?.state !== undefined && k.state !== KeyState.UNSPECIFIED && k.state !== KeyState.ENABLED && k.state !== KeyState.DISABLED) {
      throw invalidArgument("key.state", "may only be ENABLED or DISABLED when adding a key");
    }
    const cfg = await this.d.admin.addKey(actor, {
      pool: req.pool,
      id: k?.id || undefined,
      label: k?.label || undefined,
      secret: req.secret,
      weight: k?.weight || undefined,
      maxConcurrency: k?.maxConcurrency,
      quotaGroup: k?.quotaGroup,
      limits: k?.limits && limitsFromProto(k.limits),
      priority: k?.priority,
      metadata: k?.metadata,
      disabled: k?.state === KeyState.DISABLED,
      disabledReason: "",
    });
    return { key: keyToProto(this.d.engine.getKey(cfg.pool, cfg.id), mask) };
  }

  getKey(req: GetKeyRequest, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    return { key: keyToProto(this.d.engine.getKey(req.pool, req.keyId), mask) };
  }

  listKeys(req: ListKeysRequest, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    const { items, nextPageToken } = page(this.d.engine.listKeys(req.pool), (k) => [k.config.id], req, [req.pool]);
    return { keys: items.map((k) => keyToProto(k, mask)), nextPageToken };
  }

  async updateKey(req: UpdateKeyRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    const k = req.key;
    if (!k) throw invalidArgument("key", "is required");
    const limits = k.limits ? limitsFromProto(k.limits) : { ...NO_LIMITS };
    const given: Partial<KeyConfig> = {
      label: k.label,
      weight: k.weight,
      maxConcurrency: k.maxConcurrency,
      quotaGroup: k.quotaGroup,
      limits,
      priority: k.priority,
      metadata: k.metadata,
      secret: req.secret,
    };
    const paths = req.updateMask?.paths.map(snake) ?? [];
    const changes: Omit<KeyInput, "pool"> = {};
    if (paths.length === 0) {
      for (const f of ["label", "weight", "maxConcurrency", "quotaGroup", "limits", "priority", "metadata"] as const) {
        (changes as Record<string, unknown>)[f] = given[f];
      }
    } else {
      for (const path of paths) {
        const limit = limitPaths[path];
        if (limit) {
          changes.limits = { ...changes.limits, [limit]: limits[limit] };
          continue;
        }
        const field = keyPaths[path];
        if (!field) throw invalidArgument("update_mask", `unknown or read-only key field "${path}"`);
        (changes as Record<string, unknown>)[field] = given[field];
      }
    }
    const cfg = await this.d.admin.updateKey(actor, { ...changes, pool: k.pool, id: k.id });
    return { key: keyToProto(this.d.engine.getKey(cfg.pool, cfg.id), mask) };
  }

  async removeKey(req: RemoveKeyRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    await this.d.admin.removeKey(actor, req.pool, req.keyId, req.drain);
    return {};
  }

  async enableKey(req: EnableKeyRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    return { key: keyToProto(await this.d.admin.enableKey(actor, req.pool, req.keyId), mask) };
  }

  async disableKey(req: DisableKeyRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    const reason = req.reason || "disabled by operator";
    return { key: keyToProto(await this.d.admin.disableKey(actor, req.pool, req.keyId, req.drain, reason), mask) };
  }

  listLeases(req: ListLeasesRequest, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    const leases = this.d.engine.listLeases(req.pool, req.keyId || undefined);
    const { items, nextPageToken } = page(leases, (l) => [sortable(l.acquiredAt), l.leaseId], req, [req.pool, req.keyId]);
    return { leases: items.map(leaseToProto), nextPageToken };
  }

  async revokeLease(req: RevokeLeaseRequest, ctx: HandlerContext) {
    const actor = this.d.guard.admin(ctx);
    await this.d.admin.revokeLease(actor, req.leaseId, req.reason || "revoked by operator");
    return {};
  }

  getPoolStats(req: GetPoolStatsRequest, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    const stats = statsToProto(this.d.engine.stats(req.pool));
    return { stats: { ...stats, owner: this.d.replicas.address, term: BigInt(this.d.replicas.termOf(req.pool) ?? 0) } };
  }

  async listReplicas(_req: unknown, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    const members = await this.d.replicas.describe();
    return {
      replicas: members.map((m) => ({ id: m.id, address: m.address, heartbeatAge: dur(m.heartbeatAgeMs), startedAt: ts(m.startedAt), pools: m.pools })),
    };
  }

  async *watchEvents(req: WatchEventsRequest, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    // With several replicas the pool may be another's: its owner streams its events, merged by routing.ts.
    if (req.pool !== "" && !this.d.replicas.knows(req.pool)) {
      await this.d.replicas.locate();
      if (!this.d.replicas.knows(req.pool)) this.d.engine.getPool(req.pool);
    }
    for await (const item of this.d.events.watch({ pool: req.pool, includeLeaseEvents: req.includeLeaseEvents }, ctx.signal)) {
      yield { event: eventToProto(item, this.d.now()) };
    }
  }

  async listAuditEntries(req: ListAuditEntriesRequest, ctx: HandlerContext) {
    this.d.guard.admin(ctx);
    if (req.pageSize < 0) throw invalidArgument("page_size", "must not be negative");
    const limit = req.pageSize === 0 ? AUDIT_PAGE_SIZE : Math.min(req.pageSize, MAX_PAGE_SIZE);
    const since = req.since ? timestampMs(req.since) : undefined;
    const scope = [req.pool, since === undefined ? "" : String(since)];
    const after = req.pageToken === "" ? undefined : readToken(req.pageToken, scope);
    if (after !== undefined && (after.length !== 1 || !/^\d{1,15}$/.test(after[0]!))) throw invalidArgument("page_token", "is not a token this server issued");
    const beforeId = after === undefined ? undefined : Number(after[0]);
    // One more than the page tells whether another page follows.
    const entries = await this.d.audit.list({ pool: req.pool, since, beforeId, limit: limit + 1 });
    const pageOf = entries.slice(0, limit);
    const nextPageToken = entries.length > limit ? writeToken(scope, [String(pageOf[pageOf.length - 1]!.id)]) : "";
    return { entries: pageOf.map(auditEntryToProto), nextPageToken };
  }
}
