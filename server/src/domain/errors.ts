// Typed domain errors. The RPC layer maps `code` to a gRPC/Connect status and an ErrorReason.

export type DomainErrorCode =
  | "pool_not_found"
  | "key_not_found"
  | "lease_unknown"
  | "lease_expired"
  | "lease_released"
  | "lease_revoked"
  | "lease_id_malformed"
  | "pool_empty"
  | "no_key_available"
  | "invalid_argument"
  | "pool_exists"
  | "key_exists"
  | "pool_has_leases"
  | "pool_not_served"
  | "cancelled";

export class DomainError extends Error {
  constructor(
    readonly code: DomainErrorCode,
    message: string,
    readonly details: { field?: string; retryAfterMs?: number } = {},
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export function invalidArgument(field: string, message: string): DomainError {
  return new DomainError("invalid_argument", `${field}: ${message}`, { field });
}
