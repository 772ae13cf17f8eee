"""Provider rate-limit headers (OpenAI x-ratelimit-*, Anthropic anthropic-ratelimit-*, retry-after).

The rules are shared by every KeyMesh client and written down in test/vectors/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any, Optional

from google.protobuf.duration_pb2 import Duration

from keymesh_client.v1 import common_pb2

_COUNT = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# "ms" before "m" so that "20ms" is not read as 20 minutes followed by garbage.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|us|µs|ns|h|m|s)")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|us|µs|ns|h|m|s))+")
_UNIT_MS = {
    "h": Fraction(3_600_000),
    "m": Fraction(60_000),
    "s": Fraction(1_000),
    "ms": Fraction(1),
    "us": Fraction(1, 1_000),
    "µs": Fraction(1, 1_000),
    "ns": Fraction(1, 1_000_000),
}
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Surrounding whitespace a value is trimmed of: ASCII only, as every client does.
_ASCII_SPACE = " \t\r\n\v\f"
# The largest count every client can hold (JavaScript's safe integers).
_MAX_COUNT = 2**53 - 1
# The longest duration every client can hold: 2^63-1 ns (Go's time.Duration), in whole ms.
_MAX_DURATION_MS = 9_223_372_036_854
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (" + "|".join(_MONTHS) + r") ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)


@dataclass(frozen=True)
class RateLimitInfo:
    """The provider's view of a key's budget; None where a header was absent or unparseable."""

    requests_remaining: Optional[int] = None
    requests_limit: Optional[int] = None
    requests_reset_ms: Optional[int] = None
    tokens_remaining: Optional[int] = None
    tokens_limit: Optional[int] = None
    tokens_reset_ms: Optional[int] = None
    retry_after_ms: Optional[int] = None

    def is_empty(self) -> bool:
        return all(v is None for v in self.__dict__.values())

    def to_proto(self) -> common_pb2.RateLimit:
        """The typed RateLimit message (retry_after travels separately, in MarkRateLimited)."""
        msg = common_pb2.RateLimit()
        for name in ("requests_remaining", "requests_limit", "tokens_remaining", "tokens_limit"):
            value = getattr(self, name)
            if value is not None:
                setattr(msg, name, value)
        if self.requests_reset_ms is not None:
            msg.requests_reset.CopyFrom(ms_to_duration(self.requests_reset_ms))
        if self.tokens_reset_ms is not None:
            msg.tokens_reset.CopyFrom(ms_to_duration(self.tokens_reset_ms))
        return msg


def ms_to_duration(ms: int) -> Duration:
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def normalize_headers(headers: Any) -> dict[str, str]:
    """Lower-cased name -> value from a dict, an httpx/requests header object or (name, value) pairs."""
    if headers is None:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers
    return {str(name).lower(): str(value) for name, value in items}


def _duration_ms(ms: Any) -> Optional[int]:
    ms = int(ms)
    return ms if ms <= _MAX_DURATION_MS else None


def parse_count(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    value = value.strip(_ASCII_SPACE)
    if not _COUNT.fullmatch(value):
        return None
    count = int(value)
    return count if count <= _MAX_COUNT else None


def parse_duration_ms(value: Optional[str]) -> Optional[int]:
    """A Go-style duration ("6m0s", "20ms", "1h2m3.5s", "0") in whole milliseconds, truncated."""
    if value is None:
        return None
    value = value.strip(_ASCII_SPACE)
    if value == "0":
        return 0
    if not _DURATION.fullmatch(value):
        return None
    total = sum(Fraction(number) * _UNIT_MS[unit] for number, unit in _DURATION_PART.findall(value))
    return _duration_ms(total)


def _parse_rfc3339(value: str) -> Optional[tuple[datetime, Fraction]]:
    match = _RFC3339.fullmatch(value)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone in ("Z", "z"):
        tz = timezone.utc
    elif int(zone[1:3]) > 23 or int(zone[4:6]) > 59:
        return None
    else:
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        instant = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz)
    except ValueError:
        return None
    return instant, Fraction("0" + fraction) if fraction else Fraction(0)


def _ms_until(instant: datetime, fraction_s: Fraction, now: datetime) -> int:
    delta = instant - now
    whole_ms = (delta.days * 86_400 + delta.seconds) * 1000 + Fraction(delta.microseconds, 1000)
    return max(0, int(whole_ms + fraction_s * 1000))


def parse_reset_instant_ms(value: Optional[str], now: datetime) -> Optional[int]:
    """An RFC 3339 instant as milliseconds from now, floored at 0."""
    if value is None:
        return None
    parsed = _parse_rfc3339(value.strip(_ASCII_SPACE))
    return None if parsed is None else _ms_until(parsed[0], parsed[1], now)


def parse_retry_after_ms(value: Optional[str], now: datetime) -> Optional[int]:
    """retry-after as decimal seconds or an IMF-fixdate HTTP date, in milliseconds."""
    if value is None:
        return None
    value = value.strip(_ASCII_SPACE)
    if _DECIMAL.fullmatch(value):
        return _duration_ms(Fraction(value) * 1000)
    match = _IMF_FIXDATE.fullmatch(value)
    if not match:
        return None
    day, month, year, hour, minute, second = match.groups()
    try:
        instant = datetime(
            int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc
        )
    except ValueError:
        return None
    return _ms_until(instant, Fraction(0), now)


def _retry_after_ms_header(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    value = value.strip(_ASCII_SPACE)
    return _duration_ms(Fraction(value)) if _DECIMAL.fullmatch(value) else None


def _first(*values: Optional[int]) -> Optional[int]:
    return next((v for v in values if v is not None), None)


def parse_rate_limit_headers(headers: Any, now: Optional[datetime] = None) -> RateLimitInfo:
    """Parse provider rate-limit headers; names are case-insensitive, bad values become None."""
    h = normalize_headers(headers)
    now = now or datetime.now(timezone.utc)

    def count(*names: str) -> Optional[int]:
        return _first(*(parse_count(h.get(n)) for n in names))

    def anthropic_reset(*names: str) -> Optional[int]:
        return _first(*(parse_reset_instant_ms(h.get(n), now) for n in names))

    return RateLimitInfo(
        requests_limit=count("x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"),
        requests_remaining=count("x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"),
        requests_reset_ms=_first(
            parse_duration_ms(h.get("x-ratelimit-reset-requests")),
            anthropic_reset("anthropic-ratelimit-requests-reset"),
        ),
        tokens_limit=count(
            "x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-input-tokens-limit"
        ),
        tokens_remaining=count(
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-input-tokens-remaining",
        ),
        tokens_reset_ms=_first(
            parse_duration_ms(h.get("x-ratelimit-reset-tokens")),
            anthropic_reset("anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-input-tokens-reset"),
        ),
        retry_after_ms=_first(
            _retry_after_ms_header(h.get("retry-after-ms")),
            parse_retry_after_ms(h.get("retry-after"), now),
        ),
    )
