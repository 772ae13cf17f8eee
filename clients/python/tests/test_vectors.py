"""Runs every case of test/vectors/*.json (the behaviour all KeyMesh clients share)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest

from keymesh.classify import classify
from keymesh.ratelimit import parse_rate_limit_headers

VECTORS = Path(__file__).resolve().parents[3] / "test" / "vectors"


def _load(name: str) -> tuple[datetime, list[dict[str, Any]]]:
    data = json.loads((VECTORS / name).read_text())
    return datetime.fromisoformat(data["now"]), data["cases"]


HEADERS_NOW, HEADER_CASES = _load("headers.json")
CLASSIFICATION_NOW, CLASSIFICATION_CASES = _load("classification.json")


# Stand-ins for the SDK exceptions, shaped as described in test/vectors/README.md ("Python").
class OpenAIAPIStatusError(Exception):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec.get("message", ""))
        self.status_code = spec["status"]
        self.code = spec.get("code")
        self.type = spec.get("type")
        self.message = spec.get("message", "")
        self.body = {"code": self.code, "type": self.type, "message": self.message}
        self.response = SimpleNamespace(status_code=self.status_code, headers=dict(spec.get("headers") or {}))


class AnthropicAPIStatusError(Exception):
    def __init__(self, spec: dict[str, Any]) -> None:
        error = spec.get("error") or {}
        super().__init__(error.get("message", ""))
        self.status_code = spec["status"]
        self.message = error.get("message", "")
        self.body = {"type": "error", "error": dict(error)}
        self.response = SimpleNamespace(status_code=self.status_code, headers=dict(spec.get("headers") or {}))


OpenAIAPIStatusError.__name__ = AnthropicAPIStatusError.__name__ = "APIStatusError"


class APIError(Exception):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(f"{spec['code']} {spec.get('status', '')}. {spec.get('message', '')}")
        self.code = spec["code"]
        self.status = spec.get("status")
        self.message = spec.get("message", "")
        self.details = {
            "error": {
                "code": self.code,
                "status": self.status,
                "message": self.message,
                "details": spec.get("details", []),
            }
        }
        self.response = SimpleNamespace(status_code=self.code, headers=dict(spec.get("headers") or {}))


class APITimeoutError(Exception):
    pass


class APIConnectionError(Exception):
    pass


def native_error(spec: Optional[dict[str, Any]]) -> Optional[Exception]:
    if spec is None:
        return None
    shape = spec["shape"]
    if shape == "openai":
        return OpenAIAPIStatusError(spec)
    if shape == "anthropic":
        return AnthropicAPIStatusError(spec)
    if shape == "gemini":
        return APIError(spec)
    if shape == "timeout":
        return APITimeoutError("Request timed out.")
    if shape == "connection":
        return APIConnectionError("Connection error.")
    raise AssertionError(f"unknown error shape {shape!r}")


@pytest.mark.parametrize("case", HEADER_CASES, ids=[c["name"] for c in HEADER_CASES])
def test_header_vector(case: dict[str, Any]) -> None:
    parsed = parse_rate_limit_headers(case["headers"], now=HEADERS_NOW)
    assert {key: getattr(parsed, key) for key in case["expect"]} == case["expect"]


@pytest.mark.parametrize("case", CLASSIFICATION_CASES, ids=[c["name"] for c in CLASSIFICATION_CASES])
def test_classification_vector(case: dict[str, Any]) -> None:
    given = case["input"]
    outcome = classify(given["status"], given["headers"], native_error(given["error"]), now=CLASSIFICATION_NOW)
    assert {"outcome": outcome.kind.value, "retry_after_ms": outcome.retry_after_ms} == case["expect"]


def test_every_header_expectation_names_all_fields() -> None:
    fields = {"requests_remaining", "requests_limit", "requests_reset_ms", "tokens_remaining", "tokens_limit",
              "tokens_reset_ms", "retry_after_ms"}
    assert all(set(c["expect"]) == fields for c in HEADER_CASES)
