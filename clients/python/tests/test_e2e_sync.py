"""The sync client against a real KeyMesh server (KEYMESH_ADDR)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest

from e2e_helpers import key, key_stats, live_leases
from keymesh_client import Client, KeyMeshError, OutcomeKind, ProviderError
from keymesh_client.v1 import admin_pb2, pool_pb2
from sdk_errors import openai_error


def test_scoped_lease_renews_past_its_ttl(client: Client, make_pool) -> None:
    pool = make_pool()
    with client.lease(pool, ttl=1) as lease:
        assert lease.ttl == timedelta(seconds=1)
        time.sleep(2.5)
        assert [l.lease_id for l in live_leases(client, pool)] == [lease.lease_id]
        assert not lease.revoked
    assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.SUCCESS
    assert live_leases(client, pool) == []
    with pytest.raises(KeyMeshError) as ended:
        client.pool.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id))
    assert ended.value.reason == "LEASE_RELEASED"


def test_a_lease_nobody_renews_expires(client: Client, make_pool) -> None:
    pool = make_pool()
    lease = client.acquire(pool, ttl=1)
    time.sleep(1.6)
    assert live_leases(client, pool) == []
    with pytest.raises(KeyMeshError) as ended:
        client.pool.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id))
    assert ended.value.code is grpc.StatusCode.NOT_FOUND
    assert ended.value.reason == "LEASE_EXPIRED"


def test_success_reports_latency_usage_and_provider_budget(client: Client, make_pool) -> None:
    pool = make_pool()
    with client.lease(pool) as lease:
        time.sleep(0.05)
        lease.report(
            status=200,
            headers={"X-RateLimit-Limit-Requests": "60", "x-ratelimit-remaining-requests": "41"},
            input_tokens=12,
            output_tokens=34,
        )
    stats = key_stats(client, pool)[lease.key_id]
    assert (stats.input_tokens, stats.output_tokens) == (12, 34)
    assert stats.ema_latency.ToTimedelta() >= timedelta(milliseconds=50)
    assert stats.budget.requests_remaining == 41 and stats.budget.requests_limit == 60
    assert (stats.total_leases, stats.active_leases, stats.consecutive_failures) == (1, 0, 0)


def test_an_auth_error_in_the_block_disables_the_key_and_is_reraised(client: Client, make_pool) -> None:
    pool = make_pool()
    with pytest.raises(Exception) as raised:
        with client.lease(pool) as lease:
            raise openai_error(401, "invalid_api_key", f"Incorrect API key provided: {lease.key}")
    assert getattr(raised.value, "status_code", None) == 401
    assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.AUTH
    k = key(client, pool, lease.key_id)
    assert k.state == admin_pb2.KEY_STATE_AUTO_DISABLED_AUTH
    assert lease.key not in k.state_reason
    assert live_leases(client, pool) == []


def test_a_rate_limit_in_the_block_cools_the_key_for_its_retry_after(client: Client, make_pool) -> None:
    pool = make_pool()
    with pytest.raises(Exception):
        with client.lease(pool) as lease:
            raise openai_error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after": "30"})
    stats = key_stats(client, pool)[lease.key_id]
    assert not stats.eligible
    assert timedelta(seconds=25) < stats.cooldown_remaining.ToTimedelta() <= timedelta(seconds=30)
    assert stats.consecutive_failures == 0


def test_a_transient_error_counts_toward_the_breaker(client: Client, make_pool) -> None:
    pool = make_pool()
    with pytest.raises(Exception):
        with client.lease(pool) as lease:
            raise openai_error(500, None, "The server had an error")
    stats = key_stats(client, pool)[lease.key_id]
    assert stats.consecutive_failures == 1
    assert stats.eligible


def test_any_exception_ends_the_lease(client: Client, make_pool) -> None:
    pool = make_pool()
    with pytest.raises(ValueError):
        with client.lease(pool, ttl=30):
            raise ValueError("bad response shape")
    assert live_leases(client, pool) == []


def test_keyboard_interrupt_ends_the_lease_without_penalty(client: Client, make_pool) -> None:
    pool = make_pool()
    with pytest.raises(KeyboardInterrupt):
        with client.lease(pool, ttl=30) as lease:
            raise KeyboardInterrupt
    assert live_leases(client, pool) == []
    assert lease.outcome is not None and lease.outcome.kind is OutcomeKind.CLIENT_ERROR
    stats = key_stats(client, pool)[lease.key_id]
    assert stats.consecutive_failures == 0 and stats.eligible


def test_disabling_the_key_revokes_the_lease_inside_the_block(client: Client, make_pool) -> None:
    pool = make_pool()
    with client.lease(pool, ttl=3) as lease:  # a revocation reaches a lease from its first renewal on (ttl/3)
        client.admin.DisableKey(admin_pb2.DisableKeyRequest(pool=pool, key_id=lease.key_id, reason="rotation"))
        assert lease.revoked_event.wait(5)
        assert lease.revoked and lease.gone_reason == "LEASE_REVOKED"
    assert live_leases(client, pool) == []


def test_an_operator_revoking_the_lease_reaches_the_block(client: Client, make_pool) -> None:
    pool = make_pool()
    with client.lease(pool, ttl=3) as lease:  # a revocation reaches a lease from its first renewal on (ttl/3)
        client.admin.RevokeLease(admin_pb2.RevokeLeaseRequest(lease_id=lease.lease_id, reason="test"))
        assert lease.revoked_event.wait(5)
        assert lease.gone_reason == "LEASE_REVOKED"
    assert key(client, pool, lease.key_id).state == admin_pb2.KEY_STATE_ENABLED


def test_errors_carry_the_server_reason(client: Client, make_pool) -> None:
    with pytest.raises(KeyMeshError) as missing:
        client.acquire(f"py-missing-{uuid.uuid4().hex[:8]}")
    assert (missing.value.code, missing.value.reason) == (grpc.StatusCode.NOT_FOUND, "POOL_NOT_FOUND")

    with pytest.raises(KeyMeshError) as malformed:
        client.pool.Release(pool_pb2.ReleaseRequest(lease_id="not-a-lease"))
    assert (malformed.value.code, malformed.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "LEASE_ID_MALFORMED")

    pool = make_pool(max_concurrency=1)
    with client.lease(pool, ttl=30):
        with pytest.raises(KeyMeshError) as busy:
            client.acquire(pool, wait_timeout=0.2)
    assert (busy.value.code, busy.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "NO_KEY_AVAILABLE")


def test_a_waiting_acquire_gets_the_key_when_the_holder_ends_its_lease(client: Client, make_pool) -> None:
    pool = make_pool(max_concurrency=1)
    got = threading.Event()

    def wait_for_key() -> str:
        with client.lease(pool, wait_timeout=10) as lease:
            got.set()
            return lease.key_id

    with ThreadPoolExecutor(1) as executor:
        with client.lease(pool, ttl=30):
            waiter = executor.submit(wait_for_key)
            assert not got.wait(0.5)
        # Leaving the block ended the first lease, which must wake the waiter.
        assert waiter.result(timeout=5) == "k0"


def test_call_with_retry_moves_to_another_key_after_a_rate_limit(client: Client, make_pool) -> None:
    pool = make_pool(keys=2)
    used: list[str] = []

    def call(lease) -> str:
        used.append(lease.key_id)
        if len(used) == 1:
            raise openai_error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after": "30"})
        return "answer"

    assert client.call_with_retry(pool, call, budget_s=5) == "answer"
    assert len(used) == 2 and used[0] != used[1]
    assert not key_stats(client, pool)[used[0]].eligible


def test_call_with_retry_gives_up_at_once_when_the_only_key_cools_past_the_budget(client: Client, make_pool) -> None:
    pool = make_pool()
    calls = 0

    def call(lease) -> str:
        nonlocal calls
        calls += 1
        raise openai_error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after": "60"})

    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        client.call_with_retry(pool, call, budget_s=3)
    assert getattr(raised.value, "status_code", None) == 429
    assert calls == 1
    assert time.monotonic() - started < 2


def test_call_with_retry_does_not_retry_a_client_error(client: Client, make_pool) -> None:
    pool = make_pool(keys=2)
    calls = 0

    def call(lease) -> str:
        nonlocal calls
        calls += 1
        raise openai_error(400, "context_length_exceeded", "too long")

    with pytest.raises(Exception) as raised:
        client.call_with_retry(pool, call, budget_s=5)
    assert getattr(raised.value, "status_code", None) == 400 and calls == 1


def test_call_with_retry_raises_provider_error_for_a_reported_failure_past_the_budget(client: Client, make_pool) -> None:
    pool = make_pool(keys=1)

    def call(lease) -> None:
        lease.report(status=503, headers={"retry-after": "1"})

    with pytest.raises(ProviderError) as raised:
        client.call_with_retry(pool, call, budget_s=1, backoff_base_s=0.05)
    assert raised.value.outcome.kind is OutcomeKind.TRANSIENT


def _chat(provider_url: str, key_secret: str, lease) -> dict:
    request = urllib.request.Request(
        f"{provider_url}/v1/chat/completions",
        data=json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {key_secret}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
        lease.report(status=response.status, headers=response.headers, **_usage(body))
        return body


def _usage(body: dict) -> dict:
    usage = body.get("usage") or {}
    return {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)}


def test_workers_lose_no_request_while_keys_rotate_through_cooldowns(client: Client, make_pool, fake_provider_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    secrets = [f"sk-fake-{run}-{i}" for i in range(3)]
    for secret in secrets:
        body = json.dumps({"key": secret, "limits": {"requestsPerWindow": 2, "windowMs": 1000}}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{fake_provider_url}/_fake/keys", data=body, method="POST"), timeout=5)
    pool = make_pool(keys=3, secrets=secrets)

    def one_request(_: int) -> str:
        # urllib raises HTTPError (status and headers) for a 429: the scoped lease classifies it.
        return client.call_with_retry(pool, lambda lease: _chat(fake_provider_url, lease.key, lease)["object"], budget_s=30)

    with ThreadPoolExecutor(4) as executor:
        results = list(executor.map(one_request, range(24)))

    assert results == ["chat.completion"] * 24
    stats = json.loads(urllib.request.urlopen(f"{fake_provider_url}/_fake/stats", timeout=5).read())["keys"]
    ok = {secret: stats[secret]["ok"] for secret in secrets}
    assert sum(ok.values()) == 24 and all(n > 0 for n in ok.values())
    assert all(stats[secret]["unauthorized"] == 0 for secret in secrets)
    assert live_leases(client, pool) == []


def test_plain_methods_end_a_bare_lease_without_protobuf(client: Client, make_pool) -> None:
    pool = make_pool(keys=2, default_cooldown_s=30)
    first = client.acquire(pool, ttl=5)
    before = first.local_deadline
    client.renew(first, ttl=5)
    assert first.local_deadline >= before
    client.release(first, latency=0.25, headers={"x-ratelimit-remaining-requests": "7"}, input_tokens=3, output_tokens=4)
    assert key_stats(client, pool)[first.key_id].ema_latency.ToMilliseconds() == 250
    second = client.acquire(pool, exclude_key_ids=[first.key_id])
    client.mark_rate_limited(second, retry_after=20)
    assert 15_000 < key_stats(client, pool)[second.key_id].cooldown_remaining.ToMilliseconds() <= 20_000
    third = client.acquire(pool, exclude_key_ids=[second.key_id])
    client.mark_failed(third, "auth", http_status=401, message="bad key")
    assert key(client, pool, third.key_id).state == admin_pb2.KEY_STATE_AUTO_DISABLED_AUTH
    assert live_leases(client, pool) == []
    with pytest.raises(KeyMeshError) as ended:
        client.renew(third)
    assert ended.value.reason == "LEASE_RELEASED"
