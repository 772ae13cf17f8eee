"""Runs every case of test/vectors/*.json (the behaviour all KeyMesh clients share)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from keymesh_client.classify import classify
from sdk_errors import native_error
from keymesh_client.ratelimit import parse_rate_limit_headers

VECTORS = Path(__file__).resolve().parents[3] / "test" / "vectors"


def _load(name: str) -> tuple[datetime, list[dict[str, Any]]]:
    data = json.loads((VECTORS / name).read_text())
    # Python 3.10's fromisoformat does not read a "Z" suffix.
    return datetime.fromisoformat(data["now"].replace("Z", "+00:00")), data["cases"]


HEADERS_NOW, HEADER_CASES = _load("headers.json")
CLASSIFICATION_NOW, CLASSIFICATION_CASES = _load("classification.json")


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
