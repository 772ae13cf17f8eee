"""In-memory KeyPoolService stubs (sync and asyncio) whose KeepAlive streams the test drives by hand.

Like grpcio, a stream pulls its request iterator on its own thread (sync) or task (asyncio); the
test reads what was sent with `take`, then answers, breaks or ends the stream.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, Iterator, Optional

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from keymesh_client.v1 import common_pb2, pool_pb2

TAKE_TIMEOUT_S = 5.0
# What a stream's request iterator sent last when it ended on its own (the client half-closed).
HALF_CLOSED = "half-closed"
_END = object()


def grant(lease_id: str, pool: str = "p", ttl_s: int = 30, renew_interval_ms: int = 10_000) -> pool_pb2.AcquireResponse:
    return pool_pb2.AcquireResponse(
        lease_id=lease_id,
        pool=pool,
        key=f"sk-{lease_id}",
        key_id="k0",
        expires_at=Timestamp(seconds=1_767_225_600),
        ttl=Duration(seconds=ttl_s),
        renew_interval=Duration(seconds=renew_interval_ms // 1000, nanos=renew_interval_ms % 1000 * 1_000_000),
    )


def renewed(lease_id: str, ttl_s: int = 30, renew_interval_s: int = 10) -> pool_pb2.KeepAliveResponse:
    return pool_pb2.KeepAliveResponse(
        lease_id=lease_id,
        renewed=pool_pb2.LeaseRenewed(
            expires_at=Timestamp(seconds=1_767_225_600), ttl=Duration(seconds=ttl_s), renew_interval=Duration(seconds=renew_interval_s)
        ),
    )


def gone(lease_id: str, reason: common_pb2.ErrorReason = common_pb2.ERROR_REASON_LEASE_REVOKED) -> pool_pb2.KeepAliveResponse:
    return pool_pb2.KeepAliveResponse(lease_id=lease_id, gone=pool_pb2.LeaseGone(reason=reason, message="revoked"))


class FakeRpcError(grpc.RpcError):
    """What a failed grpcio stream raises."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return ()


def aio_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _lease_ids(items: list[Any]) -> list[str]:
    return [item if item == HALF_CLOSED else item.lease_id for item in items]


class _Answers(ABC):
    """What a test makes a fake call answer: responses, a failure, or the end of the stream."""

    _responses: Any
    _done: bool

    @abstractmethod
    def _error(self, code: grpc.StatusCode, details: str) -> BaseException:
        """The failure as this kind of call raises it."""

    def answer(self, *responses: pool_pb2.KeepAliveResponse) -> None:
        for response in responses:
            self._responses.put_nowait(response)

    def fail(self, code: grpc.StatusCode, details: str = "") -> None:
        self._done = True
        self._responses.put_nowait(self._error(code, details))

    def end(self) -> None:
        self._done = True
        self._responses.put_nowait(_END)


class FakeCall(_Answers):
    """A sync KeepAlive call: its requests are pulled on a thread of its own, as grpcio does."""

    def __init__(self, requests: Iterator[pool_pb2.KeepAliveRequest]) -> None:
        self.sent: "queue.Queue[Any]" = queue.Queue()
        self.cancelled = threading.Event()
        self._responses: "queue.Queue[Any]" = queue.Queue()
        self._done = False
        self.consumer = threading.Thread(target=self._consume, args=(requests,), name="fake-keepalive-requests", daemon=True)
        self.consumer.start()

    def _consume(self, requests: Iterator[pool_pb2.KeepAliveRequest]) -> None:
        for request in requests:
            if self._done:
                return
            self.sent.put(request)
        if not self._done:
            self.sent.put(HALF_CLOSED)
            self.end()

    def take(self, n: int) -> list[str]:
        """The lease ids of the next n requests sent (the half-close as HALF_CLOSED)."""
        return _lease_ids([self.sent.get(timeout=TAKE_TIMEOUT_S) for _ in range(n)])

    def half_closed(self) -> bool:
        """Waits for the client to half-close the stream, skipping the renewals it sent before."""
        while self.take(1) != [HALF_CLOSED]:
            pass
        return True

    def __iter__(self) -> "FakeCall":
        return self

    def __next__(self) -> pool_pb2.KeepAliveResponse:
        item = self._responses.get()
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, pool_pb2.KeepAliveResponse)
        return item

    def _error(self, code: grpc.StatusCode, details: str) -> BaseException:
        return FakeRpcError(code, details)

    def cancel(self) -> None:
        self.cancelled.set()
        self.fail(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")


class _UnaryCall:
    """The call beside a unary answer: grpcio's with_call returns it, grpc.aio awaits it."""

    def __init__(self, answer: Any = None) -> None:
        self._answer = answer

    def __await__(self) -> Any:
        return self._answer.__await__()

    def initial_metadata(self) -> Any:
        return ()


class _AioCall(_UnaryCall):
    async def initial_metadata(self) -> Any:  # type: ignore[override]
        return ()


class _Unary:
    """A unary method as a grpcio stub has it: called, or with_call; the fakes answer from `fn`."""

    def __init__(self, fn: Any) -> None:
        self._fn = fn

    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> Any:
        return self._fn(request)

    def with_call(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> tuple[Any, _UnaryCall]:
        return self._fn(request), _UnaryCall()


class _AioUnary(_Unary):
    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> Any:
        return _AioCall(self._fn(request))


class FakePool:
    """The sync KeyPoolService stub: Acquire grants lease-1, lease-2, …; Release and MarkFailed are recorded."""

    def __init__(self, renew_interval_ms: int = 250) -> None:
        self.renew_interval_ms = renew_interval_ms
        self.calls: list[FakeCall] = []
        self.released: list[str] = []
        self.failed: list[str] = []
        self._opened = threading.Condition()
        self._ids = itertools.count(1)
        self.Acquire = _Unary(self._acquire)
        self.Release = _Unary(self._release)
        self.MarkFailed = _Unary(self._mark_failed)

    def _acquire(self, request: pool_pb2.AcquireRequest) -> pool_pb2.AcquireResponse:
        return grant(f"lease-{next(self._ids)}", request.pool, renew_interval_ms=self.renew_interval_ms)

    def _release(self, request: pool_pb2.ReleaseRequest) -> pool_pb2.ReleaseResponse:
        self.released.append(request.lease_id)
        return pool_pb2.ReleaseResponse()

    def _mark_failed(self, request: pool_pb2.MarkFailedRequest) -> pool_pb2.MarkFailedResponse:
        self.failed.append(request.lease_id)
        return pool_pb2.MarkFailedResponse()

    def KeepAlive(self, requests: Iterator[pool_pb2.KeepAliveRequest], metadata: Any = None) -> FakeCall:
        with self._opened:
            self.calls.append(FakeCall(requests))
            self._opened.notify_all()
            return self.calls[-1]

    def stream(self, n: int) -> FakeCall:
        """The n-th stream opened (1-based), once it is."""
        with self._opened:
            assert self._opened.wait_for(lambda: len(self.calls) >= n, TAKE_TIMEOUT_S), f"stream {n} was never opened"
            return self.calls[n - 1]


class FakeAioCall(_Answers):
    """An asyncio KeepAlive call: its requests are pulled in a task of its own, as grpc.aio does."""

    def __init__(self, requests: AsyncIterator[pool_pb2.KeepAliveRequest]) -> None:
        self.sent: "asyncio.Queue[Any]" = asyncio.Queue()
        self.cancelled = False
        self._responses: "asyncio.Queue[Any]" = asyncio.Queue()
        self._done = False
        self.consumer = asyncio.get_running_loop().create_task(self._consume(requests), name="fake-keepalive-requests")

    async def _consume(self, requests: AsyncIterator[pool_pb2.KeepAliveRequest]) -> None:
        async for request in requests:
            if self._done:
                return
            self.sent.put_nowait(request)
        if not self._done:
            self.sent.put_nowait(HALF_CLOSED)
            self.end()

    async def take(self, n: int) -> list[str]:
        """The lease ids of the next n requests sent (the half-close as HALF_CLOSED)."""
        return _lease_ids([await asyncio.wait_for(self.sent.get(), TAKE_TIMEOUT_S) for _ in range(n)])

    async def half_closed(self) -> bool:
        """Waits for the client to half-close the stream, skipping the renewals it sent before."""
        while await self.take(1) != [HALF_CLOSED]:
            pass
        return True

    def __aiter__(self) -> "FakeAioCall":
        return self

    async def __anext__(self) -> pool_pb2.KeepAliveResponse:
        item = await self._responses.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, pool_pb2.KeepAliveResponse)
        return item

    def _error(self, code: grpc.StatusCode, details: str) -> BaseException:
        return aio_error(code, details)

    def cancel(self) -> None:
        self.cancelled = True
        self.consumer.cancel()


class FakeAioPool:
    """The asyncio KeyPoolService stub, as FakePool."""

    def __init__(self, renew_interval_ms: int = 250) -> None:
        self.renew_interval_ms = renew_interval_ms
        self.calls: list[FakeAioCall] = []
        self.released: list[str] = []
        self.failed: list[str] = []
        self._opened = asyncio.Event()
        self._ids = itertools.count(1)
        self.Acquire = _AioUnary(self._acquire)
        self.Release = _AioUnary(self._release)
        self.MarkFailed = _AioUnary(self._mark_failed)

    async def _acquire(self, request: pool_pb2.AcquireRequest) -> pool_pb2.AcquireResponse:
        return grant(f"lease-{next(self._ids)}", request.pool, renew_interval_ms=self.renew_interval_ms)

    async def _release(self, request: pool_pb2.ReleaseRequest) -> pool_pb2.ReleaseResponse:
        self.released.append(request.lease_id)
        return pool_pb2.ReleaseResponse()

    async def _mark_failed(self, request: pool_pb2.MarkFailedRequest) -> pool_pb2.MarkFailedResponse:
        self.failed.append(request.lease_id)
        return pool_pb2.MarkFailedResponse()

    def KeepAlive(self, requests: AsyncIterator[pool_pb2.KeepAliveRequest], metadata: Any = None) -> FakeAioCall:
        self.calls.append(FakeAioCall(requests))
        self._opened.set()
        return self.calls[-1]

    async def stream(self, n: int) -> FakeAioCall:
        """The n-th stream opened (1-based), once it is."""
        while len(self.calls) < n:
            self._opened.clear()
            await asyncio.wait_for(self._opened.wait(), TAKE_TIMEOUT_S)
        return self.calls[n - 1]
