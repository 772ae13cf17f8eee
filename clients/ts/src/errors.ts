import { Code, ConnectError } from "@connectrpc/connect";
import { type ErrorDetail, ErrorDetailSchema, ErrorReason } from "./gen/keymesh/v1/common_pb.js";
import { msFromDuration } from "./duration.js";
import type { Outcome } from "./classify.js";

/** The keymesh.v1.ErrorDetail the server attached to an RPC error, if any. */
export function keymeshErrorDetail(err: unknown): ErrorDetail | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  return err.findDetails(ErrorDetailSchema)[0];
}

/** An ErrorReason by name, as every KeyMesh client spells it: "NO_KEY_AVAILABLE", "LEASE_EXPIRED", … ("UNSPECIFIED": none). */
export type ErrorReasonName = keyof typeof ErrorReason;

/** The name of an ErrorReason value (an unknown value is "UNSPECIFIED"). */
export function errorReasonName(reason: ErrorReason): ErrorReasonName {
  return (ErrorReason[reason] as ErrorReasonName | undefined) ?? "UNSPECIFIED";
}

/** The machine-readable reason of a KeyMesh server error, by name ("UNSPECIFIED" when it carries none). */
export function keymeshErrorReason(err: unknown): ErrorReasonName {
  return errorReasonName(keymeshErrorDetail(err)?.reason ?? ErrorReason.UNSPECIFIED);
}

/** A failed KeyMesh call in the words every KeyMesh client uses: code, reason, retry-after, field. */
export interface KeyMeshErrorInfo {
  /** The gRPC status code's canonical name, e.g. "RESOURCE_EXHAUSTED". */
  code: string;
  reason: ErrorReasonName;
  /** When a key is expected to be free (RESOURCE_EXHAUSTED), in ms; null when unknown. */
  retryAfterMs: number | null;
  /** The offending request field (INVALID_ARGUMENT), or "". */
  field: string;
  message: string;
}

/** What a KeyMesh server error says; undefined for anything that is not an RPC error. */
export function keymeshError(err: unknown): KeyMeshErrorInfo | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  return {
    code: Code[err.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase(),
    reason: keymeshErrorReason(err),
    retryAfterMs: keymeshRetryAfterMs(err),
    field: keymeshErrorDetail(err)?.field ?? "",
    message: err.rawMessage,
  };
}

/** The server's hint of when a key is expected to be free (sent with RESOURCE_EXHAUSTED), in ms. */
export function keymeshRetryAfterMs(err: unknown): number | null {
  const d = keymeshErrorDetail(err)?.retryAfter;
  return d ? msFromDuration(d) : null;
}

/** Whether err says the lease is already over, which makes a final report moot rather than failed. */
export function isLeaseEnded(err: unknown): boolean {
  const r = keymeshErrorReason(err);
  return r === "LEASE_EXPIRED" || r === "LEASE_RELEASED" || r === "LEASE_REVOKED" || r === "LEASE_UNKNOWN";
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
    /** "LEASE_REVOKED", "LEASE_EXPIRED", … */
    readonly reason: string,
    readonly detail: string,
  ) {
    super(`lease gone: ${reason}: ${detail}`);
  }
}

export const isUnavailable = (err: unknown) => err instanceof ConnectError && err.code === Code.Unavailable;
