export { createKeyMeshClient, type KeyMeshClient, type KeyMeshClientOptions, type TlsOptions } from "./client.js";
export { Lease, type LeaseOptions } from "./lease.js";
export { type RetryOptions, fullJitterMs } from "./retry.js";
export { type Keyed, type WrapOptions } from "./wrap.js";
export { classify, failureReasonOf, isRetryable, OUTCOME_KINDS, type ClassifyInput, type Outcome, type OutcomeKind } from "./classify.js";
export { type HeadersLike, type ParsedRateLimit, parseRateLimitHeaders, rateLimitToProto } from "./ratelimit.js";
export {
  type ErrorReasonName,
  errorReasonName,
  isLeaseEnded,
  keymeshError,
  type KeyMeshErrorInfo,
  keymeshErrorDetail,
  keymeshErrorReason,
  keymeshRetryAfterMs,
  LeaseGoneError,
  ProviderCallError,
} from "./errors.js";
export { ErrorReason } from "./gen/keymesh/v1/common_pb.js";
export { FailureReason } from "./gen/keymesh/v1/pool_pb.js";
