"""The endpoints of the sync and asyncio clients: a channel per endpoint, and stubs whose unary calls
carry the bearer token and the default deadline, fail over on UNAVAILABLE (see _route), follow the
`keymesh-owner` header, and raise KeyMeshError."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable, Optional, Sequence, Union

import grpc
import grpc.aio
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor

from keymesh_client._route import OWNER_HEADER, Attempts, Route, endpoints_of, host_of
from keymesh_client.errors import KeyMeshError
from keymesh_client.v1 import admin_pb2, admin_pb2_grpc, pool_pb2, pool_pb2_grpc

Target = Union[str, Sequence[str]]
Metadata = tuple[tuple[str, str], ...]
POOL, ADMIN = 0, 1
_SERVICES = (
    (pool_pb2.DESCRIPTOR.services_by_name["KeyPoolService"], lambda channel: pool_pb2_grpc.KeyPoolServiceStub(channel)),
    (admin_pb2.DESCRIPTOR.services_by_name["PoolAdminService"], lambda channel: admin_pb2_grpc.PoolAdminServiceStub(channel)),
)
# A restarted or replaced replica is dialled again within about a second (grpc's default backoff grows to 120 s).
_CHANNEL_DEFAULTS = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 1000}


def _credentials(tls: bool, root_certificates: Optional[bytes]) -> Optional[grpc.ChannelCredentials]:
    if not tls and root_certificates is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def _owner(metadata: Any) -> Optional[str]:
    for key, value in metadata or ():
        if key == OWNER_HEADER:
            return str(value)
    return None


def _has_pool(service: ServiceDescriptor, name: str) -> bool:
    field = service.methods_by_name[name].input_type.fields_by_name.get("pool")
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


class _Endpoints:
    """What the sync and asyncio endpoints share: the route, the channels' settings, the metadata."""

    def __init__(
        self,
        target: Target,
        *,
        tls: bool,
        root_certificates: Optional[bytes],
        token: Optional[str],
        default_timeout: Optional[float],
        options: Sequence[tuple[str, Any]],
    ) -> None:
        endpoints = endpoints_of(target)
        self.route = Route(endpoints)
        self.default_timeout = default_timeout
        self._credentials = _credentials(tls, root_certificates)
        self._metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()
        merged: dict[str, Any] = dict(_CHANNEL_DEFAULTS)
        if isinstance(target, str) and endpoints != [target.strip()]:
            # One name resolved to several addresses: each channel still names the host (TLS checks it).
            host = host_of(target.strip())
            merged["grpc.default_authority"] = target.strip()
            if self._credentials is not None:
                merged["grpc.ssl_target_name_override"] = host
        merged.update(options)
        self._options = list(merged.items())
        self._stubs: dict[str, tuple[Any, Any]] = {}
        self._channels: list[Any] = []

    def metadata(self, extra: Any) -> Metadata:
        return (*extra, *self._metadata) if extra else self._metadata

    def stubs(self, addr: str) -> tuple[Any, Any]:
        stubs = self._stubs.get(addr)
        if stubs is None:
            channel = self._channel(addr)
            self._channels.append(channel)
            stubs = self._stubs[addr] = (_SERVICES[POOL][1](channel), _SERVICES[ADMIN][1](channel))
        return stubs

    def _channel(self, addr: str) -> Any:
        raise NotImplementedError

    def stream_addr(self) -> str:
        return self.route.endpoints[self.route.current]


class SyncEndpoints(_Endpoints):
    def __init__(self, target: Target, **settings: Any) -> None:
        super().__init__(target, **settings)
        self._lock = threading.Lock()
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

    def _channel(self, addr: str) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(addr, self._credentials, options=self._options)
        return grpc.insecure_channel(addr, options=self._options)

    def stubs(self, addr: str) -> tuple[Any, Any]:
        stubs = self._stubs.get(addr)
        if stubs is not None:
            return stubs
        with self._lock:
            return super().stubs(addr)

    def unary(self, service: int, name: str, request: Any, timeout: Optional[float], metadata: Any, pool: Optional[str]) -> Any:
        if timeout is None:
            timeout = self.default_timeout
        deadline = None if timeout is None else self._clock() + timeout
        md = self.metadata(metadata)
        attempts = Attempts(self.route, pool)
        while True:
            method = getattr(self.stubs(attempts.addr)[service], name)
            left = None if deadline is None else max(deadline - self._clock(), 0.0)
            try:
                if pool is None:
                    response = method(request, timeout=left, metadata=md)
                    attempts.answered(None)
                    return response
                response, call = method.with_call(request, timeout=left, metadata=md)
            except grpc.RpcError as error:
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    pause = attempts.unavailable() / 1000
                    if deadline is None or self._clock() + pause <= deadline:
                        if pause:
                            self._sleep(pause)
                        continue
                else:
                    attempts.answered(_owner(error.initial_metadata()) if pool is not None else None)
                raise KeyMeshError.from_rpc_error(error) from error
            attempts.answered(_owner(call.initial_metadata()))
            return response

    def close(self) -> None:
        with self._lock:
            for channel in self._channels:
                channel.close()
            self._channels.clear()


class AioEndpoints(_Endpoints):
    def __init__(self, target: Target, **settings: Any) -> None:
        super().__init__(target, **settings)
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def _channel(self, addr: str) -> grpc.aio.Channel:
        if self._credentials is not None:
            return grpc.aio.secure_channel(addr, self._credentials, options=self._options)
        return grpc.aio.insecure_channel(addr, options=self._options)

    async def unary(self, service: int, name: str, request: Any, timeout: Optional[float], metadata: Any, pool: Optional[str]) -> Any:
        if timeout is None:
            timeout = self.default_timeout
        deadline = None if timeout is None else self._clock() + timeout
        md = self.metadata(metadata)
        attempts = Attempts(self.route, pool)
        while True:
            method = getattr(self.stubs(attempts.addr)[service], name)
            left = None if deadline is None else max(deadline - self._clock(), 0.0)
            call = method(request, timeout=left, metadata=md)
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    pause = attempts.unavailable() / 1000
                    if deadline is None or self._clock() + pause <= deadline:
                        if pause:
                            await self._sleep(pause)
                        continue
                else:
                    attempts.answered(_owner(error.initial_metadata()) if pool is not None else None)
                raise KeyMeshError.from_rpc_error(error) from error
            attempts.answered(_owner(await call.initial_metadata()) if pool is not None else None)
            return response

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        for channel in channels:
            await channel.close()


class _Unary:
    """One unary method of a routed stub: `stub.Acquire(request, timeout=None, metadata=None)`."""

    __slots__ = ("_endpoints", "_service", "_name", "_routed")

    def __init__(self, endpoints: Any, service: int, name: str, routed: bool) -> None:
        self._endpoints = endpoints
        self._service = service
        self._name = name
        self._routed = routed

    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> Any:
        pool = request.pool if self._routed else None
        return self._endpoints.unary(self._service, self._name, request, timeout, metadata, pool)


class _Streaming:
    """A streaming method of a routed stub: opened on the endpoint that answered last, with the token."""

    __slots__ = ("_endpoints", "_service", "_name")

    def __init__(self, endpoints: _Endpoints, service: int, name: str) -> None:
        self._endpoints = endpoints
        self._service = service
        self._name = name

    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None) -> Any:
        method = getattr(self._endpoints.stubs(self._endpoints.stream_addr())[self._service], self._name)
        return method(request, timeout=timeout, metadata=self._endpoints.metadata(metadata))


class RoutedStub:
    """KeyPoolService or PoolAdminService over a client's endpoints, one attribute per method."""

    def __init__(self, endpoints: _Endpoints, service: int) -> None:
        descriptor: ServiceDescriptor = _SERVICES[service][0]
        for method in descriptor.methods:
            call: Callable[..., Any]
            if method.client_streaming or method.server_streaming:
                call = _Streaming(endpoints, service, method.name)
            else:
                call = _Unary(endpoints, service, method.name, _has_pool(descriptor, method.name))
            setattr(self, method.name, call)
