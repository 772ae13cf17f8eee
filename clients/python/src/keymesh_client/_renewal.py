"""Which of a client's leases to renew when over its one KeepAlive stream, and where each answer goes.

Plain bookkeeping shared by the sync and asyncio clients: no I/O, no locking, no clock of its own
(every method is given `now` on the monotonic clock). The sync client calls it under its lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Optional

import grpc

from keymesh_client.errors import KeyMeshError
from keymesh_client.lease import Lease, Seconds
from keymesh_client.v1 import pool_pb2

# Stream failures after which renewing can never succeed: the lease is gone.
FINAL_RENEWAL_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# Final codes that refuse the client (its token, or a server without KeepAlive), not one lease.
_CLIENT_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED})
RENEWAL_RETRY_PAUSE_S = 0.2
_EXPIRED_MESSAGE = "renewal failed until the lease expired"


@dataclass
class Stream:
    """One KeepAlive stream as its reader and its request iterator both see it."""

    ended: bool = False
    # The request iterator ended because no lease was left: the stream's end is no failure.
    half_closed: bool = False


@dataclass
class _Watched:
    lease: Lease
    request: pool_pb2.KeepAliveRequest
    due: float


class Renewals:
    """The leases a client renews: each at its own renew_interval, the first renewal at once.

    The server answers renewals in the order it reads them, so the oldest unanswered one is the
    renewal a stream failed on; pushed revocations ("gone") answer nothing and may come any time.
    """

    def __init__(self) -> None:
        self._watched: dict[str, _Watched] = {}
        self._unanswered: deque[Lease] = deque()

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, lease: Lease, ttl: Optional[Seconds], now: float) -> None:
        self._watched[lease.lease_id] = _Watched(lease, lease.keep_alive_request(ttl), now)

    def unwatch(self, lease: Lease) -> None:
        self._watched.pop(lease.lease_id, None)

    def stream_opened(self, now: float) -> None:
        """A new stream renews every lease at once: the server pushes revocations only for leases it renewed."""
        self._unanswered.clear()
        for watched in self._watched.values():
            watched.due = now

    def due(self, now: float) -> tuple[list[pool_pb2.KeepAliveRequest], Optional[float]]:
        """The renewals to send now and when the next falls due (None when no lease is watched).

        A lease past its local deadline is marked expired instead: no renewal was answered in time.
        """
        self._end(self._expired(now), "LEASE_EXPIRED", _EXPIRED_MESSAGE)
        requests = []
        for watched in self._watched.values():
            if watched.due <= now:
                requests.append(watched.request)
                self._unanswered.append(watched.lease)
                watched.due = now + watched.lease.renew_interval.total_seconds()
        return requests, min((w.due for w in self._watched.values()), default=None)

    def answer(self, response: pool_pb2.KeepAliveResponse) -> None:
        """Route one KeepAlive response to its lease; a lease no longer watched ignores it."""
        for i, lease in enumerate(self._unanswered):
            if lease.lease_id == response.lease_id:
                del self._unanswered[i]
                break
        watched = self._watched.get(response.lease_id)
        if watched is not None and not watched.lease._apply(response):
            del self._watched[response.lease_id]

    def broken(self, error: Optional[grpc.RpcError], now: float) -> None:
        """The stream ended (error None: the server closed it): a final code ends the leases it
        refused, and leases past their local deadline expire."""
        code = error.code() if error is not None else None
        if error is not None and code in FINAL_RENEWAL_CODES:
            self._end(self._refused(code), KeyMeshError.from_rpc_error(error).reason, error.details() or "")
        self._end(self._expired(now), "LEASE_EXPIRED", _EXPIRED_MESSAGE)

    def _refused(self, code: grpc.StatusCode) -> list[Lease]:
        culprit = self._unanswered[0] if self._unanswered else None
        leases = [w.lease for w in self._watched.values()]
        if culprit is None or code in _CLIENT_REFUSED:
            return leases
        if code is grpc.StatusCode.PERMISSION_DENIED:
            # Access is granted per pool: every lease of the culprit's pool would be refused in turn.
            return [lease for lease in leases if lease.pool == culprit.pool]
        return [culprit] if culprit.lease_id in self._watched else []

    def _expired(self, now: float) -> list[Lease]:
        return [w.lease for w in self._watched.values() if now >= w.lease.local_deadline]

    def _end(self, leases: Iterable[Lease], reason: str, message: str) -> None:
        for lease in leases:
            del self._watched[lease.lease_id]
            lease._gone(reason, message)
