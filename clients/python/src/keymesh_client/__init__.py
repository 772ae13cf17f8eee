"""KeyMesh client: leased LLM API keys over gRPC, sync (Client) and asyncio (AsyncClient)."""

from keymesh_client.aio import AsyncClient, AsyncLeaseScope
from keymesh_client.classify import Outcome, OutcomeKind, classify
from keymesh_client.client import Client, LeaseScope
from keymesh_client.errors import KeyMeshError, ProviderError
from keymesh_client.lease import Lease
from keymesh_client.ratelimit import RateLimitInfo, parse_rate_limit_headers

__all__ = [
    "AsyncClient",
    "AsyncLeaseScope",
    "Client",
    "KeyMeshError",
    "Lease",
    "LeaseScope",
    "Outcome",
    "OutcomeKind",
    "ProviderError",
    "RateLimitInfo",
    "classify",
    "parse_rate_limit_headers",
]
