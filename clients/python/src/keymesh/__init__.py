"""KeyMesh client: leased LLM API keys over gRPC, sync (Client) and asyncio (AsyncClient)."""

from keymesh.aio import AsyncClient, AsyncLeaseScope
from keymesh.classify import Outcome, OutcomeKind, classify
from keymesh.client import Client, LeaseScope
from keymesh.errors import KeyMeshError, ProviderError
from keymesh.lease import Lease
from keymesh.ratelimit import RateLimitInfo, parse_rate_limit_headers

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
