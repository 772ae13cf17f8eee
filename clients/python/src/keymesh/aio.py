"""The asyncio KeyMesh client (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Optional, Sequence, TypeVar

import grpc
import grpc.aio

from keymesh._channel import aio_channel
from keymesh.classify import Outcome, OutcomeKind
from keymesh.client import FINAL_RENEWAL_CODES, RENEWAL_RETRY_PAUSE_S
from keymesh.errors import KeyMeshError, ProviderError
from keymesh.lease import FINAL_REPORT_TIMEOUT_S, Lease, LeaseOptions, Seconds, seconds
from keymesh.retry import RetryState
from keymesh.v1 import admin_pb2_grpc, pool_pb2, pool_pb2_grpc

T = TypeVar("T")
log = logging.getLogger("keymesh")


class AsyncClient:
    """The asyncio twin of Client: same arguments, awaitable stubs in `pool` and `admin`."""

    def __init__(
        self,
        addr: str = "127.0.0.1:50051",
        *,
        tls: bool = False,
        root_certificates: Optional[bytes] = None,
        token: Optional[str] = None,
        default_timeout: Optional[float] = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.default_timeout = default_timeout
        self._channel = aio_channel(
            addr, tls=tls, root_certificates=root_certificates, token=token, default_timeout=default_timeout, options=options
        )
        self.pool = pool_pb2_grpc.KeyPoolServiceStub(self._channel)
        self.admin = admin_pb2_grpc.PoolAdminServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

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
        """Borrow a key without renewal or reporting: end it yourself with pool.Release/MarkFailed."""
        options = LeaseOptions(wait_timeout, ttl, holder, estimated_tokens, tuple(exclude_key_ids))
        return await self._acquire(pool, options)

    async def _acquire(
        self, pool: str, options: LeaseOptions, exclude: Optional[Iterable[str]] = None, wait: Optional[Seconds] = None
    ) -> Lease:
        response = await self.pool.Acquire(
            options.acquire_request(pool, exclude, wait), timeout=options.acquire_timeout(self.default_timeout, wait)
        )
        return Lease(response, asyncio.Event())

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
        state = RetryState(deadline=time.monotonic() + budget_s, base_exclude=options.exclude_key_ids)
        attempt = 0
        while True:
            try:
                lease = await self._acquire_within(pool, options, state)
            except KeyMeshError as error:
                if not state.after_acquire_error(error):
                    raise state.final_error(error)
            else:
                scope = AsyncLeaseScope(self, pool, options, lease)
                failure: Optional[Exception] = None
                try:
                    async with scope:
                        result = await fn(lease)
                except Exception as error:
                    failure = error
                outcome = scope.outcome
                assert outcome is not None  # the scope's exit always sets it
                if failure is None and outcome.kind is OutcomeKind.SUCCESS:
                    return result
                if not state.after_failure(lease.key_id, outcome, failure, time.monotonic()):
                    raise failure if failure is not None else ProviderError(outcome)
            pause = state.pause(attempt, backoff_base_s, backoff_cap_s, time.monotonic())
            if pause is None:
                raise state.final_error()
            await asyncio.sleep(pause)
            attempt += 1

    async def _acquire_within(self, pool: str, options: LeaseOptions, state: RetryState) -> Lease:
        if state.moved_away:
            try:
                return await self._acquire(pool, options, state.exclude, 0)
            except KeyMeshError as error:
                if state.past_budget or error.reason != "NO_KEY_AVAILABLE":
                    raise
        wait = state.acquire_wait(None if options.wait_timeout is None else seconds(options.wait_timeout), time.monotonic())
        return await self._acquire(pool, options, state.base_exclude, wait)


class AsyncLeaseScope:
    """The async context manager returned by AsyncClient.lease()."""

    def __init__(self, client: AsyncClient, pool: str, options: LeaseOptions, lease: Optional[Lease] = None) -> None:
        self._client = client
        self._pool = pool
        self._options = options
        self._lease = lease
        self._renewer: Optional[_AsyncRenewer] = None
        self._started = 0.0
        self.outcome: Optional[Outcome] = None

    async def __aenter__(self) -> Lease:
        if self._lease is None:
            self._lease = await self._client._acquire(self._pool, self._options)
        self._renewer = _AsyncRenewer(self._client.pool, self._lease, self._options.ttl)
        self._started = time.monotonic()
        return self._lease

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        latency = time.monotonic() - self._started
        assert self._lease is not None and self._renewer is not None
        self.outcome = self._lease.final_outcome(exc)
        method, request = self._lease.final_request(self.outcome, latency if exc is None or isinstance(exc, Exception) else None)
        # Shielded: a cancelled block must still end its lease.
        report = asyncio.ensure_future(self._end(method, request))
        # When the caller is cancelled again it stops awaiting; the report's failure is then moot.
        report.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            await asyncio.shield(report)
        except asyncio.CancelledError:
            if exc is None:
                raise
        except KeyMeshError as error:
            if error.lease_ended:
                return
            if exc is None:
                raise
            log.warning("keymesh: could not end lease of key %s: %s", self._lease.key_id, error)

    async def _end(self, method: str, request: Any) -> None:
        assert self._renewer is not None
        await self._renewer.stop()
        await getattr(self._client.pool, method)(request, timeout=FINAL_REPORT_TIMEOUT_S)


class _AsyncRenewer:
    """Renews one lease over a KeepAlive stream in a background task until stopped or gone."""

    def __init__(self, stub: pool_pb2_grpc.KeyPoolServiceStub, lease: Lease, ttl: Optional[Seconds]) -> None:
        self._stub = stub
        self._lease = lease
        self._ttl = ttl
        self._stopped = asyncio.Event()
        self._call: Any = None
        self._task = asyncio.create_task(self._run(), name=f"keymesh-renew-{lease.key_id}")

    async def stop(self) -> None:
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _requests(self) -> AsyncIterator[pool_pb2.KeepAliveRequest]:
        # Renew at once: the server pushes revocations only for leases the stream has renewed.
        yield self._lease.keep_alive_request(self._ttl)
        while not await _wait(self._stopped, self._lease.renew_interval.total_seconds()):
            yield self._lease.keep_alive_request(self._ttl)

    async def _run(self) -> None:
        try:
            await self._renew_until_stopped_or_gone()
        finally:
            if self._call is not None:
                self._call.cancel()

    async def _renew_until_stopped_or_gone(self) -> None:
        while not self._stopped.is_set():
            try:
                self._call = self._stub.KeepAlive(self._requests())
                async for response in self._call:
                    if not self._lease._apply(response):
                        return
            except grpc.aio.AioRpcError as error:
                if self._stopped.is_set():
                    return
                if error.code() in FINAL_RENEWAL_CODES:
                    self._lease._gone(KeyMeshError.from_rpc_error(error).reason, error.details() or "")
                    return
            if time.monotonic() >= self._lease.local_deadline:
                self._lease._gone("LEASE_EXPIRED", "renewal failed until the lease expired")
                return
            await _wait(self._stopped, RENEWAL_RETRY_PAUSE_S)


async def _wait(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for event up to timeout_s; True if it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except asyncio.TimeoutError:
        return False
    return True
