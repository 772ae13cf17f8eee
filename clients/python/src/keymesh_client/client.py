"""The synchronous KeyMesh client (grpcio)."""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar, Union, cast

import grpc

from keymesh_client._channel import ADMIN, POOL, RoutedStub, SyncEndpoints, Target
from keymesh_client._renewal import Renewals, Step, Stream, now_ms
from keymesh_client.classify import Outcome, OutcomeKind
from keymesh_client.errors import KeyMeshError
from keymesh_client.lease import FINAL_REPORT_TIMEOUT_S, Lease, LeaseOptions, Seconds, report_request, renew_request, seconds
from keymesh_client.retry import Acquire, RetryPolicy, Run, failure_of, retry_loop
from keymesh_client.v1 import pool_pb2

T = TypeVar("T")
log = logging.getLogger("keymesh_client")
# Scopes that may join before the keeper's thread is woken to take them in.
_JOINING_BATCH = 512


class Client:
    """A KeyMesh client. `pool` is the KeyPoolService stub, `admin` the PoolAdminService stub.

    `addr` is one endpoint (host:port; a name that resolves to several addresses means each of them)
    or a list of endpoints, the replicas of one KeyMesh. Every unary RPC gets `default_timeout`
    unless given one, sends `authorization: Bearer <token>` when a token is set, is retried on
    another endpoint on UNAVAILABLE (with backoff, within its deadline), goes straight to the pool's
    owner once an answer named it, and raises KeyMeshError on failure.
    """

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
        self._endpoints = SyncEndpoints(
            addr, tls=tls, root_certificates=root_certificates, token=token, default_timeout=default_timeout, options=options
        )
        self.pool: Any = RoutedStub(self._endpoints, POOL)
        self.admin: Any = RoutedStub(self._endpoints, ADMIN)
        self._keeper = _Keeper(self._endpoints)

    def close(self) -> None:
        self._keeper.close()
        self._endpoints.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acquire(
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
        return self._acquire(pool, options)

    def _acquire(self, pool: str, options: LeaseOptions, exclude: Optional[Iterable[str]] = None, wait: Optional[Seconds] = None) -> Lease:
        request = options.acquire_request(pool, exclude, wait)
        response = self._endpoints.unary(POOL, "Acquire", request, options.acquire_timeout(self.default_timeout, wait), None, pool)
        return Lease(response, threading.Event())

    def release(
        self,
        lease: Lease,
        *,
        latency: Optional[Seconds] = None,
        headers: Any = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
    ) -> None:
        """End `lease` after a successful call: its latency, the provider's budget from `headers`, token usage."""
        self._report(
            report_request(
                lease, OutcomeKind.SUCCESS, latency=latency, headers=headers, input_tokens=input_tokens, output_tokens=output_tokens
            ),
            pool=lease.pool,
        )

    def mark_failed(
        self,
        lease: Lease,
        kind: Union[OutcomeKind, str] = OutcomeKind.TRANSIENT,
        *,
        http_status: int = 0,
        message: str = "",
        latency: Optional[Seconds] = None,
    ) -> None:
        """End `lease` after a failed call of the given kind ("auth", "transient", "overloaded", ...)."""
        self._report(report_request(lease, kind, http_status=http_status, message=message, latency=latency), pool=lease.pool)

    def mark_rate_limited(self, lease: Lease, *, retry_after: Optional[Seconds] = None, headers: Any = None) -> None:
        """End `lease` after a 429; the key cools down for `retry_after` (else the headers', else the pool's default)."""
        self._report(report_request(lease, OutcomeKind.RATE_LIMITED, retry_after=retry_after, headers=headers), pool=lease.pool)

    def renew(self, lease: Lease, *, ttl: Optional[Seconds] = None) -> None:
        """Extend `lease` once (RenewLease); raises KeyMeshError with a LEASE_* reason when it is over."""
        response = self._endpoints.unary(POOL, "RenewLease", renew_request(lease, ttl), None, None, lease.pool)
        lease._renewed(response.expires_at, response.ttl, response.renew_interval)

    def _report(self, rpc: tuple[str, Any], timeout: Optional[float] = None, pool: Optional[str] = None) -> None:
        method, request = rpc
        self._endpoints.unary(POOL, method, request, timeout, None, pool)

    def lease(
        self,
        pool: str,
        *,
        wait_timeout: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        holder: Optional[str] = None,
        estimated_tokens: int = 0,
        exclude_key_ids: Iterable[str] = (),
    ) -> "LeaseScope":
        """`with client.lease("openai") as lease:` — acquire, renew while the block runs, report, end.

        On a normal exit the lease is released with the block's latency (or ends with the outcome
        set by lease.report()); on an exception it is classified and reported, then re-raised.
        """
        options = LeaseOptions(wait_timeout, ttl, holder, estimated_tokens, tuple(exclude_key_ids))
        return LeaseScope(self, pool, options)

    def call_with_retry(
        self,
        pool: str,
        fn: Callable[[Lease], T],
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
        """Run fn(lease) under a scoped lease, retrying failures within budget_s (see retry.retry_loop).

        A rate limit, auth or quota failure or transient error moves at once to another key; with no
        other key, and after an overload, it pauses (full jitter, at least the provider's retry-after
        after an overload or transient failure), then waits for any key. Gives up by re-raising the
        last exception, or ProviderError for a failure reported with lease.report().
        """
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
                        answer = self._acquire(pool, options, step.exclude, step.wait_s)
                    except KeyMeshError as error:
                        answer = error
                elif isinstance(step, Run):
                    answer = self._run_scope(pool, options, step.lease, fn)
                else:
                    answer = time.sleep(step.seconds)
        except StopIteration as done:
            return cast(T, done.value)

    def _run_scope(self, pool: str, options: LeaseOptions, lease: Lease, fn: Callable[[Lease], T]) -> tuple[Outcome, Optional[BaseException], Optional[T]]:
        scope = LeaseScope(self, pool, options, lease)
        failure: Optional[Exception] = None
        result: Optional[T] = None
        try:
            with scope:
                result = fn(lease)
        except Exception as error:
            failure = error
        assert scope.outcome is not None  # the scope's exit always sets it
        return scope.outcome, failure_of(scope.outcome, failure), result

class LeaseScope:
    """The context manager returned by Client.lease()."""

    def __init__(self, client: Client, pool: str, options: LeaseOptions, lease: Optional[Lease] = None) -> None:
        self._client = client
        self._pool = pool
        self._options = options
        self._lease = lease
        self._started = 0.0
        self.outcome: Optional[Outcome] = None

    def __enter__(self) -> Lease:
        if self._lease is None:
            self._lease = self._client._acquire(self._pool, self._options)
        self._client._keeper.watch(self._lease, self._options.ttl)
        self._started = time.monotonic()
        return self._lease

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        latency = time.monotonic() - self._started
        assert self._lease is not None
        self._client._keeper.unwatch(self._lease)
        self.outcome = self._lease.final_outcome(exc)
        rpc = self._lease.final_request(self.outcome, latency if exc is None or isinstance(exc, Exception) else None)
        try:
            self._client._report(rpc, FINAL_REPORT_TIMEOUT_S, self._lease.pool)
        except KeyMeshError as error:
            if error.lease_ended:
                return
            if exc is None and not error.unreachable:
                raise
            log.warning("keymesh: could not end lease of key %s: %s", self._lease.key_id, error)


class _Keeper:
    """Renews every lease of a Client over one KeepAlive stream, on the schedule of Renewals.

    The stream opens on the endpoint that answered last; when it breaks, the next one re-sends every
    lease held, on the next endpoint.

    One thread per client (started with its first lease) opens a stream when a renewal falls due and
    reads its answers; the request iterator, which grpcio consumes on its own thread, sends each
    renewal when it falls due and half-closes the stream when no lease is left.

    A scope joins and leaves without the lock (a queue append, a flag on its lease): whichever of
    those threads steps next takes the changes in first. A join wakes it only when the lease's first
    renewal falls due before its next wake-up, a leave only while a stream is open (to half-close
    it), so a scope shorter than its renew interval costs the keeper nothing else.
    """

    def __init__(self, endpoints: SyncEndpoints) -> None:
        self._endpoints = endpoints
        self._renewals = Renewals(lambda lease, reason, message: lease._gone(reason, message))
        self._ttls: dict[str, Optional[Seconds]] = {}
        self._joining: collections.deque[tuple[Lease, Optional[Seconds], float]] = collections.deque()
        # When the waiting thread steps next (inf: only when woken); -inf while one is stepping.
        self._wake_at_ms = -math.inf
        # The earliest first renewal of the scopes taken in, ended ones too: the thread waits until
        # then even with no lease left, so the scopes that follow need not wake it one by one.
        self._horizon_ms = math.inf
        self._changed = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._call: Any = None
        self._closed = False

    def watch(self, lease: Lease, ttl: Optional[Seconds]) -> None:
        if self._closed:
            raise ValueError("the client is closed")
        now = now_ms()
        lease._watched = True
        self._joining.append((lease, ttl, now))
        # Read after the append, as the waiting thread reads the queue after publishing its wake-up.
        # A long queue (of scopes mostly over) is taken in now rather than at the horizon.
        if self._thread is None or now + lease.renew_interval_ms < self._wake_at_ms or len(self._joining) >= _JOINING_BATCH:
            with self._changed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="keymesh-keepalive", daemon=True)
                    self._thread.start()
                self._changed.notify_all()

    def unwatch(self, lease: Lease) -> None:
        lease._watched = False
        if self._renewals.stream == "open":
            with self._changed:
                self._changed.notify_all()

    def _step(self, now: float) -> Step:
        """Takes in the scopes that joined or left since the last step, then steps the schedule (under the lock)."""
        if self._horizon_ms <= now:
            self._horizon_ms = math.inf
        while self._joining:
            lease, ttl, joined = self._joining.popleft()
            self._horizon_ms = min(self._horizon_ms, joined + lease.renew_interval_ms)
            if lease._watched:
                self._ttls[lease.lease_id] = ttl
                self._renewals.hold(lease, lease.ms_left(joined), lease.renew_interval_ms, joined)
        for lease in self._renewals.leases():
            if not lease._watched:
                self._ttls.pop(lease.lease_id, None)
                self._renewals.release(lease.lease_id)
        return self._renewals.step(now)

    def _wait(self, step: Step, now: float) -> None:
        """Waits for a change, the step's wake-up or the horizon (under the lock); at once if a scope joined meanwhile."""
        wake = min(math.inf if step.wake_at_ms is None else step.wake_at_ms, self._horizon_ms)
        self._wake_at_ms = wake
        if not self._joining:
            self._changed.wait(None if wake == math.inf else max(wake - now, 0) / 1000)
        self._wake_at_ms = -math.inf

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread, call = self._thread, self._call
        if call is not None:
            call.cancel()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._closed:
                        return
                    now = now_ms()
                    step = self._step(now)
                    if step.open:
                        break
                    self._wait(step, now)
                stream = Stream()
                addr = self._endpoints.stream_addr()
                keep_alive = self._endpoints.stubs(addr)[POOL].KeepAlive
                self._call = call = keep_alive(self._requests(stream, step.send), metadata=self._endpoints.metadata(None))
            self._serve(call, stream, addr)

    def _serve(self, call: Any, stream: Stream, addr: str) -> None:
        """Applies one stream's answers until it ends; an unasked end hands the next stream to the next endpoint."""
        try:
            for response in call:
                with self._changed:
                    held = self._renewals.get(response.lease_id)
                    # A lease whose scope ended is let go at the next step, whatever the answer.
                    if held is not None and held._watched and self._renewals.answer(response, now_ms()):
                        self._changed.notify_all()
        except grpc.RpcError:
            pass
        with self._changed:
            stream.ended = True
            self._call = None
            if not stream.half_closed:
                self._endpoints.route.stream_ended(addr)
                self._renewals.broken(now_ms())
            self._changed.notify_all()

    def _requests(self, stream: Stream, first: list[Lease]) -> Iterator[pool_pb2.KeepAliveRequest]:
        leases = first
        while True:
            with self._changed:
                requests = [lease.keep_alive_request(self._ttls.get(lease.lease_id)) for lease in leases]
            yield from requests
            with self._changed:
                while True:
                    if self._closed or stream.ended:
                        return
                    now = now_ms()
                    step = self._step(now)
                    if step.close:
                        stream.half_closed = True
                        return
                    if step.send:
                        leases = step.send
                        break
                    self._wait(step, now)
