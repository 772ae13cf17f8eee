"""Fixtures for the end-to-end tests: a real KeyMesh server at KEYMESH_ADDR (the harness starts it)
and the fake provider at KEYMESH_FAKE_PROVIDER_URL (started here when absent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from google.protobuf.duration_pb2 import Duration

from keymesh_client import Client
from keymesh_client.v1 import admin_pb2

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def addr() -> str:
    value = os.environ.get("KEYMESH_ADDR")
    if not value:
        pytest.skip("KEYMESH_ADDR is not set: no KeyMesh server to test against")
    return value


@pytest.fixture
def client(addr: str) -> Iterator[Client]:
    with Client(addr) as c:
        yield c


PoolFactory = Callable[..., str]


@pytest.fixture
def make_pool(client: Client) -> Iterator[PoolFactory]:
    """Creates a uniquely named pool with keys k0..k{n-1} (secrets sk-<pool>-<i>); deleted afterwards."""
    created: list[str] = []

    def make(
        keys: int = 1,
        *,
        min_ttl_s: int = 1,
        max_concurrency: int = 0,
        default_cooldown_s: Optional[int] = None,
        secrets: Optional[list[str]] = None,
    ) -> str:
        name = f"py-{uuid.uuid4().hex[:12]}"
        pool = admin_pb2.Pool(name=name, min_ttl=Duration(seconds=min_ttl_s))
        if default_cooldown_s is not None:
            pool.default_cooldown.CopyFrom(Duration(seconds=default_cooldown_s))
        client.admin.CreatePool(admin_pb2.CreatePoolRequest(pool=pool))
        created.append(name)
        for i in range(keys):
            client.admin.AddKey(
                admin_pb2.AddKeyRequest(
                    pool=name,
                    key=admin_pb2.Key(id=f"k{i}", label=f"key {i}", max_concurrency=max_concurrency),
                    secret=secrets[i] if secrets else f"sk-{name}-{i}",
                )
            )
        return name

    yield make
    for name in created:
        client.admin.DeletePool(admin_pb2.DeletePoolRequest(name=name, force=True))


@pytest.fixture(scope="session")
def fake_provider_url() -> Iterator[str]:
    """The fake OpenAI-style provider (test/fake-provider), started for the session when not given."""
    given = os.environ.get("KEYMESH_FAKE_PROVIDER_URL")
    if given:
        yield given
        return
    # Its own process group: npx and tsx each start a child, and all of them must stop with it.
    proc = subprocess.Popen(
        ["npx", "tsx", "test/fake-provider/main.ts", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            pytest.fail("the fake provider did not start (is node/npx available?)")
        yield json.loads(line)["url"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
