"""The asyncio client renews every lease over one KeepAlive stream driven by one task (against a fake stub
whose leases are renewed every 250 ms); the schedule itself is pinned by test_keepalive_vectors.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from keymesh_client import AsyncClient, Lease
from keymesh_client.v1 import pool_pb2_grpc
from fake_pool import TAKE_TIMEOUT_S, FakeAioPool, gone, renewed


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeAioPool:
    pool = FakeAioPool()
    monkeypatch.setattr(pool_pb2_grpc, "KeyPoolServiceStub", lambda channel: pool)
    return pool


@pytest_asyncio.fixture
async def aclient(fake: FakeAioPool) -> AsyncIterator[AsyncClient]:
    async with AsyncClient("127.0.0.1:1") as client:
        yield client


def keepers() -> list[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "keymesh-keepalive"]


async def revoked(lease: Lease) -> None:
    await asyncio.wait_for(lease.revoked_event.wait(), TAKE_TIMEOUT_S)


@pytest.mark.asyncio
async def test_concurrent_scopes_share_one_stream_and_one_task(fake: FakeAioPool, aclient: AsyncClient) -> None:
    n = 20
    entered = 0
    all_inside = asyncio.Event()
    leave = asyncio.Event()

    async def hold() -> Lease:
        nonlocal entered
        async with aclient.lease("p") as held:
            entered += 1
            if entered == n:
                all_inside.set()
            await leave.wait()
        return held

    holders = [asyncio.create_task(hold()) for _ in range(n)]
    await asyncio.wait_for(all_inside.wait(), TAKE_TIMEOUT_S)
    stream = await fake.stream(1)
    everyone = sorted(f"lease-{i}" for i in range(1, n + 1))
    # Every lease is renewed on this one stream (the stream may open before the last scope is in).
    renewed: set[str] = set()
    while renewed != set(everyone):
        renewed.update(await stream.take(1))
    assert len(fake.calls) == 1 and len(keepers()) == 1
    leave.set()
    leases = await asyncio.wait_for(asyncio.gather(*holders), TAKE_TIMEOUT_S)
    assert sorted(fake.released) == everyone and not any(each.revoked for each in leases)
    # The last scope out half-closes the stream; the client's one task stays for the next lease.
    assert await stream.half_closed()
    assert len(fake.calls) == 1 and len(keepers()) == 1


@pytest.mark.asyncio
async def test_answers_reach_their_own_lease_and_a_revocation_only_its_own(fake: FakeAioPool, aclient: AsyncClient) -> None:
    async with aclient.lease("p") as a, aclient.lease("p") as b:
        stream = await fake.stream(1)
        assert await stream.take(2) == [a.lease_id, b.lease_id]
        stream.answer(renewed(b.lease_id, ttl_s=60), gone(a.lease_id))
        await revoked(a)
        assert a.gone_reason == "LEASE_REVOKED" and a.ttl == timedelta(seconds=30)
        assert b.ttl == timedelta(seconds=60) and not b.revoked


@pytest.mark.asyncio
async def test_a_broken_stream_is_reopened_and_every_watched_lease_renewed_on_it(fake: FakeAioPool, aclient: AsyncClient) -> None:
    stopped = aclient.lease("p")
    async with aclient.lease("p") as a, aclient.lease("p") as b:
        c = await stopped.__aenter__()
        first = await fake.stream(1)
        assert await first.take(3) == [a.lease_id, b.lease_id, c.lease_id]
        await stopped.__aexit__(None, None, None)
        first.fail(grpc.StatusCode.UNAVAILABLE, "connection reset")
        second = await fake.stream(2)
        assert await second.take(2) == [a.lease_id, b.lease_id]
        assert not a.revoked and not b.revoked and not c.revoked
        assert len(keepers()) == 1
        # The broken stream's request iterator ended too: grpc.aio's task pulling it is not left waiting.
        await asyncio.wait_for(first.consumer, TAKE_TIMEOUT_S)


@pytest.mark.asyncio
async def test_a_stream_status_ends_no_lease_and_every_lease_moves_to_a_new_stream(fake: FakeAioPool, aclient: AsyncClient) -> None:
    async with aclient.lease("p") as a, aclient.lease("p") as b:
        first = await fake.stream(1)
        assert await first.take(2) == [a.lease_id, b.lease_id]
        first.answer(renewed(a.lease_id))
        first.fail(grpc.StatusCode.NOT_FOUND, "pool not found")
        assert sorted(await (await fake.stream(2)).take(2)) == sorted([a.lease_id, b.lease_id])
        assert not a.revoked and not b.revoked


@pytest.mark.asyncio
async def test_the_stream_closes_when_no_lease_is_left_and_reopens_for_the_next(fake: FakeAioPool, aclient: AsyncClient) -> None:
    async with aclient.lease("p") as a:
        assert await (await fake.stream(1)).take(1) == [a.lease_id]
    assert await (await fake.stream(1)).half_closed()
    async with aclient.lease("p") as b:
        assert await (await fake.stream(2)).take(1) == [b.lease_id]
    assert len(fake.calls) == 2


@pytest.mark.asyncio
async def test_closing_the_client_ends_the_stream_and_its_task_at_once(fake: FakeAioPool) -> None:
    client = AsyncClient("127.0.0.1:1")
    scope = client.lease("p")
    held = await scope.__aenter__()
    stream = await fake.stream(1)
    assert await stream.take(1) == [held.lease_id]
    [task] = keepers()
    await asyncio.wait_for(client.close(), TAKE_TIMEOUT_S)
    assert task.done() and keepers() == [] and stream.cancelled
    with pytest.raises(ValueError):
        await client.lease("p").__aenter__()
