// Authentication for the KeyMesh services: each handler names the pool it touches (or admin) and the
// guard asks the authorizer, reading the bearer token from the request headers of either listener.
import { Code, type HandlerContext } from "@connectrpc/connect";
import { ErrorReason } from "../gen/keymesh/v1/common_pb.js";
import type { Authorizer } from "../ops/auth.js";
import { keymeshError } from "./errors.js";

export interface Guard {
  /** Throws UNAUTHENTICATED / PERMISSION_DENIED unless the caller may use `pool`. */
  usePool(ctx: HandlerContext, pool: string): void;
  /** Same for a lease id (the pool is inside the id); malformed ids pass here and fail in the engine. */
  useLease(ctx: HandlerContext, leaseId: string): void;
  /** Throws unless the caller has the admin scope. */
  admin(ctx: HandlerContext): void;
}

const openGuard: Guard = {
  usePool() {},
  useLease() {},
  admin() {},
};

/** `leasePool` reads the pool claimed by a lease id (its signature is checked later by the engine). */
export function createGuard(authorizer: Authorizer, leasePool: (leaseId: string) => string | undefined): Guard {
  if (!authorizer.enabled) return openGuard;
  const check = (ctx: HandlerContext, pool: string | undefined) => {
    const decision = authorizer.authorize(
      { service: ctx.service.typeName, name: ctx.method.name },
      ctx.requestHeader.get("authorization") ?? undefined,
      pool,
    );
    if (decision.ok) return;
    throw decision.code === "unauthenticated"
      ? keymeshError(Code.Unauthenticated, ErrorReason.UNAUTHENTICATED, decision.message)
      : keymeshError(Code.PermissionDenied, ErrorReason.PERMISSION_DENIED, decision.message);
  };
  return {
    usePool: check,
    useLease: (ctx, leaseId) => check(ctx, leasePool(leaseId)),
    admin: (ctx) => check(ctx, undefined),
  };
}
