"""Renewing every lease of a client over one KeepAlive stream: the schedule and dispatch (Renewals,
on an explicit clock) and the sync client's one stream and one thread (against a fake stub)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Iterator

import grpc
import pytest

import keymesh_client.client
from keymesh_client import Client, Lease
from keymesh_client._renewal import Renewals
from keymesh_client.v1 import pool_pb2, pool_pb2_grpc
from fake_pool import HALF_CLOSED, TAKE_TIMEOUT_S, FakePool, FakeRpcError, grant, gone, renewed


def lease(lease_id: str, pool: str = "p", renew_interval_s: int = 10) -> Lease:
    return Lease(grant(lease_id, pool, ttl_s=30, renew_interval_s=renew_interval_s), threading.Event())


def ids(requests: list[pool_pb2.KeepAliveRequest]) -> list[str]:
    return [request.lease_id for request in requests]


def watching(*leases: Lease) -> tuple[Renewals, float]:
    """Renewals watching leases, their first renewals sent at the returned instant."""
    renewals, now = Renewals(), time.monotonic()
    for each in leases:
        renewals.watch(each, None, now)
    assert ids(renewals.due(now)[0]) == [each.lease_id for each in leases]
    return renewals, now


def test_each_lease_is_renewed_at_once_then_at_its_own_interval() -> None:
    slow, fast = lease("slow", renew_interval_s=10), lease("fast", renew_interval_s=4)
    renewals, now = Renewals(), time.monotonic()
    renewals.watch(slow, 12, now)
    renewals.watch(fast, None, now)
    requests, next_due = renewals.due(now)
    assert ids(requests) == ["slow", "fast"] and next_due == now + 4
    assert requests[0].ttl.ToTimedelta() == timedelta(seconds=12) and not requests[1].HasField("ttl")
    assert renewals.due(now + 3.9) == ([], now + 4)
    assert ids(renewals.due(now + 4)[0]) == ["fast"]
    assert ids(renewals.due(now + 8)[0]) == ["fast"]
    requests, next_due = renewals.due(now + 10)
    assert ids(requests) == ["slow"] and next_due == now + 12


def test_an_answer_reaches_its_own_lease_and_sets_its_next_interval() -> None:
    a, b = lease("a"), lease("b")
    renewals, now = watching(a, b)
    renewals.answer(renewed("b", ttl_s=60, renew_interval_s=20))
    assert (b.ttl, b.renew_interval) == (timedelta(seconds=60), timedelta(seconds=20))
    assert (a.ttl, a.renew_interval) == (timedelta(seconds=30), timedelta(seconds=10))
    requests, next_due = renewals.due(now + 10)
    assert ids(requests) == ["a", "b"] and next_due == now + 20
    assert ids(renewals.due(now + 20)[0]) == ["a"]


def test_a_revocation_ends_only_its_own_lease() -> None:
    a, b = lease("a"), lease("b")
    renewals, now = watching(a, b)
    renewals.answer(gone("a"))
    assert a.revoked and a.gone_reason == "LEASE_REVOKED"
    assert not b.revoked and len(renewals) == 1
    assert ids(renewals.due(now + 10)[0]) == ["b"]


def test_a_stopped_lease_is_no_longer_renewed_nor_told_it_is_gone() -> None:
    a, b = lease("a"), lease("b")
    renewals, now = watching(a, b)
    renewals.unwatch(a)
    renewals.answer(gone("a"))
    assert not a.revoked
    assert ids(renewals.due(now + 10)[0]) == ["b"]


def test_a_new_stream_renews_every_watched_lease_at_once() -> None:
    a, b = lease("a"), lease("b")
    renewals, now = watching(a, b)
    assert renewals.due(now + 1)[0] == []
    renewals.stream_opened(now + 1)
    assert ids(renewals.due(now + 1)[0]) == ["a", "b"]


def test_a_lease_past_its_deadline_while_renewals_fail_expires() -> None:
    a = lease("a")
    renewals, _ = watching(a)
    renewals.broken(FakeRpcError(grpc.StatusCode.UNAVAILABLE), a.local_deadline - 1)
    assert not a.revoked
    renewals.broken(FakeRpcError(grpc.StatusCode.UNAVAILABLE), a.local_deadline)
    assert a.revoked and a.gone_reason == "LEASE_EXPIRED" and len(renewals) == 0


def test_a_lease_whose_renewals_go_unanswered_until_its_deadline_expires() -> None:
    a = lease("a")
    renewals, _ = watching(a)
    assert renewals.due(a.local_deadline) == ([], None)
    assert a.gone_reason == "LEASE_EXPIRED"


def test_a_transient_failure_ends_no_lease() -> None:
    leases = [lease("a"), lease("b")]
    renewals, now = watching(*leases)
    renewals.broken(FakeRpcError(grpc.StatusCode.UNAVAILABLE), now)
    renewals.broken(None, now)
    assert not any(each.revoked for each in leases) and len(renewals) == 2


def test_a_final_code_ends_the_lease_whose_renewal_was_refused() -> None:
    a, b, c = lease("a"), lease("b"), lease("c")
    renewals, now = watching(a, b, c)
    renewals.answer(renewed("a"))
    renewals.broken(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "ttl must not be negative"), now)
    assert b.revoked and b.gone_message == "ttl must not be negative"
    assert not a.revoked and not c.revoked


def test_a_refused_pool_ends_every_lease_of_that_pool() -> None:
    a, b, c = lease("a", pool="p"), lease("b", pool="q"), lease("c", pool="q")
    renewals, now = watching(a, b, c)
    renewals.answer(renewed("a"))
    renewals.broken(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED), now)
    assert b.revoked and c.revoked and not a.revoked


def test_a_refused_client_ends_every_lease() -> None:
    leases = [lease("a", pool="p"), lease("b", pool="q")]
    renewals, now = watching(*leases)
    renewals.answer(renewed("a"))
    renewals.broken(FakeRpcError(grpc.StatusCode.UNAUTHENTICATED), now)
    assert all(each.revoked for each in leases) and len(renewals) == 0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePool:
    pool = FakePool()
    monkeypatch.setattr(pool_pb2_grpc, "KeyPoolServiceStub", lambda channel: pool)
    monkeypatch.setattr(keymesh_client.client, "RENEWAL_RETRY_PAUSE_S", 0)
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
        assert sorted(stream.take(n)) == everyone
        assert len(fake.calls) == 1 and len(keepers()) == 1
        leave.set()
        leases = [holder.result() for holder in holders]
    assert sorted(fake.released) == everyone and not any(each.revoked for each in leases)
    # The last scope out half-closes the stream; the thread ends with it.
    assert stream.take(1) == [HALF_CLOSED]
    for thread in keepers():
        thread.join(TAKE_TIMEOUT_S)
    assert keepers() == []


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


def test_a_refused_renewal_ends_its_lease_and_the_others_move_to_a_new_stream(fake: FakePool, sync_client: Client) -> None:
    with sync_client.lease("p") as a, sync_client.lease("p") as b:
        first = fake.stream(1)
        assert first.take(2) == [a.lease_id, b.lease_id]
        first.answer(renewed(a.lease_id))
        first.fail(grpc.StatusCode.NOT_FOUND, "pool not found")
        assert b.revoked_event.wait(TAKE_TIMEOUT_S) and b.gone_message == "pool not found"
        assert fake.stream(2).take(1) == [a.lease_id]
        assert not a.revoked


def test_the_stream_closes_when_no_lease_is_left_and_reopens_for_the_next(fake: FakePool, sync_client: Client) -> None:
    with sync_client.lease("p") as a:
        assert fake.stream(1).take(1) == [a.lease_id]
    assert fake.stream(1).take(1) == [HALF_CLOSED]
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
    # The next renewal is 10 s away: closing must not wait for it.
    closer = threading.Thread(target=client.close)
    closer.start()
    closer.join(TAKE_TIMEOUT_S)
    assert not closer.is_alive() and not thread.is_alive() and stream.cancelled.is_set()
    with pytest.raises(ValueError):
        client.lease("p").__enter__()
