"""The asyncio client against a real KeyMesh server (KEYMESH_ADDR)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import AsyncIterator

import pytest
import pytest_asyncio

from e2e_helpers import key_stats, live_leases
from keymesh_client import AsyncClient, Client, KeyMeshError, OutcomeKind
from keymesh_client.v1 import admin_pb2, pool_pb2
from sdk_errors import openai_error


@pytest_asyncio.fixture
async def aclient(addr: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(addr) as c:
        yield c


@pytest.mark.asyncio
async def test_scoped_lease_renews_past_its_ttl(aclient: AsyncClient, client: Client, make_pool) -> None:
    pool = make_pool()
    async with aclient.lease(pool, ttl=1) as lease:
        await asyncio.sleep(2.5)
        assert [l.lease_id for l in live_leases(client, pool)] == [lease.lease_id]
        assert not lease.revoked
    assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.SUCCESS
    with pytest.raises(KeyMeshError) as ended:
        await aclient.pool.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id))
    assert ended.value.reason == "LEASE_RELEASED"


@pytest.mark.asyncio
async def test_success_reports_latency_and_usage(aclient: AsyncClient, client: Client, make_pool) -> None:
    pool = make_pool()
    async with aclient.lease(pool) as lease:
        await asyncio.sleep(0.05)
        lease.report(input_tokens=5, output_tokens=7)
    stats = key_stats(client, pool)[lease.key_id]
    assert (stats.input_tokens, stats.output_tokens) == (5, 7)
    assert stats.ema_latency.ToTimedelta() >= timedelta(milliseconds=50)


@pytest.mark.asyncio
async def test_a_failure_in_the_block_is_reported_and_reraised(aclient: AsyncClient, client: Client, make_pool) -> None:
    pool = make_pool()
    with pytest.raises(Exception) as raised:
        async with aclient.lease(pool) as lease:
            raise openai_error(429, "insufficient_quota", "You exceeded your current quota")
    assert getattr(raised.value, "status_code", None) == 429
    assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.QUOTA_EXHAUSTED
    stats = key_stats(client, pool)[lease.key_id]
    assert stats.state == admin_pb2.KEY_STATE_AUTO_DISABLED_QUOTA
    assert live_leases(client, pool) == []


@pytest.mark.asyncio
async def test_cancelling_the_task_ends_the_lease(aclient: AsyncClient, client: Client, make_pool) -> None:
    pool = make_pool()
    inside = asyncio.Event()
    leases = []

    async def hold() -> None:
        async with aclient.lease(pool, ttl=30) as lease:
            leases.append(lease)
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(hold())
    await asyncio.wait_for(inside.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_leases(client, pool) == []
    assert leases[0].outcome.kind is OutcomeKind.CLIENT_ERROR
    assert key_stats(client, pool)[leases[0].key_id].consecutive_failures == 0


@pytest.mark.asyncio
async def test_removing_the_key_revokes_the_lease_inside_the_block(aclient: AsyncClient, make_pool) -> None:
    pool = make_pool()
    async with aclient.lease(pool, ttl=3) as lease:  # a revocation reaches a lease from its first renewal on (ttl/3)
        await aclient.admin.RemoveKey(admin_pb2.RemoveKeyRequest(pool=pool, key_id=lease.key_id))
        await asyncio.wait_for(lease.revoked_event.wait(), 5)
        assert lease.gone_reason == "LEASE_REVOKED"


@pytest.mark.asyncio
async def test_call_with_retry_moves_to_another_key_after_a_transient_failure(aclient: AsyncClient, make_pool) -> None:
    pool = make_pool(keys=2)
    used: list[str] = []

    async def call(lease) -> str:
        used.append(lease.key_id)
        if len(used) == 1:
            raise openai_error(502, None, "Bad gateway")
        return "answer"

    assert await aclient.call_with_retry(pool, call, budget_s=5, backoff_base_s=0.01) == "answer"
    assert len(used) == 2 and used[0] != used[1]


@pytest.mark.asyncio
async def test_errors_carry_the_server_reason(aclient: AsyncClient, make_pool) -> None:
    pool = make_pool(max_concurrency=1)
    async with aclient.lease(pool, ttl=30):
        with pytest.raises(KeyMeshError) as busy:
            await aclient.acquire(pool, wait_timeout=0.2)
    assert busy.value.reason == "NO_KEY_AVAILABLE"


@pytest.mark.asyncio
async def test_plain_methods_end_a_bare_lease_without_protobuf(aclient: AsyncClient, client: Client, make_pool) -> None:
    pool = make_pool(keys=1)
    lease = await aclient.acquire(pool, ttl=5)
    await aclient.renew(lease)
    await aclient.mark_failed(lease, OutcomeKind.TRANSIENT, http_status=502, latency=0.1)
    assert key_stats(client, pool)[lease.key_id].consecutive_failures == 1
    again = await aclient.acquire(pool)
    await aclient.release(again)
    with pytest.raises(KeyMeshError) as ended:
        await aclient.release(again)
    assert ended.value.reason == "LEASE_RELEASED"
