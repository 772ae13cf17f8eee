"""KeyMesh client: leased LLM API keys over gRPC, sync (Client) and asyncio (AsyncClient)."""

from keymesh_client.aio import AsyncClient, AsyncLeaseScope
from keymesh_client.classify import Outcome, OutcomeKind, classify
from keymesh_client.client import Client, LeaseScope
from keymesh_client.errors import KeyMeshError, ProviderError
from keymesh_client.lease import Lease
from keymesh_client.ratelimit import RateLimitInfo, parse_rate_limit_headers

_SEED_NAMES = ("AsyncOpenAIHandler", "KeyPool", "LeasedKey", "NoAvailableKeyError", "OpenAIHandler", "SchedulerStrategy", "SyncKeyPool")


def __getattr__(name: str) -> object:
    # The seed library's calls (keymesh_client.seed) load on first use: the handlers import httpx.
    if name in _SEED_NAMES:
        from keymesh_client import seed

        return getattr(seed, name)
    raise AttributeError(f"module 'keymesh_client' has no attribute {name!r}")


__all__ = [
    *_SEED_NAMES,
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
