"""Token, deadlines, error mapping and the scoped lease of both clients, against an in-process gRPC
server on port 0 (the same behaviour against the real server is in test_e2e_*.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent import futures
from contextlib import contextmanager
from typing import Callable, Iterator

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2

from keymesh_client import AsyncClient, Client, KeyMeshError
from keymesh_client.v1 import common_pb2, pool_pb2, pool_pb2_grpc


class RecordingPool(pool_pb2_grpc.KeyPoolServiceServicer):
    """Grants every Acquire except for pool "missing", records what each call carried, and on
    KeepAlive renews every lease except those of pool "revoked", which it ends at once."""

    def __init__(self, owner: str = "") -> None:
        self.calls: list[tuple[dict[str, str], float]] = []
        self.ended: list[tuple[str, object]] = []
        self.renewals = 0
        # When set, every answer names this address as the pool's owner (the keymesh-owner header).
        self.owner = owner

    def _name_owner(self, context: grpc.ServicerContext) -> None:
        if self.owner:
            context.send_initial_metadata((("keymesh-owner", self.owner),))

    def Release(self, request: pool_pb2.ReleaseRequest, context: grpc.ServicerContext) -> pool_pb2.ReleaseResponse:
        self._name_owner(context)
        self.ended.append(("Release", request))
        return pool_pb2.ReleaseResponse()

    def MarkFailed(self, request: pool_pb2.MarkFailedRequest, context: grpc.ServicerContext) -> pool_pb2.MarkFailedResponse:
        self.ended.append(("MarkFailed", request))
        return pool_pb2.MarkFailedResponse(classified_as=request.reason)

    def KeepAlive(self, requests, context: grpc.ServicerContext):
        for request in requests:
            self.renewals += 1
            if ".revoked." in request.lease_id:
                gone = pool_pb2.LeaseGone(reason=common_pb2.ERROR_REASON_LEASE_REVOKED, message="key disabled")
                yield pool_pb2.KeepAliveResponse(lease_id=request.lease_id, gone=gone)
            else:
                renewed = pool_pb2.LeaseRenewed(ttl=Duration(seconds=30), renew_interval=Duration(nanos=50_000_000))
                yield pool_pb2.KeepAliveResponse(lease_id=request.lease_id, renewed=renewed)

    def Acquire(self, request: pool_pb2.AcquireRequest, context: grpc.ServicerContext) -> pool_pb2.AcquireResponse:
        self._name_owner(context)
        self.calls.append((dict(context.invocation_metadata()), context.time_remaining()))
        if request.pool == "missing":
            detail = AnyProto()
            detail.Pack(common_pb2.ErrorDetail(reason=common_pb2.ERROR_REASON_POOL_NOT_FOUND))
            status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="pool missing", details=[detail])
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(grpc.StatusCode.NOT_FOUND, "pool missing")
        return pool_pb2.AcquireResponse(
            lease_id=f"lk1.{request.pool}.mac",
            key="sk-secret",
            key_id="k1",
            key_label="one",
            pool=request.pool,
            expires_at=Timestamp(seconds=1_767_225_600),
            ttl=Duration(seconds=30),
            # Short, so a scope sees its first renewal (never sent when it starts) without a long wait.
            renew_interval=Duration(nanos=50_000_000),
        )


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@contextmanager
def serving(servicer: RecordingPool) -> Iterator[str]:
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pool_pb2_grpc.add_KeyPoolServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.stop(grace=None)


@pytest.fixture
def server() -> Iterator[tuple[str, RecordingPool]]:
    servicer = RecordingPool()
    with serving(servicer) as addr:
        yield addr, servicer


def test_the_owner_header_sends_the_pools_next_calls_and_its_leases_ends_to_the_owner() -> None:
    owner, other = RecordingPool(), RecordingPool()
    with serving(owner) as owner_addr, serving(other) as other_addr:
        other.owner = owner_addr
        with Client(other_addr) as client:
            first = client.acquire("p")
            second = client.acquire("p")
            client.release(first)
            with client.lease("p"):
                pass
            client.acquire("q")
    # Pool q's first call goes to the endpoint that answered last, which names q's owner in turn.
    assert len(other.calls) == 2 and other.ended == []
    assert len(owner.calls) == 2 and [m for m, _ in owner.ended] == ["Release", "Release"]
    assert second.pool == "p"


@pytest.mark.asyncio
async def test_the_async_client_follows_the_owner_header_too() -> None:
    owner, other = RecordingPool(), RecordingPool()
    with serving(owner) as owner_addr, serving(other) as other_addr:
        other.owner = owner_addr
        async with AsyncClient(other_addr) as client:
            await client.acquire("p")
            async with client.lease("p"):
                pass
    assert len(other.calls) == 1 and len(owner.calls) == 1 and [m for m, _ in owner.ended] == ["Release"]


def test_one_name_with_several_addresses_is_each_of_them(server, monkeypatch: pytest.MonkeyPatch) -> None:
    addr, servicer = server
    port = int(addr.rsplit(":", 1)[1])
    # The first address refuses connections (nothing listens on 127.0.0.2): the client moves to the second.
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.1")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *rest, **kw: answers if host == "keymesh.test" else [])
    with Client(f"keymesh.test:{port}", default_timeout=5) as client:
        with client.lease("p") as lease:
            pass
    assert lease.key_id == "k1" and len(servicer.calls) == 1


def test_sync_client_sends_the_token_and_a_deadline_past_the_wait(server) -> None:
    addr, servicer = server
    with Client(addr, token="km_test_token", default_timeout=4.0) as client:
        lease = client.acquire("p", wait_timeout=3)
    metadata, remaining = servicer.calls[0]
    assert metadata["authorization"] == "Bearer km_test_token"
    assert 6.0 < remaining < 7.5
    assert lease.key_label == "one"


def test_unary_calls_get_the_default_deadline_and_no_token_when_none_is_set(server) -> None:
    addr, servicer = server
    with Client(addr, default_timeout=2.0) as client:
        client.pool.Acquire(pool_pb2.AcquireRequest(pool="p"))
    metadata, remaining = servicer.calls[0]
    assert "authorization" not in metadata
    assert 1.0 < remaining < 2.5


def test_sync_errors_arrive_as_keymesh_errors_with_their_reason(server) -> None:
    addr, _ = server
    with Client(addr) as client, pytest.raises(KeyMeshError) as raised:
        client.pool.Acquire(pool_pb2.AcquireRequest(pool="missing"))
    assert (raised.value.code, raised.value.reason, raised.value.message) == (
        grpc.StatusCode.NOT_FOUND,
        "POOL_NOT_FOUND",
        "pool missing",
    )


@pytest.mark.asyncio
async def test_async_client_sends_the_token_and_maps_errors(server) -> None:
    addr, servicer = server
    async with AsyncClient(addr, token="km_async", default_timeout=4.0) as client:
        lease = await client.acquire("p", wait_timeout=1)
        with pytest.raises(KeyMeshError) as raised:
            await client.pool.Acquire(pool_pb2.AcquireRequest(pool="missing"))
    metadata, remaining = servicer.calls[0]
    assert metadata["authorization"] == "Bearer km_async"
    assert 4.5 < remaining < 5.5
    assert lease.key_id == "k1"
    assert raised.value.reason == "POOL_NOT_FOUND"


def test_a_scoped_lease_renews_at_its_interval_and_releases_with_its_latency(server) -> None:
    addr, servicer = server
    with Client(addr) as client:
        with client.lease("p") as lease:
            assert wait_until(lambda: servicer.renewals >= 1)
            assert not lease.revoked
    [(method, request)] = servicer.ended
    assert method == "Release" and request.lease_id == lease.lease_id and request.HasField("latency")


def test_a_scoped_lease_reports_an_exception_and_reraises_it(server) -> None:
    addr, servicer = server
    with Client(addr) as client, pytest.raises(ConnectionResetError):
        with client.lease("p"):
            raise ConnectionResetError("peer reset")
    [(method, request)] = servicer.ended
    assert (method, request.reason, request.http_status) == ("MarkFailed", pool_pb2.FAILURE_REASON_TRANSIENT, 0)


def test_a_pushed_revocation_sets_the_flag_inside_the_block(server) -> None:
    addr, _ = server
    with Client(addr) as client:
        with client.lease("revoked") as lease:
            assert lease.revoked_event.wait(5)
    assert (lease.gone_reason, lease.gone_message) == ("LEASE_REVOKED", "key disabled")


@pytest.mark.asyncio
async def test_an_async_revocation_sets_the_event_and_cancellation_still_ends_the_lease(server) -> None:
    addr, servicer = server
    async with AsyncClient(addr) as client:
        async with client.lease("revoked") as lease:
            await asyncio.wait_for(lease.revoked_event.wait(), 5)
        assert lease.gone_reason == "LEASE_REVOKED"

        async def hold() -> None:
            async with client.lease("p"):
                await asyncio.sleep(30)

        before = servicer.renewals
        task = asyncio.create_task(hold())
        # Renewed: the scope is inside its block (the revoked scope's renewals came before).
        assert await asyncio.to_thread(wait_until, lambda: servicer.renewals > before)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [m for m, _ in servicer.ended] == ["Release", "MarkFailed"]
    assert servicer.ended[1][1].reason == pool_pb2.FAILURE_REASON_CLIENT_ERROR
