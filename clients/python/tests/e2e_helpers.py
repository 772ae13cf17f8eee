"""Reading a pool's live state through the admin API, for the end-to-end tests."""

from __future__ import annotations

from keymesh_client import Client
from keymesh_client.v1 import admin_pb2


def live_leases(client: Client, pool: str) -> list[admin_pb2.Lease]:
    return list(client.admin.ListLeases(admin_pb2.ListLeasesRequest(pool=pool)).leases)


def key_stats(client: Client, pool: str) -> dict[str, admin_pb2.KeyStats]:
    stats = client.admin.GetPoolStats(admin_pb2.GetPoolStatsRequest(pool=pool)).stats
    return {k.key_id: k for k in stats.keys}


def key(client: Client, pool: str, key_id: str) -> admin_pb2.Key:
    return client.admin.GetKey(admin_pb2.GetKeyRequest(pool=pool, key_id=key_id)).key
