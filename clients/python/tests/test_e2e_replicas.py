"""Both clients against two KeyMesh replicas on one Postgres database (DATABASE_URL, as the test
harness sets it; server processes of the test's own): a scoped lease held across the kill -9 of its
pool's owner, and callers that see no error while the owner stops gracefully. Skipped when the
server names no owner (a build without replicas)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from e2e_helpers import live_leases
from keymesh_client import AsyncClient, Client
from keymesh_client.v1 import pool_pb2, pool_pb2_grpc
from servers import Server, create_pool, master_key, scratch_database

TTL_S = 20
POOL = "rp"


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    base = os.environ.get("DATABASE_URL")
    if not base:
        pytest.skip("DATABASE_URL is not set: no Postgres for replicas")
    db = scratch_database(base, f"keymesh_py_replicas_{uuid.uuid4().hex[:8]}")
    key = master_key()
    tmp = tmp_path_factory.mktemp("replicas")
    env = {"KEYMESH_OWNERSHIP_TTL": "3000ms", "KEYMESH_SNAPSHOT_INTERVAL": "200ms"}
    started = [Server(tmp / f"r{i}", key, db, env).start() for i in range(2)]
    try:
        create_pool(started[0].addr, POOL, keys=2)
        yield started
    finally:
        for r in started:
            r.stop()


def owner(replicas: list[Server]) -> Optional[Server]:
    """The replica that owns the pool, as the keymesh-owner header names it; None without replicas."""
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(replicas[0].addr) as channel:
        stub = pool_pb2_grpc.KeyPoolServiceStub(channel)
        while True:
            try:
                # The shortest ttl: should its release come back after a kill (ends reach the database with
                # the next snapshot), it is soon over.
                probe = pool_pb2.AcquireRequest(pool=POOL, holder="probe", lease_ttl=Duration(seconds=1))
                lease, call = stub.Acquire.with_call(probe, timeout=30)
                break
            except grpc.RpcError as error:
                # A replica that just (re)joined may be handing pools over.
                if error.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        stub.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id), timeout=30)
    named = dict(call.initial_metadata()).get("keymesh-owner")
    return next((r for r in replicas if r.addr == named), None)


def test_a_scoped_lease_outlives_the_kill_of_its_pools_owner(replicas: list[Server], caplog: pytest.LogCaptureFixture) -> None:
    victim = owner(replicas)
    if victim is None:
        pytest.skip("the server names no owner: it runs without replicas")
    try:
        with caplog.at_level(logging.WARNING, logger="keymesh_client"), Client([r.addr for r in replicas]) as client:
            with client.lease(POOL, ttl=TTL_S) as lease:
                granted_until = lease.expires_at.timestamp()
                victim.kill()
                # Renewed after the crash (the first renewal is due a third of the ttl after the grant):
                # through the survivor, once it took the pool over.
                wait_for(lambda: lease.expires_at.timestamp() > granted_until + 1)
                assert not lease.revoked
            with client.lease(POOL) as after:
                assert after.key_id in ("k0", "k1")
            live = {l.lease_id for l in live_leases(client, POOL)}
            assert lease.lease_id not in live and after.lease_id not in live
        assert caplog.records == []
    finally:
        victim.start()


@pytest.mark.asyncio
async def test_async_callers_see_no_error_while_the_owner_stops_gracefully(replicas: list[Server], caplog: pytest.LogCaptureFixture) -> None:
    victim = await asyncio.to_thread(owner, replicas)
    if victim is None:
        pytest.skip("the server names no owner: it runs without replicas")
    errors: list[BaseException] = []
    done = 0
    stop = False

    async def caller() -> None:
        nonlocal done
        while not stop:
            try:
                async with client.lease(POOL):
                    await asyncio.sleep(0.005)
                done += 1
            except Exception as error:
                errors.append(error)

    async def until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="keymesh_client"):
        async with AsyncClient([r.addr for r in replicas]) as client:
            callers = [asyncio.create_task(caller()) for _ in range(2)]
            await until(lambda: done >= 10)
            stopping = threading.Thread(target=victim.kill, args=(signal.SIGTERM,))
            stopping.start()
            at_stop = done
            await until(lambda: done >= at_stop + 20 or bool(errors))
            stop = True
            await asyncio.gather(*callers)
            await asyncio.to_thread(stopping.join)
    await asyncio.to_thread(victim.start)
    assert errors == []
    assert caplog.records == []
