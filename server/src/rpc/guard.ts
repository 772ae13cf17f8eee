// Authentication for the KeyMesh services: each handler names the pool it touches (or admin) and the
// guard asks the authorizer, reading the bearer token from the request headers of either listener.
import { Code, type HandlerContext } from "@connectrpc/connect";
import { ANONYMOUS_ACTOR } from "../domain/audit.js";
import { ErrorReason } from "../gen/keymesh/v1/common_pb.js";
import type { Authorizer } from "../ops/auth.js";
import { keymeshError } from "./errors.js";

export interface Guard {
  /** Throws UNAUTHENTICATED / PERMISSION_DENIED unless the caller may use `pool`. */
  usePool(ctx: HandlerContext, pool: string): void;
  /** Same for a lease id (the pool is inside the id); malformed ids pass here and fail in the engine. */
  useLease(ctx: HandlerContext, leaseId: string): void;
  /** Throws unless the caller has the admin scope; returns who the caller is, for the audit trail. */
  admin(ctx: HandlerContext): string;
}

/**
 * `leasePool` reads the pool claimed by a lease id (its signature is checked later by the engine). Whether
 * auth is on is asked on every call, so a config reload can turn it on or off.
 */
export function createGuard(authorizer: Authorizer, leasePool: (leaseId: string) => string | undefined): Guard {
  const check = (ctx: HandlerContext, pool: string | undefined): string => {
    if (!authorizer.enabled) return ANONYMOUS_ACTOR;
    const decision = authorizer.authorize(
      { service: ctx.service.typeName, name: ctx.method.name },
      ctx.requestHeader.get("authorization") ?? undefined,
      pool,
    );
    if (decision.ok) return decision.name ?? ANONYMOUS_ACTOR;
    throw decision.code === "unauthenticated"
      ? keymeshError(Code.Unauthenticated, ErrorReason.UNAUTHENTICATED, decision.message)
      : keymeshError(Code.PermissionDenied, ErrorReason.PERMISSION_DENIED, decision.message);
  };
  return {
    usePool: check,
    useLease: (ctx, leaseId) => {
      if (authorizer.enabled) check(ctx, leasePool(leaseId));
    },
    admin: (ctx) => check(ctx, undefined),
  };
}
