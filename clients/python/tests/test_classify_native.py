"""classify() on the exceptions Python code meets besides the SDK shapes the vectors cover."""

from __future__ import annotations

import email.message
import io
import urllib.error
from datetime import datetime, timezone
from types import SimpleNamespace

from keymesh_client import OutcomeKind, classify

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


class HTTPStatusError(Exception):
    """Shaped like httpx.HTTPStatusError / requests.HTTPError: everything hangs off .response."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"Server error '{status}'")
        self.response = SimpleNamespace(status_code=status, headers=headers)


class ConnectError(Exception):
    """Named like httpx.ConnectError."""


class ReadTimeout(Exception):
    """Named like httpx.ReadTimeout."""


def test_builtin_timeout_and_connection_errors_are_transient() -> None:
    for error in (TimeoutError("timed out"), ConnectionRefusedError(111, "refused"), ConnectError("x"), ReadTimeout("x")):
        assert classify(error=error, now=NOW).kind is OutcomeKind.TRANSIENT


def test_urllib_http_error_uses_its_code_and_headers() -> None:
    headers = email.message.Message()
    headers["Retry-After"] = "3"
    error = urllib.error.HTTPError("http://127.0.0.1/v1", 429, "Too Many Requests", headers, io.BytesIO(b"{}"))
    outcome = classify(error=error, now=NOW)
    assert (outcome.kind, outcome.retry_after_ms, outcome.http_status) == (OutcomeKind.RATE_LIMITED, 3000, 429)


def test_http_library_status_error_reads_the_response() -> None:
    outcome = classify(error=HTTPStatusError(503, {"Retry-After": "2"}), now=NOW)
    assert (outcome.kind, outcome.retry_after_ms, outcome.http_status) == (OutcomeKind.TRANSIENT, 2000, 503)


def test_rate_limit_headers_come_back_with_the_outcome() -> None:
    outcome = classify(200, {"x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "2s"}, now=NOW)
    assert outcome.kind is OutcomeKind.SUCCESS
    assert (outcome.rate_limit.requests_remaining, outcome.rate_limit.requests_reset_ms) == (7, 2000)


def test_header_pairs_and_header_objects_are_accepted() -> None:
    assert classify(429, [("Retry-After", "4")], now=NOW).retry_after_ms == 4000
    message = email.message.Message()
    message["retry-after-ms"] = "250"
    assert classify(429, message, now=NOW).retry_after_ms == 250


def test_an_error_without_any_response_is_transient() -> None:
    assert classify(error=ValueError("no status anywhere"), now=NOW).kind is OutcomeKind.TRANSIENT


def test_the_message_is_kept_for_the_report() -> None:
    error = SimpleNamespace(status_code=401, message="Incorrect API key provided", code="invalid_api_key")
    outcome = classify(error=error, now=NOW)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.AUTH and outcome.message == "Incorrect API key provided"
