"""When a client's leases are renewed over its one KeepAlive stream, pinned by test/vectors/keepalive.json.

Plain bookkeeping shared by the sync and asyncio clients: no I/O, no locking, no clock of its own
(every method is given `now_ms`, milliseconds on the monotonic clock). The sync client calls it under
its lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from keymesh_client.errors import reason_name
from keymesh_client.lease import Lease
from keymesh_client.v1 import pool_pb2

REOPEN_PAUSE_MS = 200
REOPEN_PAUSE_CAP_MS = 5_000
# Never renew in a tight loop, whatever interval the server suggests.
MIN_INTERVAL_MS = 50
EXPIRED_MESSAGE = "no renewal was answered before the lease's expiry"


def now_ms() -> float:
    return time.monotonic() * 1000


@dataclass
class Step:
    """What the stream driver must do now."""

    # Open a stream (the previous one is over); `send` then holds every lease.
    open: bool = False
    # Half-close the stream: no lease is left.
    close: bool = False
    # The leases to renew now.
    send: list[Lease] = field(default_factory=list)
    # When to step again unless something happens first; None: only then.
    wake_at_ms: Optional[float] = None


@dataclass
class Stream:
    """One KeepAlive stream as its reader and its request iterator both see it."""

    ended: bool = False
    # The request iterator ended because no lease was left: the stream's end is no failure.
    half_closed: bool = False


@dataclass
class _Held:
    lease: Lease
    deadline_ms: float
    interval_ms: float
    due_ms: float


def _interval(ttl_ms: float, renew_interval_ms: float) -> float:
    return max(renew_interval_ms if renew_interval_ms > 0 else ttl_ms / 3, MIN_INTERVAL_MS)


class Renewals:
    """The leases a client holds and when each is renewed.

    A lease is first renewed at its renew interval (never when its scope starts), so a lease shorter
    than that costs no stream at all. The stream is opened when a renewal falls due and closed when no
    lease is left; opening it renews every lease at once, because the server pushes revocations only
    for the leases a stream renewed. A lease ends only on a "gone" answer or at its local deadline: a
    failed stream (whatever its status) is reopened after a pause that doubles while no renewal is
    answered.
    """

    def __init__(self, on_end: Callable[[Lease, str, str], None]) -> None:
        self._held: dict[str, _Held] = {}
        self._on_end = on_end
        self.stream = "closed"
        self._reopen_at_ms = 0.0
        self._breaks = 0
        self._wake_at_ms: Optional[float] = None

    def __len__(self) -> int:
        return len(self._held)

    def leases(self) -> list[Lease]:
        return [held.lease for held in self._held.values()]

    def get(self, lease_id: str) -> Optional[Lease]:
        held = self._held.get(lease_id)
        return held.lease if held else None

    def hold(self, lease: Lease, ttl_ms: float, renew_interval_ms: float, now_ms: float) -> bool:
        """A lease joins; True when the driver must step now (its next wake-up is later than this lease's first renewal)."""
        interval = _interval(ttl_ms, renew_interval_ms)
        due = now_ms + interval
        self._held[lease.lease_id] = _Held(lease, now_ms + ttl_ms, interval, due)
        if self._wake_at_ms is None or due < self._wake_at_ms:
            # The driver steps by then, even if this lease is gone before: the leases that follow need not wake it.
            self._wake_at_ms = due
            return True
        return False

    def release(self, lease_id: str) -> bool:
        """A lease leaves (its scope ended); True when the driver must step now to close the stream."""
        if self._held.pop(lease_id, None) is None:
            return False
        return not self._held and self.stream != "closed"

    def renewed(self, lease_id: str, ttl_ms: float, renew_interval_ms: float, now_ms: float) -> None:
        held = self._held.get(lease_id)
        if held is None:
            return
        self._breaks = 0
        held.deadline_ms = now_ms + ttl_ms
        held.interval_ms = _interval(ttl_ms, renew_interval_ms)
        held.due_ms = now_ms + held.interval_ms

    def gone(self, lease_id: str, reason: str, message: str = "") -> None:
        """The server says the lease is over (an ErrorReason name such as "LEASE_REVOKED")."""
        self._end(lease_id, reason, message)

    def answer(self, response: pool_pb2.KeepAliveResponse, now_ms: float) -> bool:
        """Applies one KeepAlive answer to its lease; True when it ended the lease."""
        lease = self.get(response.lease_id)
        if lease is None:
            return False
        if response.HasField("renewed"):
            r = response.renewed
            lease._renewed(r.expires_at, r.ttl, r.renew_interval)
            self.renewed(lease.lease_id, r.ttl.ToMilliseconds(), lease.renew_interval_ms, now_ms)
            return False
        if response.HasField("gone"):
            self.gone(lease.lease_id, reason_name(response.gone.reason), response.gone.message)
            return True
        return False

    def broken(self, now_ms: float) -> None:
        """The stream ended or failed while it was needed."""
        if self.stream != "open":
            return
        self.stream = "broken"
        self._reopen_at_ms = now_ms + min(REOPEN_PAUSE_MS * 2 ** min(self._breaks, 16), REOPEN_PAUSE_CAP_MS)
        self._breaks += 1

    def step(self, now_ms: float) -> Step:
        out = Step()
        for lease_id in [i for i, h in self._held.items() if now_ms >= h.deadline_ms]:
            self._end(lease_id, "LEASE_EXPIRED", EXPIRED_MESSAGE)
        if not self._held:
            out.close = self.stream == "open"
            self.stream = "closed"
            # A wake-up still ahead stays: a lease joining with a later first renewal then wakes nobody.
            if self._wake_at_ms is not None and self._wake_at_ms <= now_ms:
                self._wake_at_ms = None
            out.wake_at_ms = self._wake_at_ms
            return out
        if self.stream == "broken" and now_ms >= self._reopen_at_ms:
            out.open = True
        if self.stream == "closed" and any(h.due_ms <= now_ms for h in self._held.values()):
            out.open = True
        if out.open:
            self.stream = "open"
        wake = self._reopen_at_ms if self.stream == "broken" else float("inf")
        for held in self._held.values():
            if self.stream == "open" and (out.open or held.due_ms <= now_ms):
                out.send.append(held.lease)
                held.due_ms = now_ms + held.interval_ms
            wake = min(wake, held.deadline_ms, held.due_ms if self.stream != "broken" else wake)
        self._wake_at_ms = out.wake_at_ms = wake
        return out

    def _end(self, lease_id: str, reason: str, message: str) -> None:
        held = self._held.pop(lease_id, None)
        if held is not None:
            self._on_end(held.lease, reason, message)
