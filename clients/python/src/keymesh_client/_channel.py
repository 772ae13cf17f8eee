"""Channels for the sync and asyncio clients: TLS, bearer token, default deadline, error mapping."""

from __future__ import annotations

import collections
from typing import Any, Optional, Sequence

import grpc
import grpc.aio

from keymesh_client.errors import KeyMeshError


def _credentials(tls: bool, root_certificates: Optional[bytes]) -> Optional[grpc.ChannelCredentials]:
    if not tls and root_certificates is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def _auth_metadata(token: Optional[str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _SyncInterceptor(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamStreamClientInterceptor
):
    """Adds the bearer token, gives unary calls the default deadline, raises KeyMeshError."""

    def __init__(self, metadata: Sequence[tuple[str, str]], default_timeout: Optional[float]) -> None:
        self._metadata = tuple(metadata)
        self._default_timeout = default_timeout

    def _details(self, details: grpc.ClientCallDetails, default_timeout: Optional[float]) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout if details.timeout is not None else default_timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        outcome = continuation(self._details(client_call_details, self._default_timeout), request)
        # A blocking unary call returns a finished outcome; the failed one is the RpcError itself.
        if isinstance(outcome, grpc.RpcError) and outcome.done() and outcome.code() is not grpc.StatusCode.OK:
            raise KeyMeshError.from_rpc_error(outcome) from outcome
        return outcome

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details, None), request)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details, None), request_iterator)


def sync_channel(
    addr: str,
    *,
    tls: bool,
    root_certificates: Optional[bytes],
    token: Optional[str],
    default_timeout: Optional[float],
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    credentials = _credentials(tls, root_certificates)
    channel = (
        grpc.secure_channel(addr, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(addr, options=options)
    )
    return grpc.intercept_channel(channel, _SyncInterceptor(_auth_metadata(token), default_timeout))


class _AioDetailsMixin:
    def __init__(self, metadata: Sequence[tuple[str, str]], default_timeout: Optional[float]) -> None:
        self._metadata = tuple(metadata)
        self._default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails, default_timeout: Optional[float]) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()), *self._metadata)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout if details.timeout is not None else default_timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


class _AioUnaryUnary(_AioDetailsMixin, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        call = await continuation(self._details(client_call_details, self._default_timeout), request)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise KeyMeshError.from_rpc_error(error) from error


class _AioUnaryStream(_AioDetailsMixin, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details, None), request)


class _AioStreamStream(_AioDetailsMixin, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details, None), request_iterator)


def aio_channel(
    addr: str,
    *,
    tls: bool,
    root_certificates: Optional[bytes],
    token: Optional[str],
    default_timeout: Optional[float],
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    credentials = _credentials(tls, root_certificates)
    metadata = _auth_metadata(token)
    interceptors = [
        _AioUnaryUnary(metadata, default_timeout),
        _AioUnaryStream(metadata, default_timeout),
        _AioStreamStream(metadata, default_timeout),
    ]
    if credentials is not None:
        return grpc.aio.secure_channel(addr, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)
