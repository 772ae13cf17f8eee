import { Code, ConnectError } from "@connectrpc/connect";
import { type ErrorDetail, ErrorDetailSchema, ErrorReason } from "./gen/keymesh/v1/common_pb.js";
import { msFromDuration } from "./duration.js";
import type { Outcome } from "./classify.js";

/** The keymesh.v1.ErrorDetail the server attached to an RPC error, if any. */
export function keymeshErrorDetail(err: unknown): ErrorDetail | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  return err.findDetails(ErrorDetailSchema)[0];
}

/** The machine-readable reason of a KeyMesh server error (UNSPECIFIED when it carries none). */
export function keymeshErrorReason(err: unknown): ErrorReason {
  return keymeshErrorDetail(err)?.reason ?? ErrorReason.UNSPECIFIED;
}

/** The server's hint of when a key is expected to be free (sent with RESOURCE_EXHAUSTED), in ms. */
export function keymeshRetryAfterMs(err: unknown): number | null {
  const d = keymeshErrorDetail(err)?.retryAfter;
  return d ? msFromDuration(d) : null;
}

/** Whether err says the lease is already over, which makes a final report moot rather than failed. */
export function isLeaseEnded(err: unknown): boolean {
  const r = keymeshErrorReason(err);
  return r === ErrorReason.LEASE_EXPIRED || r === ErrorReason.LEASE_RELEASED || r === ErrorReason.LEASE_REVOKED || r === ErrorReason.LEASE_UNKNOWN;
}

/** Thrown by withKey when the callback returned but reported a failed call with lease.report(). */
export class ProviderCallError extends Error {
  override name = "ProviderCallError";
  constructor(readonly outcome: Outcome) {
    super(`provider call ${outcome.kind}: ${outcome.message}`);
  }
}

/** The abort reason of lease.signal when the lease ended early (revoked, or not renewed in time). */
export class LeaseGoneError extends Error {
  override name = "LeaseGoneError";
  constructor(
    readonly reason: ErrorReason,
    readonly detail: string,
  ) {
    super(`lease gone: ${ErrorReason[reason]}: ${detail}`);
  }
}

export const isUnavailable = (err: unknown) => err instanceof ConnectError && err.code === Code.Unavailable;
