"""A lease on one key, and the requests that acquire, renew and end it (shared by sync and asyncio)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional, Protocol, Union

from google.protobuf.duration_pb2 import Duration

from keymesh_client.classify import Outcome, OutcomeKind, classify
from keymesh_client.ratelimit import ms_to_duration, parse_rate_limit_headers
from keymesh_client.v1 import common_pb2, pool_pb2

Seconds = Union[float, int, timedelta]
# Bounds the RPC that ends a lease, which runs even after the block was cancelled.
FINAL_REPORT_TIMEOUT_S = 5.0
_MESSAGE_LIMIT = 200
# Never renew in a tight loop, whatever interval the server suggests.
_MIN_RENEW_INTERVAL_MS = 50.0


class _Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...


_holder: tuple[int, str] = (0, "")


def default_holder() -> str:
    """host/pid, computed once per process (a forked child gets its own)."""
    global _holder
    pid = os.getpid()
    if _holder[0] != pid:
        _holder = (pid, f"{socket.gethostname()}/{pid}")
    return _holder[1]


def seconds(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def to_duration(value: Optional[Seconds]) -> Optional[Duration]:
    if value is None:
        return None
    if isinstance(value, timedelta) or value < 0:
        d = Duration()
        d.FromTimedelta(value if isinstance(value, timedelta) else timedelta(seconds=float(value)))
        return d
    whole = int(value)
    nanos = round((value - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return Duration(seconds=whole, nanos=nanos)


@dataclass(frozen=True)
class LeaseOptions:
    """What Acquire is asked for; shared by lease(), acquire() and call_with_retry()."""

    wait_timeout: Optional[Seconds] = None
    ttl: Optional[Seconds] = None
    holder: Optional[str] = None
    estimated_tokens: int = 0
    exclude_key_ids: tuple[str, ...] = ()

    def acquire_request(self, pool: str, exclude_key_ids: Optional[Iterable[str]] = None, wait_timeout: Optional[Seconds] = None) -> pool_pb2.AcquireRequest:
        wait = self.wait_timeout if wait_timeout is None else wait_timeout
        return pool_pb2.AcquireRequest(
            pool=pool,
            wait_timeout=to_duration(wait),
            lease_ttl=to_duration(self.ttl),
            holder=self.holder or default_holder(),
            estimated_tokens=self.estimated_tokens,
            exclude_key_ids=list(self.exclude_key_ids if exclude_key_ids is None else exclude_key_ids),
        )

    def acquire_timeout(self, default_timeout: Optional[float], wait_timeout: Optional[Seconds] = None) -> Optional[float]:
        """The Acquire deadline: the wait plus the usual RPC allowance."""
        wait = self.wait_timeout if wait_timeout is None else wait_timeout
        if default_timeout is None:
            return None
        return default_timeout + (seconds(wait) if wait is not None else 0.0)


class Lease:
    """A key lent under a lease. Never log `key`.

    `revoked` (and `revoked_event`) turn true when the server ends the lease early (an operator
    revoked it, the key was disabled or removed) or renewal failed for good: stop using the key.
    """

    def __init__(self, response: pool_pb2.AcquireResponse, revoked_event: _Event) -> None:
        # Fields a scope does not need are read from the answer when asked for.
        self._response = response
        self.lease_id: str = response.lease_id
        self.pool: str = response.pool
        self._metadata: Optional[dict[str, str]] = None
        # True while a scope (or the seed library) keeps the lease renewed.
        self._watched = False
        self.revoked_event = revoked_event
        self.gone_reason: Optional[str] = None
        self.gone_message: str = ""
        self._outcome: Optional[Outcome] = None
        self._usage: Optional[common_pb2.Usage] = None
        self._renewed(response.expires_at, response.ttl, response.renew_interval)

    @property
    def key(self) -> str:
        return self._response.key

    @property
    def key_id(self) -> str:
        return self._response.key_id

    @property
    def key_label(self) -> str:
        return self._response.key_label

    @property
    def metadata(self) -> dict[str, str]:
        if self._metadata is None:
            self._metadata = dict(self._response.key_metadata)
        return self._metadata

    def __repr__(self) -> str:
        return f"Lease(pool={self.pool!r}, key_id={self.key_id!r}, key_label={self.key_label!r}, revoked={self.revoked})"

    @property
    def revoked(self) -> bool:
        return self.revoked_event.is_set()

    @property
    def outcome(self) -> Optional[Outcome]:
        """The outcome set with report(), or the one reported when the scope ended."""
        return self._outcome

    def report(
        self,
        outcome: Optional[Outcome] = None,
        *,
        status: Optional[int] = None,
        headers: Any = None,
        error: Optional[BaseException] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
    ) -> Optional[Outcome]:
        """Set the outcome reported when the scope ends (it wins over the block's own result).

        Give an Outcome, or a response's status/headers or an SDK error to classify; token usage
        is sent with a success.
        """
        if outcome is None and (status is not None or headers is not None or error is not None):
            outcome = classify(status, headers, error)
        if outcome is not None:
            self._outcome = outcome
        if input_tokens is not None or output_tokens is not None:
            self._usage = common_pb2.Usage(input_tokens=input_tokens or 0, output_tokens=output_tokens or 0)
        return self._outcome

    def _renewed(self, expires_at: Any, ttl: Duration, renew_interval: Duration) -> None:
        # The messages are kept and converted when read: most leases end before anyone reads them.
        self._expires_at = expires_at
        self._ttl = ttl
        ttl_ms = ttl.seconds * 1000 + ttl.nanos / 1e6
        suggested_ms = renew_interval.seconds * 1000 + renew_interval.nanos / 1e6
        self.renew_interval_ms: float = max(suggested_ms if suggested_ms > 0 else ttl_ms / 3, _MIN_RENEW_INTERVAL_MS)
        # Local deadline on the monotonic clock: the server's clock decides, this only bounds retries.
        self.local_deadline: float = time.monotonic() + ttl_ms / 1000

    @property
    def expires_at(self) -> datetime:
        return self._expires_at.ToDatetime(tzinfo=timezone.utc)  # type: ignore[no-any-return]

    @property
    def ttl(self) -> timedelta:
        return self._ttl.ToTimedelta()

    @property
    def renew_interval(self) -> timedelta:
        return timedelta(milliseconds=self.renew_interval_ms)

    def ms_left(self, now_ms: float) -> float:
        """Milliseconds until the local deadline, from now_ms on the monotonic clock (ms)."""
        return self.local_deadline * 1000 - now_ms

    def _gone(self, reason: str, message: str = "") -> None:
        if not self.revoked_event.is_set():
            self.gone_reason = reason
            self.gone_message = message
            self.revoked_event.set()

    def _scrub(self, text: str) -> str:
        return text.replace(self.key, "[key]") if self.key else text

    def keep_alive_request(self, ttl: Optional[Seconds]) -> pool_pb2.KeepAliveRequest:
        return pool_pb2.KeepAliveRequest(lease_id=self.lease_id, ttl=to_duration(ttl))

    def final_outcome(self, error: Optional[BaseException]) -> Outcome:
        """The outcome to report when the scope ends: report() wins, then the error, else success."""
        if self._outcome is not None:
            outcome = self._outcome
        elif error is None:
            outcome = Outcome(OutcomeKind.SUCCESS)
        elif not isinstance(error, Exception):
            # Interrupted or cancelled: the caller gave up, which says nothing about the key.
            outcome = Outcome(OutcomeKind.CLIENT_ERROR, message=f"holder interrupted ({type(error).__name__})")
        else:
            outcome = classify(error=error)
        self._outcome = outcome
        return outcome

    def final_request(self, outcome: Outcome, latency_s: Optional[float]) -> tuple[str, Any]:
        """The RPC (method name, request) that ends the lease with this outcome."""
        latency = to_duration(latency_s) if latency_s is not None else None
        rate_limit = None if outcome.rate_limit.is_empty() else outcome.rate_limit.to_proto()
        if outcome.kind is OutcomeKind.SUCCESS:
            return "Release", pool_pb2.ReleaseRequest(
                lease_id=self.lease_id, latency=latency, usage=self._usage, rate_limit=rate_limit
            )
        if outcome.kind is OutcomeKind.RATE_LIMITED:
            retry_after = ms_to_duration(outcome.retry_after_ms) if outcome.retry_after_ms is not None else None
            return "MarkRateLimited", pool_pb2.MarkRateLimitedRequest(
                lease_id=self.lease_id, retry_after=retry_after, rate_limit=rate_limit
            )
        return "MarkFailed", pool_pb2.MarkFailedRequest(
            lease_id=self.lease_id,
            reason=outcome.kind.failure_reason,
            http_status=outcome.http_status or 0,
            message=self._scrub(outcome.message)[:_MESSAGE_LIMIT],
            latency=latency,
        )


def report_request(
    lease: Lease,
    kind: Union[OutcomeKind, str],
    *,
    latency: Optional[Seconds] = None,
    headers: Any = None,
    retry_after: Optional[Seconds] = None,
    http_status: int = 0,
    message: str = "",
    input_tokens: Optional[int] = None,
    output_tokens: Optional[int] = None,
) -> tuple[str, Any]:
    """The RPC that ends `lease` with an outcome given in plain values (Client.release and friends)."""
    rate_limit = parse_rate_limit_headers(headers)
    retry_after_ms = int(seconds(retry_after) * 1000) if retry_after is not None else rate_limit.retry_after_ms
    outcome = Outcome(OutcomeKind(kind), retry_after_ms, rate_limit, http_status, message)
    lease.report(outcome, input_tokens=input_tokens, output_tokens=output_tokens)
    return lease.final_request(outcome, seconds(latency) if latency is not None else None)


def renew_request(lease: Lease, ttl: Optional[Seconds]) -> pool_pb2.RenewLeaseRequest:
    return pool_pb2.RenewLeaseRequest(lease_id=lease.lease_id, ttl=to_duration(ttl))
