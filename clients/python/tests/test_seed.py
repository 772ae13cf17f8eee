"""PyPI keymesh's calls (KeyPool, SyncKeyPool, the OpenAI handlers) over a real server (KEYMESH_ADDR), with the
real openai SDK against test/fake-provider. Each seed snippet (its README's quick start and three
integration patterns) runs as written there, with only the import and the constructor changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import uuid

import pytest
from openai import AsyncOpenAI, AuthenticationError, OpenAI

from e2e_helpers import key, key_stats, live_leases
from keymesh_client import AsyncOpenAIHandler, Client, KeyPool, NoAvailableKeyError, OpenAIHandler, SchedulerStrategy, SyncKeyPool
from keymesh_client.seed import key_id_of
from keymesh_client.v1 import admin_pb2


@pytest.fixture
def seed_keys(fake_provider_url: str) -> list[str]:
    """Three fresh keys the fake provider accepts (a generous rate limit)."""
    keys = [f"sk-seed-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for key in keys:
        body = json.dumps({"key": key, "limits": {"requestsPerWindow": 100, "windowMs": 1000}}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{fake_provider_url}/_fake/keys", data=body, method="POST"), timeout=5)
    return keys


@pytest.fixture
def pool_name(client: Client):
    """A unique pool name; the pool (created by the code under test) is deleted afterwards."""
    name = f"py-seed-{uuid.uuid4().hex[:10]}"
    yield name
    client.admin.DeletePool(admin_pb2.DeletePoolRequest(name=name, force=True))


def provider_stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{url}/_fake/stats", timeout=5).read())["keys"]


@pytest.mark.asyncio
async def test_the_quick_start_async_handler(addr: str, pool_name: str, seed_keys: list[str], fake_provider_url: str) -> None:
    # The seed's README, "Asynchronous Integration", with the constructor given a pool and address.
    handler = AsyncOpenAIHandler(
        keys=seed_keys, strategy=SchedulerStrategy.LEAST_BUSY, default_cooldown=60.0, pool=pool_name, addr=addr
    )
    client = AsyncOpenAI(api_key="dummy-key", http_client=handler, base_url=f"{fake_provider_url}/v1", max_retries=0)
    try:
        response = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello KeyMesh Async!"}])
        assert response.choices[0].message.content == "echo: Hello KeyMesh Async!"
    finally:
        await handler.aclose()
    assert sum(provider_stats(fake_provider_url)[k]["ok"] for k in seed_keys) == 1


def test_the_quick_start_sync_handler_avoids_a_spent_key_and_disables_a_rejected_one(
    client: Client, addr: str, pool_name: str, seed_keys: list[str], fake_provider_url: str
) -> None:
    tight = f"sk-seed-tight-{uuid.uuid4().hex[:8]}"  # one request per 10 s
    body = json.dumps({"key": tight, "limits": {"requestsPerWindow": 1, "windowMs": 10_000}}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{fake_provider_url}/_fake/keys", data=body, method="POST"), timeout=5)
    rejected = f"sk-seed-unknown-{uuid.uuid4().hex[:8]}"  # the provider answers 401
    # The seed's README, "Synchronous Integration", with the constructor given a pool and address.
    handler = OpenAIHandler(keys=[*seed_keys, tight, rejected], strategy=SchedulerStrategy.ROUND_ROBIN, pool=pool_name, addr=addr)
    sdk = OpenAI(api_key="dummy-key", http_client=handler, base_url=f"{fake_provider_url}/v1", max_retries=3)
    answered, refused = 0, 0
    try:
        for i in range(12):
            try:
                response = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"hi {i}"}])
            except AuthenticationError:
                refused += 1  # a 401 is the caller's to see, as with the seed; the key is out of rotation after it
                continue
            assert response.choices[0].message.content == f"echo: hi {i}"
            answered += 1
    finally:
        handler.close()
    assert (answered, refused) == (11, 1)
    assert live_leases(client, pool_name) == []
    assert key(client, pool_name, key_id_of(rejected)).state == admin_pb2.KEY_STATE_AUTO_DISABLED_AUTH
    # The tight key's first answer said its budget was spent (x-ratelimit-remaining-requests: 0); the
    # release carried that, so KeyMesh lent it no more: its 429 was avoided, not retried.
    fake = provider_stats(fake_provider_url)
    assert (fake[tight]["ok"], fake[tight]["rateLimited"]) == (1, 0)


@pytest.mark.asyncio
async def test_pattern_1_request_scoped_client_overrides(addr: str, pool_name: str, seed_keys: list[str], fake_provider_url: str) -> None:
    pool = KeyPool(keys=seed_keys, strategy=SchedulerStrategy.LEAST_BUSY, pool=pool_name, addr=addr)
    client = AsyncOpenAI(api_key="unused", base_url=f"{fake_provider_url}/v1", max_retries=0)
    # Pattern 1 of the seed's README, as written.
    key = await pool.acquire()
    start = time.monotonic()
    try:
        scoped_client = client.with_options(api_key=key)
        response = await scoped_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "p1"}])
        await pool.release(key, latency=time.monotonic() - start)
    except Exception:
        await pool.mark_failed(key)
        raise
    assert response.choices[0].message.content == "echo: p1"
    assert isinstance(key, str) and key in seed_keys
    await pool.close()


@pytest.mark.asyncio
async def test_pattern_2_per_request_headers(client: Client, addr: str, pool_name: str, seed_keys: list[str], fake_provider_url: str) -> None:
    pool = KeyPool(keys=seed_keys, pool=pool_name, addr=addr)
    sdk = AsyncOpenAI(api_key="unused", base_url=f"{fake_provider_url}/v1", max_retries=0)
    # Pattern 2 of the seed's README, as written.
    key = await pool.acquire()
    start = time.monotonic()
    try:
        response = await sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Query"}], extra_headers={"Authorization": f"Bearer {key}"}
        )
        await pool.release(key, latency=time.monotonic() - start)
    except Exception:
        await pool.mark_failed(key)
        raise
    assert response.choices[0].message.content == "echo: Query"
    assert live_leases(client, pool_name) == []
    await pool.close()


@pytest.mark.asyncio
async def test_pattern_3_context_managers(client: Client, addr: str, pool_name: str, seed_keys: list[str], fake_provider_url: str) -> None:
    # Pattern 3 of the seed's README, as written.
    @contextlib.asynccontextmanager
    async def key_lifecycle(pool: KeyPool):
        key = await pool.acquire()
        start = time.monotonic()
        try:
            yield key
            await pool.release(key, latency=time.monotonic() - start)
        except Exception:
            await pool.mark_failed(key)
            raise

    pool = KeyPool(keys=seed_keys, pool=pool_name, addr=addr)
    sdk = AsyncOpenAI(api_key="unused", base_url=f"{fake_provider_url}/v1", max_retries=0)
    async with key_lifecycle(pool) as key:
        scoped_client = sdk.with_options(api_key=key)
        response = await scoped_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "p3"}])
    assert response.choices[0].message.content == "echo: p3"
    with pytest.raises(ValueError):
        async with key_lifecycle(pool) as key:
            raise ValueError("the SDK call failed")
    assert key_stats(client, pool_name)[key_id_of(key)].consecutive_failures == 1
    assert live_leases(client, pool_name) == []
    await pool.close()


def test_sync_pool_calls_end_leases_with_their_outcome(client: Client, addr: str, pool_name: str) -> None:
    secrets = ["sk-sync-a", "sk-sync-b"]
    with SyncKeyPool(keys=secrets, pool=pool_name, addr=addr, acquire_timeout=0.5, ttl=1.0) as pool:
        first = pool.acquire()
        assert first in secrets and isinstance(first, str)
        time.sleep(2.2)  # two ttls: only the background renewal keeps the lease alive
        assert len(live_leases(client, pool_name)) == 1
        pool.release(first, latency=0.25)
        assert key_stats(client, pool_name)[key_id_of(first)].ema_latency.ToMilliseconds() == 250
        second = pool.acquire()
        pool.mark_rate_limited(str(second), cooldown=30)  # a plain str finds its lease too
        assert key_stats(client, pool_name)[key_id_of(second)].cooldown_remaining.ToMilliseconds() > 25_000
        third = pool.acquire()
        assert third != second
        pool.mark_failed(third)
        assert key_stats(client, pool_name)[key_id_of(third)].consecutive_failures == 1
        held = pool.acquire()
        assert pool.available_count() == 1 and set(pool.status()) == {key_id_of(s) for s in secrets}
    # close() ended the lease still held, with no verdict on its key.
    assert live_leases(client, pool_name) == []
    assert key_stats(client, pool_name)[key_id_of(held)].consecutive_failures <= 1


def test_an_existing_pool_by_name_and_no_key_available(client: Client, addr: str, make_pool) -> None:
    name = make_pool(keys=1, max_concurrency=1)
    pool = SyncKeyPool(pool=name, addr=addr, acquire_timeout=0.2)
    key = pool.acquire()
    with pytest.raises(NoAvailableKeyError):
        pool.acquire()
    pool.release(key)
    pool.close()
    assert live_leases(client, name) == []
