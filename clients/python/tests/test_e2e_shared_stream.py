"""Many concurrent lease scopes on one client renew over one KeepAlive stream, against a real
KeyMesh server (KEYMESH_ADDR)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from e2e_helpers import live_leases
from keymesh_client import AsyncClient, Client, Lease, OutcomeKind
from keymesh_client.v1 import pool_pb2_grpc

SCOPES = 50
# Past the 1 s ttl twice over: only renewals keep the leases alive.
HOLD_S = 2.5


def count_streams(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the KeepAlive streams the clients created from now on open."""
    opened: list[int] = []

    class Counting(pool_pb2_grpc.KeyPoolServiceStub):
        def __init__(self, channel: Any) -> None:
            super().__init__(channel)
            keep_alive = self.KeepAlive

            def counted(*args: Any, **kwargs: Any) -> Any:
                opened.append(1)
                return keep_alive(*args, **kwargs)

            self.KeepAlive = counted

    monkeypatch.setattr(pool_pb2_grpc, "KeyPoolServiceStub", Counting)
    return opened


def test_fifty_scopes_renew_past_their_ttl_over_one_stream_and_one_thread(
    addr: str, client: Client, make_pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool()
    inside = threading.Barrier(SCOPES + 1)
    leave = threading.Event()
    opened = count_streams(monkeypatch)
    with Client(addr) as leaser:

        def hold(_: int) -> Lease:
            with leaser.lease(pool, ttl=1) as lease:
                inside.wait(10)
                leave.wait(10)
            return lease

        with ThreadPoolExecutor(SCOPES) as executor:
            holders = [executor.submit(hold, i) for i in range(SCOPES)]
            inside.wait(10)
            time.sleep(HOLD_S)
            live = live_leases(client, pool)
            keepers = [thread for thread in threading.enumerate() if thread.name == "keymesh-keepalive"]
            leave.set()
            leases = [holder.result() for holder in holders]
    assert sorted(l.lease_id for l in live) == sorted(lease.lease_id for lease in leases)
    assert len(opened) == 1 and len(keepers) == 1
    assert not any(lease.revoked for lease in leases)
    assert all(lease.outcome is not None and lease.outcome.kind is OutcomeKind.SUCCESS for lease in leases)
    assert live_leases(client, pool) == []


@pytest.mark.asyncio
async def test_fifty_scopes_renew_past_their_ttl_over_one_stream_and_one_task(
    addr: str, client: Client, make_pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool()
    entered = 0
    all_inside = asyncio.Event()
    leave = asyncio.Event()
    opened = count_streams(monkeypatch)
    async with AsyncClient(addr) as leaser:

        async def hold() -> Lease:
            nonlocal entered
            async with leaser.lease(pool, ttl=1) as lease:
                entered += 1
                if entered == SCOPES:
                    all_inside.set()
                await leave.wait()
            return lease

        holders = [asyncio.create_task(hold()) for _ in range(SCOPES)]
        await asyncio.wait_for(all_inside.wait(), 10)
        await asyncio.sleep(HOLD_S)
        live = await asyncio.to_thread(live_leases, client, pool)
        keepers = [task for task in asyncio.all_tasks() if task.get_name() == "keymesh-keepalive"]
        leave.set()
        leases = await asyncio.gather(*holders)
    assert sorted(l.lease_id for l in live) == sorted(lease.lease_id for lease in leases)
    assert len(opened) == 1 and len(keepers) == 1
    assert not any(lease.revoked for lease in leases)
    assert all(lease.outcome is not None and lease.outcome.kind is OutcomeKind.SUCCESS for lease in leases)
    assert live_leases(client, pool) == []
