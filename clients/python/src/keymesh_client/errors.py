"""KeyMeshError: a failed KeyMesh RPC with the machine-readable reason the server attached."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Optional

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from keymesh_client.v1 import common_pb2

if TYPE_CHECKING:
    from keymesh_client.classify import Outcome

_DETAILS_TRAILER = "grpc-status-details-bin"
_REASON_PREFIX = "ERROR_REASON_"
# A final report that meets one of these found the lease already over: moot, not failed.
LEASE_ENDED_REASONS = frozenset({"LEASE_EXPIRED", "LEASE_RELEASED", "LEASE_REVOKED", "LEASE_UNKNOWN"})


def reason_name(value: int) -> str:
    """ErrorReason enum value -> its name without the prefix, e.g. 4 -> "LEASE_EXPIRED"."""
    try:
        name = common_pb2.ErrorReason.Name(value)
    except ValueError:
        return "UNSPECIFIED"
    return name[len(_REASON_PREFIX) :]


class KeyMeshError(Exception):
    """A KeyMesh RPC failed.

    code: the gRPC status code; reason: the ErrorReason name without its prefix
    ("NO_KEY_AVAILABLE", "LEASE_EXPIRED", ... or "UNSPECIFIED"); field: the offending request field
    for INVALID_ARGUMENT; retry_after: when a key is expected to be available (RESOURCE_EXHAUSTED).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "UNSPECIFIED",
        field: str = "",
        retry_after: Optional[timedelta] = None,
    ) -> None:
        super().__init__(f"{code.name} {reason}: {message}" if reason != "UNSPECIFIED" else f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field
        self.retry_after = retry_after

    @property
    def lease_ended(self) -> bool:
        return self.reason in LEASE_ENDED_REASONS

    @property
    def unreachable(self) -> bool:
        """No endpoint answered before the deadline (UNAVAILABLE or DEADLINE_EXCEEDED)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    @classmethod
    def from_rpc_error(cls, error: Any) -> "KeyMeshError":
        """From a grpc.RpcError (sync) or grpc.aio.AioRpcError, decoding keymesh.v1.ErrorDetail."""
        code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
        message = (error.details() if callable(getattr(error, "details", None)) else None) or ""
        detail = _error_detail(error.trailing_metadata() if callable(getattr(error, "trailing_metadata", None)) else None)
        if detail is None:
            return cls(code or grpc.StatusCode.UNKNOWN, message)
        retry_after = detail.retry_after.ToTimedelta() if detail.HasField("retry_after") else None
        return cls(code, message, reason_name(detail.reason), detail.field, retry_after)


def _error_detail(trailing_metadata: Any) -> Optional[common_pb2.ErrorDetail]:
    for key, value in trailing_metadata or ():
        if key != _DETAILS_TRAILER or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for any_detail in status.details:
            if any_detail.Is(common_pb2.ErrorDetail.DESCRIPTOR):
                detail = common_pb2.ErrorDetail()
                any_detail.Unpack(detail)
                return detail
    return None


class ProviderError(Exception):
    """call_with_retry gave up on a provider failure that the block reported with lease.report()."""

    def __init__(self, outcome: "Outcome") -> None:
        status = f" (HTTP {outcome.http_status})" if outcome.http_status else ""
        super().__init__(f"provider call failed: {outcome.kind.value}{status}")
        self.outcome = outcome
