"""Classify a provider call's result into an outcome KeyMesh understands.

Works from an HTTP status and headers, and from the error objects of the official OpenAI,
Anthropic and Google Gen AI SDKs by duck typing (no SDK import). The rules are shared by every
KeyMesh client and written down in test/vectors/README.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from keymesh_client.ratelimit import RateLimitInfo, normalize_headers, parse_duration_ms, parse_rate_limit_headers
from keymesh_client.v1 import pool_pb2

_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error"})
_OVERLOADED_CODE = "overloaded_error"
_KEY_REJECTED_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})  # Gemini ErrorInfo reasons sent with a 400


class OutcomeKind(str, enum.Enum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    QUOTA_EXHAUSTED = "quota_exhausted"
    TRANSIENT = "transient"
    OVERLOADED = "overloaded"
    CLIENT_ERROR = "client_error"

    @property
    def failure_reason(self) -> pool_pb2.FailureReason:
        """The MarkFailed reason for a failure kind."""
        return _FAILURE_REASONS[self]


_FAILURE_REASONS = {
    OutcomeKind.SUCCESS: pool_pb2.FAILURE_REASON_UNSPECIFIED,
    OutcomeKind.RATE_LIMITED: pool_pb2.FAILURE_REASON_UNSPECIFIED,
    OutcomeKind.AUTH: pool_pb2.FAILURE_REASON_AUTH,
    OutcomeKind.QUOTA_EXHAUSTED: pool_pb2.FAILURE_REASON_QUOTA_EXHAUSTED,
    OutcomeKind.TRANSIENT: pool_pb2.FAILURE_REASON_TRANSIENT,
    OutcomeKind.OVERLOADED: pool_pb2.FAILURE_REASON_OVERLOADED,
    OutcomeKind.CLIENT_ERROR: pool_pb2.FAILURE_REASON_CLIENT_ERROR,
}


@dataclass(frozen=True)
class Outcome:
    """What happened to one provider call made with a leased key."""

    kind: OutcomeKind
    retry_after_ms: Optional[int] = None
    rate_limit: RateLimitInfo = field(default_factory=RateLimitInfo)
    http_status: Optional[int] = None
    message: str = ""


@dataclass
class _ErrorFacts:
    status: Optional[int] = None
    headers: dict[str, str] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    retry_delay_ms: Optional[int] = None
    reasons: list[str] = field(default_factory=list)  # google.rpc.ErrorInfo reasons of a Gemini error
    no_response: bool = False


def _int_attr(obj: Any, *names: str) -> Optional[int]:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _strings(values: Iterable[Any]) -> list[str]:
    return [v for v in values if isinstance(v, str) and v]


def _mro_names(error: BaseException) -> list[str]:
    return [cls.__name__ for cls in type(error).__mro__]


def _rpc_details(details: Any, type_name: str) -> list[dict[str, Any]]:
    """A Gemini error's google.rpc.<type_name> details (from the error JSON or its list)."""
    if isinstance(details, dict):
        details = (details.get("error") or {}).get("details")
    if not isinstance(details, list):
        return []
    suffix = "google.rpc." + type_name
    return [d for d in details if isinstance(d, dict) and str(d.get("@type", "")).endswith(suffix)]


def _retry_delay_ms(details: Any) -> Optional[int]:
    """google.rpc.RetryInfo.retryDelay from a Gemini error's details."""
    infos = _rpc_details(details, "RetryInfo")
    return parse_duration_ms(infos[0].get("retryDelay")) if infos else None


def _error_facts(error: BaseException) -> _ErrorFacts:
    response = getattr(error, "response", None)
    status = _int_attr(error, "status_code", "code", "status")
    facts = _ErrorFacts(
        status=status if status is not None else _int_attr(response, "status_code", "status"),
        headers=normalize_headers(getattr(response, "headers", None) or getattr(error, "headers", None)),
    )
    if facts.status is None:
        names = _mro_names(error)
        facts.no_response = (
            isinstance(error, (TimeoutError, ConnectionError))
            or any("Timeout" in n or "ConnectionError" in n or "ConnectError" in n for n in names)
        )
    body = getattr(error, "body", None)
    inner = body.get("error") if isinstance(body, dict) else None
    facts.codes = _strings(
        [getattr(error, "code", None), getattr(error, "type", None)]
        + ([body.get("code"), body.get("type")] if isinstance(body, dict) else [])
        + ([inner.get("code"), inner.get("type")] if isinstance(inner, dict) else [])
    )
    facts.messages = _strings(
        [getattr(error, "message", None), str(error)]
        + ([body.get("message")] if isinstance(body, dict) else [])
        + ([inner.get("message")] if isinstance(inner, dict) else [])
    )
    details = getattr(error, "details", None)
    facts.retry_delay_ms = _retry_delay_ms(details)
    facts.reasons = _strings(d.get("reason") for d in _rpc_details(details, "ErrorInfo"))
    return facts


def _kind(status: Optional[int], facts: _ErrorFacts) -> OutcomeKind:
    if facts.no_response:
        return OutcomeKind.TRANSIENT
    if any(c in _QUOTA_CODES for c in facts.codes):
        return OutcomeKind.QUOTA_EXHAUSTED
    if _OVERLOADED_CODE in facts.codes:
        return OutcomeKind.OVERLOADED
    if status is None or status == 0:
        return OutcomeKind.TRANSIENT
    if 200 <= status < 300:
        return OutcomeKind.SUCCESS
    if status in (401, 403) or any(r in _KEY_REJECTED_REASONS for r in facts.reasons):
        return OutcomeKind.AUTH
    if status == 402:
        return OutcomeKind.QUOTA_EXHAUSTED
    if status == 429:
        return OutcomeKind.RATE_LIMITED
    if status == 529 or (status == 503 and any("overloaded" in m.lower() for m in facts.messages)):
        return OutcomeKind.OVERLOADED
    if status == 408 or 500 <= status < 600:
        return OutcomeKind.TRANSIENT
    return OutcomeKind.CLIENT_ERROR


def _exhausted_budget_reset_ms(rate_limit: RateLimitInfo) -> Optional[int]:
    resets = [
        reset
        for remaining, reset in (
            (rate_limit.requests_remaining, rate_limit.requests_reset_ms),
            (rate_limit.tokens_remaining, rate_limit.tokens_reset_ms),
        )
        if remaining == 0 and reset is not None
    ]
    return max(resets) if resets else None


def classify(
    status: Optional[int] = None,
    headers: Any = None,
    error: Optional[BaseException] = None,
    *,
    now: Optional[datetime] = None,
) -> Outcome:
    """Classify a provider call from its HTTP status, response headers and/or the SDK's exception."""
    facts = _error_facts(error) if error is not None else _ErrorFacts()
    if facts.status is not None:
        status = facts.status
    merged = {**normalize_headers(headers), **facts.headers}
    rate_limit = parse_rate_limit_headers(merged, now or datetime.now(timezone.utc))
    kind = _kind(status, facts)
    retry_after_ms = rate_limit.retry_after_ms
    if retry_after_ms is None:
        retry_after_ms = facts.retry_delay_ms
    if retry_after_ms is None and kind is OutcomeKind.RATE_LIMITED:
        retry_after_ms = _exhausted_budget_reset_ms(rate_limit)
    message = facts.messages[0] if facts.messages else ""
    return Outcome(kind, retry_after_ms, rate_limit, status, message)
