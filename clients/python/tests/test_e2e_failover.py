"""Both clients across endpoints that go away, against KeyMesh server processes of the test's own
(tests/servers.py): one killed with SIGKILL and started again on its port (lease ids survive a
restart), a list with an endpoint nobody listens on, and two independent servers, one of them
killed for good."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from e2e_helpers import live_leases
from keymesh_client import AsyncClient, Client, OutcomeKind
from servers import Server, create_pool, master_key, pool_name

# Longer than a restart takes on a loaded machine (starting the embedded database can take 10 s or more).
TTL_S = 30


def closed_port() -> str:
    """A loopback address nothing listens on: connecting is refused (UNAVAILABLE)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "a", master_key()).start()
    yield srv
    srv.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    a, b = Server(tmp_path / "a", master_key()).start(), Server(tmp_path / "b", master_key()).start()
    yield a, b
    a.stop()
    b.stop()


def renewed_by(addr: str, pool: str, lease_id: str, after: float) -> bool:
    """The server at addr holds the lease with an expiry past `after` (seconds since the epoch)."""
    try:
        with Client(addr, default_timeout=2) as admin:
            return any(l.lease_id == lease_id and l.expires_at.ToSeconds() > after for l in live_leases(admin, pool))
    except Exception:
        return False


def test_a_dead_endpoint_in_the_list_is_passed_over(server: Server) -> None:
    pool = pool_name()
    create_pool(server.addr, pool)
    with Client([closed_port(), server.addr]) as client:
        with client.lease(pool) as lease:
            assert lease.key_id == "k0"
        assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.SUCCESS
        assert live_leases(client, pool) == []


def test_a_scope_outlives_its_server_being_killed_and_restarted(server: Server) -> None:
    pool = pool_name()
    create_pool(server.addr, pool, max_concurrency=1)
    with Client(server.addr) as client:
        with client.lease(pool, ttl=TTL_S) as lease:
            granted_until = lease.expires_at.timestamp()
            server.kill()
            server.start()
            # The keeper's next stream, to the new process, re-sends the lease, which renews it there.
            wait_for(lambda: renewed_by(server.addr, pool, lease.lease_id, granted_until + 1))
            assert not lease.revoked
        assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.SUCCESS
        assert live_leases(client, pool) == []
        # The key's one slot is free again: the release reached the new process.
        with client.lease(pool, wait_timeout=0) as again:
            assert again.key_id == "k0"


def test_an_acquire_while_the_server_is_down_waits_for_it_within_its_deadline(server: Server) -> None:
    pool = pool_name()
    create_pool(server.addr, pool)
    with Client(server.addr, default_timeout=30) as client:
        server.kill()
        # The process takes a second or more to listen again: the first attempts are refused.
        restart = threading.Thread(target=server.start)
        restart.start()
        try:
            with client.lease(pool) as lease:
                assert lease.key_id == "k0"
        finally:
            restart.join()


def test_calls_move_to_the_other_server_when_one_dies(pair: tuple[Server, Server]) -> None:
    a, b = pair
    pool = pool_name()
    create_pool(a.addr, pool)
    create_pool(b.addr, pool)
    with Client([a.addr, b.addr]) as client:
        with client.lease(pool, ttl=TTL_S) as held:
            a.kill()
            # Re-sent to the other server, which never granted it (two servers, two states): it is over.
            assert held.revoked_event.wait(60)
            assert held.gone_reason == "LEASE_UNKNOWN"
        # The scope's end found the lease over: moot, not an error.
        with client.lease(pool) as after:
            assert after.key_id == "k0"
        assert after.outcome is not None and after.outcome.kind is OutcomeKind.SUCCESS
        assert live_leases(client, pool) == []


@pytest.mark.asyncio
async def test_an_async_scope_outlives_a_restart_and_a_dead_endpoint(server: Server) -> None:
    pool = pool_name()
    create_pool(server.addr, pool, max_concurrency=1)
    async with AsyncClient([closed_port(), server.addr]) as client:
        async with client.lease(pool, ttl=TTL_S) as lease:
            granted_until = lease.expires_at.timestamp()
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(wait_for, lambda: renewed_by(server.addr, pool, lease.lease_id, granted_until + 1))
            assert not lease.revoked
        assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.SUCCESS
        async with client.lease(pool, wait_timeout=0) as again:
            assert again.key_id == "k0"
    with Client(server.addr) as admin:
        assert live_leases(admin, pool) == []
