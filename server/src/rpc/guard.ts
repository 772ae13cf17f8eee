// What the handlers ask of authentication: each call names the pool it touches (or admin).
import type { HandlerContext } from "@connectrpc/connect";

export interface Guard {
  /** Throws UNAUTHENTICATED / PERMISSION_DENIED unless the caller may use `pool`. */
  usePool(ctx: HandlerContext, pool: string): void;
  /** Same for a lease id (the pool is inside the id); malformed ids pass here and fail in the engine. */
  useLease(ctx: HandlerContext, leaseId: string): void;
  /** Throws unless the caller has the admin scope. */
  admin(ctx: HandlerContext): void;
}

export const openGuard: Guard = {
  usePool() {},
  useLease() {},
  admin() {},
};
