"""Runs test/vectors/retry.json, keepalive.json and vocabulary.json with a fake clock."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import status_pb2

from keymesh_client import KeyMeshError, Lease, OutcomeKind
from keymesh_client._renewal import Renewals
from keymesh_client.classify import Outcome
from keymesh_client.retry import Acquire, Pause, RetryPolicy, Run, retry_loop
from keymesh_client.v1 import common_pb2
from fake_pool import FakeRpcError, grant

VECTORS = Path(__file__).resolve().parents[3] / "test" / "vectors"
RETRY = json.loads((VECTORS / "retry.json").read_text())
KEEPALIVE = json.loads((VECTORS / "keepalive.json").read_text())
VOCABULARY = json.loads((VECTORS / "vocabulary.json").read_text())


def server_error(code: str, reason: str = "", retry_after_ms: Any = None, field: str = "") -> KeyMeshError:
    """A KeyMeshError as the client decodes it from a failed RPC carrying an ErrorDetail."""
    status_code = grpc.StatusCode[code]
    trailers: tuple = ()
    if reason:
        detail = common_pb2.ErrorDetail(reason=common_pb2.ErrorReason.Value("ERROR_REASON_" + reason), field=field)
        if retry_after_ms is not None:
            detail.retry_after.CopyFrom(Duration(seconds=retry_after_ms // 1000, nanos=retry_after_ms % 1000 * 1_000_000))
        packed = AnyProto()
        packed.Pack(detail)
        status = status_pb2.Status(code=status_code.value[0], message="scripted", details=[packed])
        trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    class Failed(FakeRpcError):
        def trailing_metadata(self) -> tuple:
            return trailers

    return KeyMeshError.from_rpc_error(Failed(status_code, "scripted"))


@dataclass
class FakeLease:
    key_id: str


@pytest.mark.parametrize("case", RETRY["cases"], ids=[c["name"] for c in RETRY["cases"]])
def test_retry_vectors(case: dict[str, Any]) -> None:
    d = RETRY["defaults"]
    policy = RetryPolicy(
        case.get("budget_ms", d["budget_ms"]) / 1000,
        case.get("wait_ms", d["wait_ms"]) / 1000,
        tuple(case.get("exclude", d["exclude"])),
        d["backoff_base_ms"] / 1000,
        d["backoff_cap_ms"] / 1000,
    )
    now = [0.0]
    script = list(case["script"])
    actions: list[dict[str, Any]] = []
    call_failure = RuntimeError("the call failed")
    acquire_errors: list[KeyMeshError] = []
    loop = retry_loop(policy, lambda: now[0], lambda: d["random"])
    answer: Any = None
    result = "success"
    try:
        while True:
            step = loop.send(answer)
            scripted = script.pop(0) if script else {}
            if isinstance(step, Acquire):
                actions.append({"acquire": {"exclude": list(step.exclude), "wait_ms": round(step.wait_s * 1000)}})
                now[0] += scripted.get("elapsed_ms", 0) / 1000
                if "lend" in scripted:
                    answer = FakeLease(scripted["lend"])
                else:
                    fail = scripted.get("fail", {"code": "INTERNAL"})
                    answer = server_error(fail["code"], fail.get("reason", ""))
                    acquire_errors.append(answer)
            elif isinstance(step, Run):
                actions.append({"call": step.lease.key_id})
                outcome = Outcome(OutcomeKind(scripted.get("outcome", "success")), scripted.get("retry_after_ms"))
                answer = (outcome, None if outcome.kind is OutcomeKind.SUCCESS else call_failure, "ok")
            else:
                assert isinstance(step, Pause)
                actions.append({"sleep_ms": round(step.seconds * 1000)})
                now[0] += step.seconds
                answer = None
    except StopIteration:
        result = "success"
    except RuntimeError as error:
        result = "last_call" if error is call_failure else f"unexpected: {error}"
    except KeyMeshError as error:
        result = "acquire_error" if acquire_errors and error is acquire_errors[-1] else f"unexpected: {error}"
    expected = [
        {"acquire": s["acquire"]} if "acquire" in s else {"call": s["call"]} if "call" in s else {"sleep_ms": s["sleep_ms"]}
        for s in case["script"]
    ]
    assert (actions, result) == (expected, case["result"])


@pytest.mark.parametrize("case", KEEPALIVE["cases"], ids=[c["name"] for c in KEEPALIVE["cases"]])
def test_keepalive_vectors(case: dict[str, Any]) -> None:
    ended: dict[str, str] = {}
    renewals = Renewals(lambda lease, reason, message: ended.__setitem__(lease.lease_id, reason))
    leases: dict[str, Lease] = {}
    state = {"now": 0.0, "opened": 0, "wake": None}
    sent: list[str] = []

    def drive() -> None:
        step = renewals.step(state["now"])
        state["opened"] += step.open
        sent.extend(lease.lease_id for lease in step.send)
        state["wake"] = step.wake_at_ms

    for s in case["steps"]:
        while state["wake"] is not None and state["wake"] <= s["at_ms"]:
            state["now"] = state["wake"]
            drive()
        state["now"] = now = s["at_ms"]
        poke = True
        if "hold" in s:
            h = s["hold"]
            leases[h["lease_id"]] = Lease(grant(h["lease_id"]), threading.Event())
            poke = renewals.hold(leases[h["lease_id"]], h["ttl_ms"], h["renew_interval_ms"], now)
        elif "release" in s:
            poke = renewals.release(s["release"])
        elif "renewed" in s:
            r = s["renewed"]
            renewals.renewed(r["lease_id"], r["ttl_ms"], r["renew_interval_ms"], now)
        elif "gone" in s:
            renewals.gone(s["gone"]["lease_id"], s["gone"]["reason"])
        elif "break" in s:
            renewals.broken(now)
        if poke:
            drive()
        if "expect" in s:
            e = s["expect"]
            got = {"stream": renewals.stream, "opened": state["opened"], "sent": sorted(sent), "ended": dict(ended)}
            want = {
                "stream": e.get("stream", got["stream"]),
                "opened": e.get("opened", got["opened"]),
                "sent": sorted(e.get("sent", [])),
                "ended": e.get("ended", {}),
            }
            assert (now, got) == (now, want)
            sent.clear()
            ended.clear()


def test_vocabulary_lease_fields_and_outcomes() -> None:
    lease = Lease(grant("l1"), threading.Event())
    for name in VOCABULARY["lease_fields"]:
        assert hasattr(lease, name), name
    assert [kind.value for kind in OutcomeKind] == VOCABULARY["outcomes"]


@pytest.mark.parametrize("case", VOCABULARY["errors"], ids=[c["name"] for c in VOCABULARY["errors"]])
def test_vocabulary_errors(case: dict[str, Any]) -> None:
    status, detail = case["status"], case["status"].get("detail") or {}
    error = server_error(status["code"], detail.get("reason", ""), detail.get("retry_after_ms"), detail.get("field", ""))
    retry_after_ms = None if error.retry_after is None else error.retry_after // timedelta(milliseconds=1)
    got = {"code": error.code.name, "reason": error.reason, "retry_after_ms": retry_after_ms, "field": error.field}
    assert got == case["expect"]
