"""The calls of PyPI's `keymesh` library (KeyPool, SyncKeyPool, OpenAIHandler), backed by KeyMesh leases.

Code written against that in-process library runs with only its import and constructor changed
(docs/migration-python-keymesh.md): `acquire()` returns the key string, which carries its lease; the
lease is renewed in the background until `release`, `mark_failed` or `mark_rate_limited` ends it.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import threading
import time
from collections import defaultdict
from typing import Any, Optional, Sequence

import grpc

from keymesh_client.aio import AsyncClient
from keymesh_client.classify import OutcomeKind, classify
from keymesh_client.client import Client
from keymesh_client.errors import KeyMeshError
from keymesh_client.lease import Lease, report_request
from keymesh_client.v1 import admin_pb2


class SchedulerStrategy(str, enum.Enum):
    """How the server picks a key (the pool's strategy)."""

    ROUND_ROBIN = "round_robin"
    LEAST_BUSY = "least_busy"
    WEIGHTED = "weighted"
    LEAST_USED = "least_used"
    LATENCY = "latency"

    @property
    def proto(self) -> "admin_pb2.Strategy":
        return admin_pb2.Strategy.Value("STRATEGY_" + self.name)


class NoAvailableKeyError(KeyMeshError):
    """No key became available within acquire_timeout (RESOURCE_EXHAUSTED, NO_KEY_AVAILABLE)."""


class LeasedKey(str):
    """An API key string as acquire() returns it: usable wherever the key is, and carrying its lease."""

    lease: Lease

    def __new__(cls, lease: Lease) -> "LeasedKey":
        key = super().__new__(cls, lease.key)
        key.lease = lease
        return key

    def __repr__(self) -> str:
        return f"LeasedKey({self.lease!r})"


def key_id_of(secret: str) -> str:
    """The id a key passed as keys=[...] gets: stable across processes, not the secret itself."""
    return "key-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _pool_request(pool: str, strategy: SchedulerStrategy, default_cooldown: Optional[float]) -> admin_pb2.CreatePoolRequest:
    spec = admin_pb2.Pool(name=pool, strategy=strategy.proto)
    if default_cooldown is not None:
        spec.default_cooldown.FromNanoseconds(int(default_cooldown * 1e9))
    return admin_pb2.CreatePoolRequest(pool=spec)


def _add_key_request(pool: str, secret: str) -> admin_pb2.AddKeyRequest:
    return admin_pb2.AddKeyRequest(pool=pool, key=admin_pb2.Key(id=key_id_of(secret)), secret=secret)


def _exists(error: KeyMeshError) -> bool:
    return error.code is grpc.StatusCode.ALREADY_EXISTS


def _no_key(error: KeyMeshError) -> KeyMeshError:
    if error.reason in ("NO_KEY_AVAILABLE", "POOL_EMPTY"):
        return NoAvailableKeyError(error.code, error.message, error.reason, error.field, error.retry_after)
    return error


class _Held:
    """The leases handed out as key strings, so release(key) finds the lease of a plain str too."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[Lease]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, lease: Lease) -> LeasedKey:
        with self._lock:
            self._by_key[lease.key].append(lease)
        return LeasedKey(lease)

    def take(self, key: str) -> Lease:
        with self._lock:
            leases = self._by_key.get(str(key), [])
            lease = getattr(key, "lease", None)
            if lease is None or lease not in leases:
                if not leases:
                    raise KeyError("this key was not acquired from this pool, or its lease has already ended")
                lease = leases[0]
            leases.remove(lease)
            if not leases:
                del self._by_key[str(key)]
            return lease

    def drain(self) -> list[Lease]:
        with self._lock:
            leases = [lease for held in self._by_key.values() for lease in held]
            self._by_key.clear()
            return leases


class SyncKeyPool:
    """`SyncKeyPool(keys=[...])` or `SyncKeyPool(pool="openai", addr=...)`: the seed's sync calls over KeyMesh.

    With `keys`, the pool is created (if missing) with those keys (added if missing). Without, the
    named pool must exist. `acquire_timeout` bounds the wait for a key; `ttl` is the lease's time to
    live (renewed in the background while the key is held).
    """

    def __init__(
        self,
        keys: Optional[Sequence[str]] = None,
        *,
        pool: str = "default",
        addr: str = "127.0.0.1:50051",
        strategy: SchedulerStrategy = SchedulerStrategy.LEAST_BUSY,
        default_cooldown: Optional[float] = None,
        acquire_timeout: float = 30.0,
        ttl: Optional[float] = None,
        client: Optional[Client] = None,
        **client_options: Any,
    ) -> None:
        self.name = pool
        self._client = client or Client(addr, **client_options)
        self._owns_client = client is None
        self._acquire_timeout = acquire_timeout
        self._ttl = ttl
        self._held = _Held()
        if keys is not None:
            try:
                self._client.admin.CreatePool(_pool_request(pool, strategy, default_cooldown))
            except KeyMeshError as error:
                if not _exists(error):
                    raise
            for secret in keys:
                self.add_key(secret)

    def acquire(self) -> str:
        try:
            lease = self._client.acquire(self.name, wait_timeout=self._acquire_timeout, ttl=self._ttl)
        except KeyMeshError as error:
            raise _no_key(error) from error
        self._client._keeper.watch(lease, self._ttl)
        return self._held.add(lease)

    def release(self, key: str, *, latency: float = 0.0, headers: Any = None) -> None:
        lease = self._end(key)
        self._client._report(report_request(lease, OutcomeKind.SUCCESS, latency=latency or None, headers=headers), pool=lease.pool)

    def mark_failed(self, key: str, *, error: Optional[BaseException] = None) -> None:
        """The call failed: classified from `error` when given (auth, quota, overload, ...), else transient."""
        self._client._report(_failure_request(self._end(key), error))

    def mark_rate_limited(self, key: str, *, cooldown: Optional[float] = None) -> None:
        lease = self._end(key)
        self._client._report(report_request(lease, OutcomeKind.RATE_LIMITED, retry_after=cooldown), pool=lease.pool)

    def add_key(self, key: str) -> None:
        try:
            self._client.admin.AddKey(_add_key_request(self.name, key))
        except KeyMeshError as error:
            if not _exists(error):
                raise

    def status(self) -> dict[str, Any]:
        stats = self._client.admin.GetPoolStats(admin_pb2.GetPoolStatsRequest(pool=self.name)).stats
        return {k.key_id: _key_status(k) for k in stats.keys}

    def available_count(self) -> int:
        return sum(1 for k in self._client.admin.GetPoolStats(admin_pb2.GetPoolStatsRequest(pool=self.name)).stats.keys if k.eligible)

    def close(self) -> None:
        """Ends the leases still held (no verdict on their keys) and closes the connection."""
        for lease in self._held.drain():
            self._client._keeper.unwatch(lease)
            try:
                self._client._report(report_request(lease, OutcomeKind.CLIENT_ERROR, message="pool closed"), pool=lease.pool)
            except KeyMeshError:
                pass
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> "SyncKeyPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _end(self, key: str) -> Lease:
        lease = self._held.take(key)
        self._client._keeper.unwatch(lease)
        return lease


class KeyPool:
    """The asyncio twin of SyncKeyPool: `await pool.acquire()`, `await pool.release(key, latency=...)`, ..."""

    def __init__(
        self,
        keys: Optional[Sequence[str]] = None,
        *,
        pool: str = "default",
        addr: str = "127.0.0.1:50051",
        strategy: SchedulerStrategy = SchedulerStrategy.LEAST_BUSY,
        default_cooldown: Optional[float] = None,
        acquire_timeout: float = 30.0,
        ttl: Optional[float] = None,
        client: Optional[AsyncClient] = None,
        **client_options: Any,
    ) -> None:
        self.name = pool
        self._client = client or AsyncClient(addr, **client_options)
        self._owns_client = client is None
        self._acquire_timeout = acquire_timeout
        self._ttl = ttl
        self._held = _Held()
        self._keys = list(keys) if keys is not None else None
        self._strategy = strategy
        self._default_cooldown = default_cooldown
        self._ready: Optional[asyncio.Future[None]] = None

    async def _setup(self) -> None:
        """With keys=[...]: creates the pool and adds the keys, once, before the first call needs them."""
        if self._keys is None:
            return
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._create())
        await asyncio.shield(self._ready)

    async def _create(self) -> None:
        try:
            await self._client.admin.CreatePool(_pool_request(self.name, self._strategy, self._default_cooldown))
        except KeyMeshError as error:
            if not _exists(error):
                raise
        for secret in self._keys or ():
            await self._add(secret)

    async def _add(self, key: str) -> None:
        try:
            await self._client.admin.AddKey(_add_key_request(self.name, key))
        except KeyMeshError as error:
            if not _exists(error):
                raise

    async def acquire(self) -> str:
        await self._setup()
        try:
            lease = await self._client.acquire(self.name, wait_timeout=self._acquire_timeout, ttl=self._ttl)
        except KeyMeshError as error:
            raise _no_key(error) from error
        self._client._keeper.watch(lease, self._ttl)
        return self._held.add(lease)

    async def release(self, key: str, *, latency: float = 0.0, headers: Any = None) -> None:
        lease = self._end(key)
        await self._client._report(report_request(lease, OutcomeKind.SUCCESS, latency=latency or None, headers=headers), pool=lease.pool)

    async def mark_failed(self, key: str, *, error: Optional[BaseException] = None) -> None:
        """The call failed: classified from `error` when given (auth, quota, overload, ...), else transient."""
        await self._client._report(_failure_request(self._end(key), error))

    async def mark_rate_limited(self, key: str, *, cooldown: Optional[float] = None) -> None:
        lease = self._end(key)
        await self._client._report(report_request(lease, OutcomeKind.RATE_LIMITED, retry_after=cooldown), pool=lease.pool)

    async def add_key(self, key: str) -> None:
        await self._setup()
        await self._add(key)

    async def status(self) -> dict[str, Any]:
        await self._setup()
        stats = (await self._client.admin.GetPoolStats(admin_pb2.GetPoolStatsRequest(pool=self.name))).stats
        return {k.key_id: _key_status(k) for k in stats.keys}

    async def available_count(self) -> int:
        await self._setup()
        stats = (await self._client.admin.GetPoolStats(admin_pb2.GetPoolStatsRequest(pool=self.name))).stats
        return sum(1 for k in stats.keys if k.eligible)

    async def close(self) -> None:
        """Ends the leases still held (no verdict on their keys) and closes the connection."""
        for lease in self._held.drain():
            self._client._keeper.unwatch(lease)
            try:
                await self._client._report(report_request(lease, OutcomeKind.CLIENT_ERROR, message="pool closed"), pool=lease.pool)
            except KeyMeshError:
                pass
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> "KeyPool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _end(self, key: str) -> Lease:
        lease = self._held.take(key)
        self._client._keeper.unwatch(lease)
        return lease


def _key_status(k: admin_pb2.KeyStats) -> dict[str, Any]:
    return {
        "label": k.label,
        "eligible": k.eligible,
        "active": k.active_leases,
        "latency_ema": k.ema_latency.ToTimedelta().total_seconds(),
        "success_rate": k.success_rate,
        "consecutive_failures": k.consecutive_failures,
        "cooldown_remaining": k.cooldown_remaining.ToTimedelta().total_seconds(),
    }


def _failure_request(lease: Lease, error: Optional[BaseException]) -> tuple[str, Any]:
    """How mark_failed ends a lease: the error's class when it says one, else transient."""
    outcome = classify(error=error) if error is not None else None
    if outcome is None or outcome.kind is OutcomeKind.SUCCESS:
        return report_request(lease, OutcomeKind.TRANSIENT)
    if outcome.kind is OutcomeKind.RATE_LIMITED:
        retry_after = outcome.retry_after_ms / 1000 if outcome.retry_after_ms is not None else None
        return report_request(lease, outcome.kind, retry_after=retry_after, headers=None)
    return report_request(lease, outcome.kind, http_status=outcome.http_status or 0, message=outcome.message)


def _report_response(pool: Any, key: str, response: Any, latency: float) -> Any:
    """The outcome of one HTTP response, as SyncKeyPool / KeyPool calls (the handlers' shared step)."""
    outcome = classify(status=response.status_code, headers=response.headers)
    lease = pool._end(key)
    if outcome.kind is OutcomeKind.SUCCESS:
        return report_request(lease, OutcomeKind.SUCCESS, latency=latency, headers=response.headers)
    if outcome.kind is OutcomeKind.RATE_LIMITED:
        retry_after = outcome.retry_after_ms / 1000 if outcome.retry_after_ms is not None else None
        return report_request(lease, OutcomeKind.RATE_LIMITED, retry_after=retry_after, headers=response.headers)
    return report_request(lease, outcome.kind, http_status=response.status_code, latency=latency)


# The handlers subclass the HTTP client the openai SDK is built on: httpx2 in its current releases,
# httpx before. Without either there are no handlers.
try:
    import httpx2 as httpx
except ImportError:
    try:
        import httpx  # type: ignore[no-redef]
    except ImportError:
        httpx = None  # type: ignore[assignment]

if httpx is not None:

    class OpenAIHandler(httpx.Client):
        """An httpx.Client for `OpenAI(http_client=...)`: every request runs under a leased key.

        The key goes in the Authorization header; the response's status and rate-limit headers end
        the lease (a 429 cools the key for its retry-after, a 401 disables it); a request that gets
        no answer is reported as transient.
        """

        def __init__(
            self,
            keys: Optional[Sequence[str]] = None,
            *,
            pool: str = "default",
            addr: str = "127.0.0.1:50051",
            strategy: SchedulerStrategy = SchedulerStrategy.LEAST_BUSY,
            default_cooldown: Optional[float] = None,
            acquire_timeout: float = 30.0,
            **httpx_kwargs: Any,
        ) -> None:
            self._pool = SyncKeyPool(
                keys, pool=pool, addr=addr, strategy=strategy, default_cooldown=default_cooldown, acquire_timeout=acquire_timeout
            )
            super().__init__(**httpx_kwargs)

        @property
        def pool(self) -> SyncKeyPool:
            return self._pool

        def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            key = self._pool.acquire()
            request.headers["Authorization"] = f"Bearer {key}"
            start = time.monotonic()
            try:
                response = super().send(request, **kwargs)
            except Exception as error:
                self._pool.mark_failed(key, error=error)
                raise
            self._pool._client._report(_report_response(self._pool, key, response, time.monotonic() - start))
            return response

        def close(self) -> None:
            super().close()
            self._pool.close()

    class AsyncOpenAIHandler(httpx.AsyncClient):
        """The asyncio twin of OpenAIHandler, for `AsyncOpenAI(http_client=...)`."""

        def __init__(
            self,
            keys: Optional[Sequence[str]] = None,
            *,
            pool: str = "default",
            addr: str = "127.0.0.1:50051",
            strategy: SchedulerStrategy = SchedulerStrategy.LEAST_BUSY,
            default_cooldown: Optional[float] = None,
            acquire_timeout: float = 30.0,
            **httpx_kwargs: Any,
        ) -> None:
            self._pool = KeyPool(
                keys, pool=pool, addr=addr, strategy=strategy, default_cooldown=default_cooldown, acquire_timeout=acquire_timeout
            )
            super().__init__(**httpx_kwargs)

        @property
        def pool(self) -> KeyPool:
            return self._pool

        async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            key = await self._pool.acquire()
            request.headers["Authorization"] = f"Bearer {key}"
            start = time.monotonic()
            try:
                response = await super().send(request, **kwargs)
            except Exception as error:
                await self._pool.mark_failed(key, error=error)
                raise
            await self._pool._client._report(_report_response(self._pool, key, response, time.monotonic() - start))
            return response

        async def aclose(self) -> None:
            await super().aclose()
            await self._pool.close()
