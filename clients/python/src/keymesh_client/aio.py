"""The asyncio KeyMesh client (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Optional, Sequence, TypeVar, Union, cast

import grpc
import grpc.aio

from keymesh_client._channel import ADMIN, POOL, AioEndpoints, RoutedStub, Target
from keymesh_client._renewal import Renewals, Stream, now_ms
from keymesh_client.classify import Outcome, OutcomeKind
from keymesh_client.errors import KeyMeshError
from keymesh_client.lease import FINAL_REPORT_TIMEOUT_S, Lease, LeaseOptions, Seconds, report_request, renew_request, seconds
from keymesh_client.retry import Acquire, RetryPolicy, Run, failure_of, retry_loop
from keymesh_client.v1 import pool_pb2

T = TypeVar("T")
log = logging.getLogger("keymesh_client")


class AsyncClient:
    """The asyncio twin of Client: same arguments (one endpoint or several), awaitable stubs in `pool` and `admin`."""

    def __init__(
        self,
        addr: Target = "127.0.0.1:50051",
        *,
        tls: bool = False,
        root_certificates: Optional[bytes] = None,
        token: Optional[str] = None,
        default_timeout: Optional[float] = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.default_timeout = default_timeout
        self._endpoints = AioEndpoints(
            addr, tls=tls, root_certificates=root_certificates, token=token, default_timeout=default_timeout, options=options
        )
        self.pool: Any = RoutedStub(self._endpoints, POOL)
        self.admin: Any = RoutedStub(self._endpoints, ADMIN)
        self._keeper = _AsyncKeeper(self._endpoints)

    async def close(self) -> None:
        await self._keeper.close()
        await self._endpoints.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def acquire(
        self,
        pool: str,
        *,
        wait_timeout: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        holder: Optional[str] = None,
        estimated_tokens: int = 0,
        exclude_key_ids: Iterable[str] = (),
    ) -> Lease:
        """Borrow a key without renewal or reporting: end it with release / mark_failed / mark_rate_limited."""
        options = LeaseOptions(wait_timeout, ttl, holder, estimated_tokens, tuple(exclude_key_ids))
        return await self._acquire(pool, options)

    async def _acquire(
        self, pool: str, options: LeaseOptions, exclude: Optional[Iterable[str]] = None, wait: Optional[Seconds] = None
    ) -> Lease:
        request = options.acquire_request(pool, exclude, wait)
        response = await self._endpoints.unary(POOL, "Acquire", request, options.acquire_timeout(self.default_timeout, wait), None, pool)
        return Lease(response, asyncio.Event())

    async def release(
        self,
        lease: Lease,
        *,
        latency: Optional[Seconds] = None,
        headers: Any = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
    ) -> None:
        """End `lease` after a successful call: its latency, the provider's budget from `headers`, token usage."""
        await self._report(
            report_request(
                lease, OutcomeKind.SUCCESS, latency=latency, headers=headers, input_tokens=input_tokens, output_tokens=output_tokens
            ),
            pool=lease.pool,
        )

    async def mark_failed(
        self,
        lease: Lease,
        kind: Union[OutcomeKind, str] = OutcomeKind.TRANSIENT,
        *,
        http_status: int = 0,
        message: str = "",
        latency: Optional[Seconds] = None,
    ) -> None:
        """End `lease` after a failed call of the given kind ("auth", "transient", "overloaded", ...)."""
        await self._report(report_request(lease, kind, http_status=http_status, message=message, latency=latency), pool=lease.pool)

    async def mark_rate_limited(self, lease: Lease, *, retry_after: Optional[Seconds] = None, headers: Any = None) -> None:
        """End `lease` after a 429; the key cools down for `retry_after` (else the headers', else the pool's default)."""
        await self._report(report_request(lease, OutcomeKind.RATE_LIMITED, retry_after=retry_after, headers=headers), pool=lease.pool)

    async def renew(self, lease: Lease, *, ttl: Optional[Seconds] = None) -> None:
        """Extend `lease` once (RenewLease); raises KeyMeshError with a LEASE_* reason when it is over."""
        response = await self._endpoints.unary(POOL, "RenewLease", renew_request(lease, ttl), None, None, lease.pool)
        lease._renewed(response.expires_at, response.ttl, response.renew_interval)

    async def _report(self, rpc: tuple[str, Any], timeout: Optional[float] = None, pool: Optional[str] = None) -> None:
        method, request = rpc
        await self._endpoints.unary(POOL, method, request, timeout, None, pool)

    def lease(
        self,
        pool: str,
        *,
        wait_timeout: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        holder: Optional[str] = None,
        estimated_tokens: int = 0,
        exclude_key_ids: Iterable[str] = (),
    ) -> "AsyncLeaseScope":
        """`async with client.lease("openai") as lease:` — see Client.lease."""
        options = LeaseOptions(wait_timeout, ttl, holder, estimated_tokens, tuple(exclude_key_ids))
        return AsyncLeaseScope(self, pool, options)

    async def call_with_retry(
        self,
        pool: str,
        fn: Callable[[Lease], Awaitable[T]],
        *,
        budget_s: float = 30.0,
        wait_timeout: Optional[float] = None,
        ttl: Optional[Seconds] = None,
        holder: Optional[str] = None,
        estimated_tokens: int = 0,
        exclude_key_ids: Iterable[str] = (),
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 5.0,
    ) -> T:
        """`await client.call_with_retry(pool, fn)` — see Client.call_with_retry."""
        options = LeaseOptions(wait_timeout, ttl, holder, estimated_tokens, tuple(exclude_key_ids))
        policy = RetryPolicy(
            budget_s, budget_s if wait_timeout is None else seconds(wait_timeout), options.exclude_key_ids, backoff_base_s, backoff_cap_s
        )
        loop = retry_loop(policy, time.monotonic)
        answer: Any = None
        try:
            while True:
                step = loop.send(answer)
                if isinstance(step, Acquire):
                    try:
                        answer = await self._acquire(pool, options, step.exclude, step.wait_s)
                    except KeyMeshError as error:
                        answer = error
                elif isinstance(step, Run):
                    answer = await self._run_scope(pool, options, step.lease, fn)
                else:
                    answer = await asyncio.sleep(step.seconds)
        except StopIteration as done:
            return cast(T, done.value)

    async def _run_scope(self, pool: str, options: LeaseOptions, lease: Lease, fn: Callable[[Lease], Awaitable[T]]) -> tuple[Outcome, Optional[BaseException], Optional[T]]:
        scope = AsyncLeaseScope(self, pool, options, lease)
        failure: Optional[Exception] = None
        result: Optional[T] = None
        try:
            async with scope:
                result = await fn(lease)
        except Exception as error:
            failure = error
        assert scope.outcome is not None  # the scope's exit always sets it
        return scope.outcome, failure_of(scope.outcome, failure), result

class AsyncLeaseScope:
    """The async context manager returned by AsyncClient.lease()."""

    def __init__(self, client: AsyncClient, pool: str, options: LeaseOptions, lease: Optional[Lease] = None) -> None:
        self._client = client
        self._pool = pool
        self._options = options
        self._lease = lease
        self._started = 0.0
        self.outcome: Optional[Outcome] = None

    async def __aenter__(self) -> Lease:
        if self._lease is None:
            self._lease = await self._client._acquire(self._pool, self._options)
        self._client._keeper.watch(self._lease, self._options.ttl)
        self._started = time.monotonic()
        return self._lease

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        latency = time.monotonic() - self._started
        assert self._lease is not None
        self._client._keeper.unwatch(self._lease)
        self.outcome = self._lease.final_outcome(exc)
        rpc = self._lease.final_request(self.outcome, latency if exc is None or isinstance(exc, Exception) else None)
        try:
            await self._client._report(rpc, FINAL_REPORT_TIMEOUT_S, self._lease.pool)
        except asyncio.CancelledError:
            # Cancelled while ending the lease: it is ended again in the background (a second end of
            # an ended lease is answered as moot), since a cancelled block must still end its lease.
            _end_in_background(self._client._report(rpc, FINAL_REPORT_TIMEOUT_S, self._lease.pool))
            if exc is None:
                raise
        except KeyMeshError as error:
            if error.lease_ended:
                return
            if exc is None and not error.unreachable:
                raise
            log.warning("keymesh: could not end lease of key %s: %s", self._lease.key_id, error)


_ending: set["asyncio.Task[None]"] = set()


def _end_in_background(report: Awaitable[None]) -> None:
    task = asyncio.ensure_future(report)
    _ending.add(task)
    # Nobody awaits it: its failure is logged by nobody and moot (the lease ends at its ttl).
    task.add_done_callback(lambda done: _ending.discard(done) or done.cancelled() or done.exception())


class _AsyncKeeper:
    """Renews every lease of an AsyncClient over one KeepAlive stream, on the schedule of Renewals.

    The stream opens on the endpoint that answered last; when it breaks, the next one re-sends every
    lease held, on the next endpoint.

    One task per client (started with its first lease) opens a stream when a renewal falls due and
    reads its answers; the request iterator, which grpc.aio consumes in its own task, sends each
    renewal when it falls due and half-closes the stream when no lease is left.
    """

    def __init__(self, endpoints: AioEndpoints) -> None:
        self._endpoints = endpoints
        self._renewals = Renewals(lambda lease, reason, message: lease._gone(reason, message))
        self._ttls: dict[str, Optional[Seconds]] = {}
        self._changed = asyncio.Event()
        self._task: Optional[asyncio.Task[None]] = None
        self._call: Any = None
        self._closed = False

    def watch(self, lease: Lease, ttl: Optional[Seconds]) -> None:
        if self._closed:
            raise ValueError("the client is closed")
        self._ttls[lease.lease_id] = ttl
        now = now_ms()
        if self._renewals.hold(lease, lease.ms_left(now), lease.renew_interval_ms, now):
            self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="keymesh-keepalive")

    def unwatch(self, lease: Lease) -> None:
        self._ttls.pop(lease.lease_id, None)
        if self._renewals.release(lease.lease_id):
            self._changed.set()

    async def close(self) -> None:
        self._closed = True
        self._changed.set()
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    async def _run(self) -> None:
        try:
            while not self._closed:
                self._changed.clear()
                now = now_ms()
                step = self._renewals.step(now)
                if not step.open:
                    await self._change(step.wake_at_ms, now)
                    continue
                stream = Stream()
                addr = self._endpoints.stream_addr()
                keep_alive = self._endpoints.stubs(addr)[POOL].KeepAlive
                self._call = keep_alive(self._requests(stream, step.send), metadata=self._endpoints.metadata(None))
                await self._serve(self._call, stream, addr)
        finally:
            self._task = None
            if self._call is not None:
                self._call.cancel()
                self._call = None

    async def _serve(self, call: Any, stream: Stream, addr: str) -> None:
        """Applies one stream's answers until it ends; an unasked end hands the next stream to the next endpoint."""
        try:
            async for response in call:
                if self._renewals.answer(response, now_ms()):
                    self._changed.set()
        except grpc.aio.AioRpcError:
            pass
        stream.ended = True
        self._call = None
        if not stream.half_closed:
            self._endpoints.route.stream_ended(addr)
            self._renewals.broken(now_ms())
        self._changed.set()

    async def _requests(self, stream: Stream, first: list[Lease]) -> AsyncIterator[pool_pb2.KeepAliveRequest]:
        leases = first
        while True:
            for lease in leases:
                yield lease.keep_alive_request(self._ttls.get(lease.lease_id))
            while True:
                self._changed.clear()
                if self._closed or stream.ended:
                    return
                now = now_ms()
                step = self._renewals.step(now)
                if step.close:
                    stream.half_closed = True
                    return
                if step.send:
                    leases = step.send
                    break
                await self._change(step.wake_at_ms, now)

    async def _change(self, wake_at_ms: Optional[float], now: float) -> None:
        """Wait until something changes or wake_at_ms comes (no task per wait)."""
        timer = None
        if wake_at_ms is not None:
            timer = asyncio.get_running_loop().call_later(max(wake_at_ms - now, 0) / 1000, self._changed.set)
        try:
            await self._changed.wait()
        finally:
            if timer is not None:
                timer.cancel()
