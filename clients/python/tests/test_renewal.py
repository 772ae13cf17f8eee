"""The sync client renews every lease over one KeepAlive stream read by one thread (against a fake stub
whose leases are renewed every 250 ms); the schedule itself is pinned by test_keepalive_vectors.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Iterator

import grpc
import pytest

from keymesh_client import Client, Lease
from keymesh_client.client import _JOINING_BATCH, _Keeper
from keymesh_client.v1 import pool_pb2_grpc
from fake_pool import TAKE_TIMEOUT_S, FakePool, gone, renewed


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePool:
    pool = FakePool()
    monkeypatch.setattr(pool_pb2_grpc, "KeyPoolServiceStub", lambda channel: pool)
    return pool


@pytest.fixture
def sync_client(fake: FakePool) -> Iterator[Client]:
    with Client("127.0.0.1:1") as client:
        yield client


def keepers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "keymesh-keepalive"]


def test_concurrent_scopes_share_one_stream_and_one_thread(fake: FakePool, sync_client: Client) -> None:
    n = 20
    inside = threading.Barrier(n + 1)
    leave = threading.Event()

    def hold(_: int) -> Lease:
        with sync_client.lease("p") as held:
            inside.wait(TAKE_TIMEOUT_S)
            leave.wait(TAKE_TIMEOUT_S)
        return held

    with ThreadPoolExecutor(n) as executor:
        holders = [executor.submit(hold, i) for i in range(n)]
        inside.wait(TAKE_TIMEOUT_S)
        stream = fake.stream(1)
        everyone = sorted(f"lease-{i}" for i in range(1, n + 1))
        # Every lease is renewed on this one stream (the stream may open before the last scope is in).
        renewed: set[str] = set()
        while renewed != set(everyone):
            renewed.update(stream.take(1))
        assert len(fake.calls) == 1 and len(keepers()) == 1
        leave.set()
        leases = [holder.result() for holder in holders]
    assert sorted(fake.released) == everyone and not any(each.revoked for each in leases)
    # The last scope out half-closes the stream; the client's one thread stays for the next lease.
    assert stream.half_closed()
    assert len(fake.calls) == 1 and len(keepers()) == 1


def test_answers_reach_their_own_lease_and_a_revocation_only_its_own(fake: FakePool, sync_client: Client) -> None:
    with sync_client.lease("p") as a, sync_client.lease("p") as b:
        stream = fake.stream(1)
        assert stream.take(2) == [a.lease_id, b.lease_id]
        stream.answer(renewed(b.lease_id, ttl_s=60), gone(a.lease_id))
        assert a.revoked_event.wait(TAKE_TIMEOUT_S)
        assert a.gone_reason == "LEASE_REVOKED" and a.ttl == timedelta(seconds=30)
        assert b.ttl == timedelta(seconds=60) and not b.revoked


def test_a_broken_stream_is_reopened_and_every_watched_lease_renewed_on_it(fake: FakePool, sync_client: Client) -> None:
    stopped = sync_client.lease("p")
    with sync_client.lease("p") as a, sync_client.lease("p") as b:
        c = stopped.__enter__()
        first = fake.stream(1)
        assert first.take(3) == [a.lease_id, b.lease_id, c.lease_id]
        stopped.__exit__(None, None, None)
        first.fail(grpc.StatusCode.UNAVAILABLE, "connection reset")
        second = fake.stream(2)
        assert second.take(2) == [a.lease_id, b.lease_id]
        assert not a.revoked and not b.revoked and not c.revoked
        assert len(keepers()) == 1
        # The broken stream's request iterator ended too: grpcio's thread pulling it is not left waiting.
        first.consumer.join(TAKE_TIMEOUT_S)
        assert not first.consumer.is_alive()


def test_a_stream_status_ends_no_lease_and_every_lease_moves_to_a_new_stream(fake: FakePool, sync_client: Client) -> None:
    with sync_client.lease("p") as a, sync_client.lease("p") as b:
        first = fake.stream(1)
        assert first.take(2) == [a.lease_id, b.lease_id]
        first.answer(renewed(a.lease_id))
        first.fail(grpc.StatusCode.NOT_FOUND, "pool not found")
        assert sorted(fake.stream(2).take(2)) == sorted([a.lease_id, b.lease_id])
        assert not a.revoked and not b.revoked


def test_the_stream_closes_when_no_lease_is_left_and_reopens_for_the_next(fake: FakePool, sync_client: Client) -> None:
    with sync_client.lease("p") as a:
        assert fake.stream(1).take(1) == [a.lease_id]
    assert fake.stream(1).half_closed()
    with sync_client.lease("p") as b:
        assert fake.stream(2).take(1) == [b.lease_id]
    assert len(fake.calls) == 2


def test_closing_the_client_ends_the_stream_and_its_thread_at_once(fake: FakePool) -> None:
    client = Client("127.0.0.1:1")
    scope = client.lease("p")
    held = scope.__enter__()
    stream = fake.stream(1)
    assert stream.take(1) == [held.lease_id]
    [thread] = keepers()
    closer = threading.Thread(target=client.close)
    closer.start()
    closer.join(TAKE_TIMEOUT_S)
    assert not closer.is_alive() and not thread.is_alive() and stream.cancelled.is_set()
    with pytest.raises(ValueError):
        client.lease("p").__enter__()


def test_scopes_shorter_than_their_renew_interval_wake_the_keeper_only_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = FakePool(renew_interval_ms=10_000)
    monkeypatch.setattr(pool_pb2_grpc, "KeyPoolServiceStub", lambda channel: slow)
    steps: list[int] = []
    step = _Keeper._step

    def counted(self: _Keeper, now: float) -> object:
        steps.append(1)
        return step(self, now)

    monkeypatch.setattr(_Keeper, "_step", counted)
    with Client("127.0.0.1:1") as client:
        for _ in range(2_000):
            with client.lease("p"):
                pass
        # Woken by the first scope (then it waits until that one's renewal would have been due), and
        # once per batch of scopes queued since: never once per scope.
        assert len(steps) <= 2 + 2_000 // _JOINING_BATCH
    assert slow.calls == [] and len(slow.released) == 2_000
