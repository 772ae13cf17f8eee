"""Runs every case of test/vectors/failover.json against the sync and the asyncio client's own failover
loop: fake endpoints answer each attempt as the case says, on a fake clock, with random fixed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import grpc
import grpc.aio
import pytest

from keymesh_client import AsyncClient, Client, KeyMeshError
from keymesh_client._channel import AioEndpoints, SyncEndpoints
from keymesh_client._route import OWNER_HEADER
from keymesh_client.v1 import admin_pb2, admin_pb2_grpc, pool_pb2, pool_pb2_grpc

VECTORS = json.loads((Path(__file__).resolve().parents[3] / "test" / "vectors" / "failover.json").read_text())
DEFAULTS = VECTORS["defaults"]
CASES = VECTORS["cases"]


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, metadata: tuple[tuple[str, str], ...]) -> None:
        super().__init__(code.name)
        self._code = code
        self._metadata = metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def trailing_metadata(self) -> tuple[()]:
        return ()


class Script:
    """The attempts the case expects of the current call, checked as the client makes them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.attempts: list[dict[str, Any]] = []

    def attempt(self, addr: str) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
        assert self.attempts, f"an attempt at {addr} the case does not expect"
        step = self.attempts.pop(0)
        assert "sleep_ms" not in step, f"an attempt at {addr} where the case expects a pause of {step['sleep_ms']} ms"
        assert step["expect"] == addr
        self.now += step.get("elapsed_ms", 0) / 1000
        owner = step.get("owner")
        return getattr(grpc.StatusCode, step["answer"]), ((OWNER_HEADER, owner),) if owner else ()

    def pause(self, seconds: float) -> None:
        assert self.attempts, f"a pause of {seconds * 1000} ms the case does not expect"
        step = self.attempts.pop(0)
        assert "sleep_ms" in step, f"a pause of {seconds * 1000} ms where the case expects an attempt at {step['expect']}"
        assert seconds * 1000 == pytest.approx(step["sleep_ms"])
        self.now += seconds


class _Answered:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class _SyncMethod:
    def __init__(self, script: Script, addr: str, response: Any) -> None:
        self._script, self._addr, self._response = script, addr, response

    def with_call(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> tuple[Any, _Answered]:
        code, md = self._script.attempt(self._addr)
        if code is not grpc.StatusCode.OK:
            raise _Error(code, md)
        return self._response, _Answered(md)

    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> Any:
        return self.with_call(request, timeout, metadata)[0]


class _AioCall:
    def __init__(self, script: Script, addr: str, response: Any) -> None:
        self._script, self._addr, self._response = script, addr, response
        self._metadata: tuple[tuple[str, str], ...] = ()

    def __await__(self) -> Any:
        return self._answer().__await__()

    async def _answer(self) -> Any:
        code, self._metadata = self._script.attempt(self._addr)
        if code is not grpc.StatusCode.OK:
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(*self._metadata), grpc.aio.Metadata(), code.name)
        return self._response

    async def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class _AioMethod(_SyncMethod):
    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> Any:
        return _AioCall(self._script, self._addr, self._response)


class _Channel:
    def __init__(self, addr: str) -> None:
        self.addr = addr

    def close(self) -> None:
        pass


class _AioChannel(_Channel):
    async def close(self) -> None:  # type: ignore[override]
        pass


def _stubs(script: Script, method: type[_SyncMethod]) -> tuple[Any, Any]:
    """Stub factories over a fake channel per endpoint: Acquire (a call about a pool), ListPools (none)."""

    def pool_stub(channel: _Channel) -> Any:
        stub = type("Pool", (), {})()
        stub.Acquire = method(script, channel.addr, pool_pb2.AcquireResponse(lease_id="l1"))
        return stub

    def admin_stub(channel: _Channel) -> Any:
        stub = type("Admin", (), {})()
        stub.ListPools = method(script, channel.addr, admin_pb2.ListPoolsResponse())
        return stub

    return pool_stub, admin_stub


def _wire(monkeypatch: pytest.MonkeyPatch, script: Script, endpoints_class: type, method: type[_SyncMethod]) -> None:
    pool_stub, admin_stub = _stubs(script, method)
    channel = _AioChannel if endpoints_class is AioEndpoints else _Channel
    monkeypatch.setattr(pool_pb2_grpc, "KeyPoolServiceStub", pool_stub)
    monkeypatch.setattr(admin_pb2_grpc, "PoolAdminServiceStub", admin_stub)
    monkeypatch.setattr(endpoints_class, "_channel", lambda self, addr: channel(addr))


def _expected_result(step: dict[str, Any], error: Optional[KeyMeshError]) -> None:
    assert (error.code.name if error else "OK") == step["result"]


def _stream_step(endpoints: Any, step: dict[str, Any], stream: list[str]) -> None:
    if "stream_open" in step:
        assert endpoints.stream_addr() == step["stream_open"]
        stream[:] = [endpoints.stream_addr()]
    else:
        endpoints.route.stream_ended(stream.pop())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_sync_failover(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script()
    _wire(monkeypatch, script, SyncEndpoints, _SyncMethod)
    deadline_s = case.get("deadline_ms", DEFAULTS["deadline_ms"]) / 1000
    with Client(case["endpoints"], default_timeout=deadline_s) as client:
        endpoints = client._endpoints
        endpoints._clock, endpoints._sleep = lambda: script.now, script.pause
        endpoints.route.rand = lambda: DEFAULTS["random"]
        stream: list[str] = []
        for step in case["steps"]:
            if "call" not in step:
                _stream_step(endpoints, step, stream)
                continue
            script.attempts = list(step["attempts"])
            pool = step["call"]["pool"]
            error: Optional[KeyMeshError] = None
            try:
                if pool is None:
                    client.admin.ListPools(admin_pb2.ListPoolsRequest())
                else:
                    client.pool.Acquire(pool_pb2.AcquireRequest(pool=pool))
            except KeyMeshError as failed:
                error = failed
            assert script.attempts == [], "attempts the case expects were not made"
            _expected_result(step, error)


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_asyncio_failover(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script()
    _wire(monkeypatch, script, AioEndpoints, _AioMethod)
    deadline_s = case.get("deadline_ms", DEFAULTS["deadline_ms"]) / 1000

    async def pause(seconds: float) -> None:
        script.pause(seconds)
        await asyncio.sleep(0)

    async with AsyncClient(case["endpoints"], default_timeout=deadline_s) as client:
        endpoints = client._endpoints
        endpoints._clock, endpoints._sleep = lambda: script.now, pause
        endpoints.route.rand = lambda: DEFAULTS["random"]
        stream: list[str] = []
        for step in case["steps"]:
            if "call" not in step:
                _stream_step(endpoints, step, stream)
                continue
            script.attempts = list(step["attempts"])
            pool = step["call"]["pool"]
            error: Optional[KeyMeshError] = None
            try:
                if pool is None:
                    await client.admin.ListPools(admin_pb2.ListPoolsRequest())
                else:
                    await client.pool.Acquire(pool_pb2.AcquireRequest(pool=pool))
            except KeyMeshError as failed:
                error = failed
            assert script.attempts == [], "attempts the case expects were not made"
            _expected_result(step, error)
