// The one place where failures become wire statuses: typed domain and store errors map to a gRPC/Connect
// code plus a keymesh.v1.ErrorDetail every client can branch on, and so do the transports' own errors
// (a message that cannot be decoded, one over the size limit). Messages are cut to a bounded prefix, as
// they may quote an input. Anything unexpected is INTERNAL with a generic message (the cause is logged,
// never sent: it could contain a secret).
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { DomainError, type DomainErrorCode } from "../domain/errors.js";
import { ErrorDetailSchema, ErrorReason } from "../gen/keymesh/v1/common_pb.js";
import { StoreError, type StoreErrorCode } from "../store/errors.js";
import { boundedMessage } from "./limits.js";

const domainCodes: Record<DomainErrorCode, [Code, ErrorReason]> = {
  pool_not_found: [Code.NotFound, ErrorReason.POOL_NOT_FOUND],
  key_not_found: [Code.NotFound, ErrorReason.KEY_NOT_FOUND],
  lease_unknown: [Code.NotFound, ErrorReason.LEASE_UNKNOWN],
  lease_expired: [Code.NotFound, ErrorReason.LEASE_EXPIRED],
  lease_released: [Code.NotFound, ErrorReason.LEASE_RELEASED],
  lease_revoked: [Code.NotFound, ErrorReason.LEASE_REVOKED],
  lease_id_malformed: [Code.InvalidArgument, ErrorReason.LEASE_ID_MALFORMED],
  pool_empty: [Code.ResourceExhausted, ErrorReason.POOL_EMPTY],
  no_key_available: [Code.ResourceExhausted, ErrorReason.NO_KEY_AVAILABLE],
  invalid_argument: [Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT],
  pool_exists: [Code.AlreadyExists, ErrorReason.POOL_EXISTS],
  key_exists: [Code.AlreadyExists, ErrorReason.KEY_EXISTS],
  pool_has_leases: [Code.FailedPrecondition, ErrorReason.POOL_HAS_LEASES],
  pool_not_served: [Code.Unavailable, ErrorReason.POOL_NOT_SERVED],
  cancelled: [Code.Canceled, ErrorReason.UNSPECIFIED],
};

/** Builds a ConnectError carrying an ErrorDetail. */
export function keymeshError(
  code: Code,
  reason: ErrorReason,
  message: string,
  extra: { field?: string; retryAfterMs?: number; cause?: unknown } = {},
): ConnectError {
  const detail = create(ErrorDetailSchema, {
    reason,
    field: extra.field ?? "",
    retryAfter: extra.retryAfterMs !== undefined ? durationFromMs(Math.max(0, Math.ceil(extra.retryAfterMs))) : undefined,
  });
  return new ConnectError(boundedMessage(message), code, undefined, [{ desc: ErrorDetailSchema, value: detail }], extra.cause);
}

/**
 * A ConnectError on its way out: one without an ErrorDetail was raised by a transport about the request
 * itself (a detail-less INVALID_ARGUMENT or UNIMPLEMENTED is a message it could not decode or frame, a
 * RESOURCE_EXHAUSTED one over the size limit) and gets the detail that says so. The same error comes
 * back when nothing changes.
 */
function shapeConnectError(err: ConnectError): ConnectError {
  if (err.findDetails(ErrorDetailSchema).length > 0) return bounded(err);
  switch (err.code) {
    case Code.InvalidArgument:
    case Code.Unimplemented:
      return keymeshError(Code.InvalidArgument, ErrorReason.MALFORMED_MESSAGE, err.rawMessage, { cause: err });
    case Code.ResourceExhausted:
      return keymeshError(Code.ResourceExhausted, ErrorReason.MESSAGE_TOO_LARGE, err.rawMessage, { cause: err });
    default:
      return bounded(err);
  }
}

function bounded(err: ConnectError): ConnectError {
  const message = boundedMessage(err.rawMessage);
  if (message === err.rawMessage) return err;
  const cut = new ConnectError(message, err.code, err.metadata, undefined, err.cause);
  cut.details = err.details;
  return cut;
}

const storeCodes: Record<StoreErrorCode, [Code, ErrorReason, string]> = {
  unavailable: [Code.Unavailable, ErrorReason.DATABASE_UNAVAILABLE, "database unavailable: nothing was changed, retry later"],
  conflict: [Code.Aborted, ErrorReason.UNSPECIFIED, "concurrent change conflicted: retry"],
  ownership_lost: [Code.Unavailable, ErrorReason.OWNERSHIP_LOST, "this replica lost the pool to another while the call was in flight: nothing was changed, retry"],
  refused: [Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "the database refused to record this request's values: nothing was granted"],
};

export type InternalErrorSink = (err: unknown) => void;

export function createErrorMapper(onInternal: InternalErrorSink): (err: unknown) => ConnectError {
  return (err: unknown): ConnectError => {
    if (err instanceof DomainError) {
      const [code, reason] = domainCodes[err.code];
      return keymeshError(code, reason, err.message, { field: err.details.field, retryAfterMs: err.details.retryAfterMs });
    }
    if (err instanceof ConnectError) return shapeConnectError(err);
    if (err instanceof StoreError) {
      // The store's own message could quote row values: each code has a fixed one.
      const [code, reason, message] = storeCodes[err.code];
      return keymeshError(code, reason, message);
    }
    onInternal(err);
    return new ConnectError("internal error", Code.Internal);
  };
}
