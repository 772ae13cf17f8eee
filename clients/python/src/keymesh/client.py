"""The synchronous KeyMesh client (grpcio)."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import grpc

from keymesh._channel import sync_channel
from keymesh.classify import Outcome, OutcomeKind
from keymesh.errors import KeyMeshError, ProviderError
from keymesh.lease import FINAL_REPORT_TIMEOUT_S, Lease, LeaseOptions, Seconds, seconds
from keymesh.retry import RetryState
from keymesh.v1 import admin_pb2_grpc, pool_pb2, pool_pb2_grpc

T = TypeVar("T")
log = logging.getLogger("keymesh")

# Stream failures after which renewing can never succeed: the lease is gone.
FINAL_RENEWAL_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
RENEWAL_RETRY_PAUSE_S = 0.2


class Client:
    """A KeyMesh client. `pool` is the KeyPoolService stub, `admin` the PoolAdminService stub.

    Every unary RPC gets `default_timeout` unless given one, sends `authorization: Bearer <token>`
    when a token is set, and raises KeyMeshError on failure.
    """

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
        self._channel = sync_channel(
            addr, tls=tls, root_certificates=root_certificates, token=token, default_timeout=default_timeout, options=options
        )
        self.pool = pool_pb2_grpc.KeyPoolServiceStub(self._channel)
        self.admin = admin_pb2_grpc.PoolAdminServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

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
        """Borrow a key without renewal or reporting: end it yourself with pool.Release/MarkFailed."""
        options = LeaseOptions(wait_timeout, ttl, holder, estimated_tokens, tuple(exclude_key_ids))
        return self._acquire(pool, options)

    def _acquire(self, pool: str, options: LeaseOptions, exclude: Optional[Iterable[str]] = None, wait: Optional[Seconds] = None) -> Lease:
        response = self.pool.Acquire(
            options.acquire_request(pool, exclude, wait), timeout=options.acquire_timeout(self.default_timeout, wait)
        )
        return Lease(response, threading.Event())

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
        """Run fn(lease) under a scoped lease, retrying failures on other keys within budget_s.

        Rate limits, auth and quota failures and transient errors move to another key
        (exclude_key_ids); overloads retry after max(backoff, retry-after). Between attempts it
        backs off with full jitter. When no other key is eligible it waits for any key (the server
        keeps a rate-limited key cooling until its retry-after). Gives up by re-raising the last
        exception, or ProviderError for a failure reported with lease.report().
        """
        options = LeaseOptions(wait_timeout, ttl, holder, estimated_tokens, tuple(exclude_key_ids))
        state = RetryState(deadline=time.monotonic() + budget_s, base_exclude=options.exclude_key_ids)
        attempt = 0
        while True:
            try:
                lease = self._acquire_within(pool, options, state)
            except KeyMeshError as error:
                if not state.after_acquire_error(error):
                    raise state.final_error(error)
            else:
                scope = LeaseScope(self, pool, options, lease)
                failure: Optional[Exception] = None
                try:
                    with scope:
                        result = fn(lease)
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
            time.sleep(pause)
            attempt += 1

    def _acquire_within(self, pool: str, options: LeaseOptions, state: RetryState) -> Lease:
        """A key not yet tried at once if there is one; otherwise wait for any key within the budget."""
        if state.moved_away:
            try:
                return self._acquire(pool, options, state.exclude, 0)
            except KeyMeshError as error:
                if state.past_budget or error.reason != "NO_KEY_AVAILABLE":
                    raise
        wait = state.acquire_wait(None if options.wait_timeout is None else seconds(options.wait_timeout), time.monotonic())
        return self._acquire(pool, options, state.base_exclude, wait)


class LeaseScope:
    """The context manager returned by Client.lease()."""

    def __init__(self, client: Client, pool: str, options: LeaseOptions, lease: Optional[Lease] = None) -> None:
        self._client = client
        self._pool = pool
        self._options = options
        self._lease = lease
        self._renewer: Optional[_Renewer] = None
        self._started = 0.0
        self.outcome: Optional[Outcome] = None

    def __enter__(self) -> Lease:
        if self._lease is None:
            self._lease = self._client._acquire(self._pool, self._options)
        self._renewer = _Renewer(self._client.pool, self._lease, self._options.ttl)
        self._renewer.start()
        self._started = time.monotonic()
        return self._lease

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        latency = time.monotonic() - self._started
        assert self._lease is not None and self._renewer is not None
        self._renewer.stop()
        self.outcome = self._lease.final_outcome(exc)
        method, request = self._lease.final_request(self.outcome, latency if exc is None or isinstance(exc, Exception) else None)
        try:
            getattr(self._client.pool, method)(request, timeout=FINAL_REPORT_TIMEOUT_S)
        except KeyMeshError as error:
            if error.lease_ended:
                return
            if exc is None:
                raise
            log.warning("keymesh: could not end lease of key %s: %s", self._lease.key_id, error)


class _Renewer:
    """Renews one lease over a KeepAlive stream on a background thread until stopped or gone."""

    def __init__(self, stub: pool_pb2_grpc.KeyPoolServiceStub, lease: Lease, ttl: Optional[Seconds]) -> None:
        self._stub = stub
        self._lease = lease
        self._ttl = ttl
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name=f"keymesh-renew-{lease.key_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            if self._call is not None:
                self._call.cancel()
        self._thread.join()

    def _requests(self) -> Iterator[pool_pb2.KeepAliveRequest]:
        # Renew at once: the server pushes revocations only for leases the stream has renewed.
        yield self._lease.keep_alive_request(self._ttl)
        while not self._stop.wait(self._lease.renew_interval.total_seconds()):
            yield self._lease.keep_alive_request(self._ttl)

    def _run(self) -> None:
        try:
            self._renew_until_stopped_or_gone()
        finally:
            with self._lock:
                if self._call is not None:
                    self._call.cancel()

    def _renew_until_stopped_or_gone(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._call = self._stub.KeepAlive(self._requests())
                for response in self._call:
                    if not self._lease._apply(response):
                        return
            except grpc.RpcError as error:
                if self._stop.is_set():
                    return
                if error.code() in FINAL_RENEWAL_CODES:
                    self._lease._gone(KeyMeshError.from_rpc_error(error).reason, error.details() or "")
                    return
            if time.monotonic() >= self._lease.local_deadline:
                self._lease._gone("LEASE_EXPIRED", "renewal failed until the lease expired")
                return
            self._stop.wait(RENEWAL_RETRY_PAUSE_S)
