"""Both clients' TLS options against a real KeyMesh server over TLS at KEYMESH_TLS_ADDR, whose
self-signed certificate is the PEM file KEYMESH_TLS_CA (scripts/test.sh starts it)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import grpc
import pytest

from keymesh_client import AsyncClient, Client, KeyMeshError
from keymesh_client.v1 import admin_pb2, pool_pb2


@pytest.fixture(scope="module")
def tls_server() -> tuple[str, bytes]:
    addr, ca = os.environ.get("KEYMESH_TLS_ADDR"), os.environ.get("KEYMESH_TLS_CA")
    if not addr or not ca:
        pytest.skip("KEYMESH_TLS_ADDR / KEYMESH_TLS_CA are not set: no KeyMesh server over TLS to test against")
    return addr, Path(ca).read_bytes()


def _pool_with_one_key(client: Client) -> str:
    name = f"py-tls-{uuid.uuid4().hex[:12]}"
    client.admin.CreatePool(admin_pb2.CreatePoolRequest(pool=admin_pb2.Pool(name=name)))
    client.admin.AddKey(admin_pb2.AddKeyRequest(pool=name, key=admin_pb2.Key(id="k0"), secret=f"sk-{name}"))
    return name


def test_sync_client_acquires_and_releases_with_the_servers_ca(tls_server: tuple[str, bytes]) -> None:
    addr, ca = tls_server
    with Client(addr, tls=True, root_certificates=ca) as client:
        pool = _pool_with_one_key(client)
        try:
            lease = client.acquire(pool)
            assert (lease.key_id, lease.key) == ("k0", f"sk-{pool}")
            client.pool.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id))
            assert list(client.admin.ListLeases(admin_pb2.ListLeasesRequest(pool=pool)).leases) == []
        finally:
            client.admin.DeletePool(admin_pb2.DeletePoolRequest(name=pool, force=True))


@pytest.mark.asyncio
async def test_async_client_acquires_and_releases_with_the_servers_ca(tls_server: tuple[str, bytes]) -> None:
    addr, ca = tls_server
    with Client(addr, tls=True, root_certificates=ca) as admin:
        pool = _pool_with_one_key(admin)
        try:
            async with AsyncClient(addr, tls=True, root_certificates=ca) as client:
                lease = await client.acquire(pool)
                assert (lease.key_id, lease.key) == ("k0", f"sk-{pool}")
                await client.pool.Release(pool_pb2.ReleaseRequest(lease_id=lease.lease_id))
            assert list(admin.admin.ListLeases(admin_pb2.ListLeasesRequest(pool=pool)).leases) == []
        finally:
            admin.admin.DeletePool(admin_pb2.DeletePoolRequest(name=pool, force=True))


# A hang would end as DEADLINE_EXCEEDED; the refused certificate fails the handshake: UNAVAILABLE.
def test_sync_client_without_the_ca_fails_unavailable_before_its_deadline(tls_server: tuple[str, bytes]) -> None:
    addr, _ = tls_server
    with Client(addr, tls=True, default_timeout=5) as client, pytest.raises(KeyMeshError) as failed:
        client.acquire("any")
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in failed.value.message


@pytest.mark.asyncio
async def test_async_client_without_the_ca_fails_unavailable_before_its_deadline(tls_server: tuple[str, bytes]) -> None:
    addr, _ = tls_server
    async with AsyncClient(addr, tls=True, default_timeout=5) as client:
        with pytest.raises(KeyMeshError) as failed:
            await client.acquire("any")
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in failed.value.message
