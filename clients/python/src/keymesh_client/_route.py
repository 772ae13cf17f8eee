"""Which endpoint each call goes to, pinned by test/vectors/failover.json.

Plain bookkeeping shared by the sync and asyncio clients: no I/O, no clock. A client has several
endpoints (replicas); a call for a pool goes to that pool's owner when an answer named it (the
`keymesh-owner` response header), else to the endpoint that answered last. UNAVAILABLE moves the
call at once to the next endpoint not yet tried; once every endpoint has failed, it pauses (full
jitter, growing per pause) and starts another round.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from typing import Callable, Optional, Sequence, Union

OWNER_HEADER = "keymesh-owner"
BACKOFF_BASE_MS = 100
BACKOFF_CAP_MS = 5_000


def endpoints_of(target: Union[str, Sequence[str]]) -> list[str]:
    """The endpoints named by `target`: a list of host:port, or one host:port whose name resolves to
    several addresses (each of them, in the resolver's order; a name with one address stays a name)."""
    if not isinstance(target, str):
        listed = [t.strip() for t in target if t.strip()]
        if not listed:
            raise ValueError("no KeyMesh endpoint given")
        return list(dict.fromkeys(listed))
    target = target.strip()
    host, port = _split(target)
    if _is_ip(host):
        return [target]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return [target]
    addresses = list(dict.fromkeys(_join(info[4][0], port) for info in infos))
    return addresses if len(addresses) > 1 else [target]


def _split(target: str) -> tuple[str, str]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, rest.lstrip(":")
    host, sep, port = target.rpartition(":")
    if not sep:
        raise ValueError(f"a KeyMesh endpoint is host:port, got {target!r}")
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _join(address: str, port: str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def host_of(target: str) -> str:
    return _split(target)[0]


class Route:
    """A client's endpoints, the one that answered last, and each pool's owner."""

    def __init__(self, endpoints: Sequence[str], rand: Callable[[], float] = random.random) -> None:
        self.endpoints = list(endpoints)
        self.current = 0
        self.owners: dict[str, str] = {}
        self.rand = rand

    def first(self, pool: Optional[str]) -> str:
        if pool is not None:
            owner = self.owners.get(pool)
            if owner is not None:
                return owner
        return self.endpoints[self.current]

    def after(self, addr: str) -> str:
        """The endpoint after `addr` in the list; for an address outside it (an owner), the current one."""
        try:
            i = self.endpoints.index(addr)
        except ValueError:
            return self.endpoints[self.current]
        return self.endpoints[(i + 1) % len(self.endpoints)]

    def answered(self, addr: str, pool: Optional[str], owner: Optional[str]) -> None:
        try:
            self.current = self.endpoints.index(addr)
        except ValueError:
            pass
        if pool is not None and owner:
            self.owners[pool] = owner

    def stream_ended(self, addr: str) -> None:
        """The KeepAlive stream on `addr` ended unasked (whatever its status): the next opens on the next endpoint."""
        if self.endpoints[self.current] == addr:
            self.current = (self.current + 1) % len(self.endpoints)


class Attempts:
    """One call's attempts: where the next goes, and the pause before it."""

    __slots__ = ("route", "pool", "addr", "_tried", "_pauses")

    def __init__(self, route: Route, pool: Optional[str]) -> None:
        self.route = route
        self.pool = pool
        self.addr = route.first(pool)
        self._tried: set[str] = set()
        self._pauses = 0

    def answered(self, owner: Optional[str]) -> None:
        self.route.answered(self.addr, self.pool, owner)

    def unavailable(self) -> float:
        """The attempt at `addr` failed UNAVAILABLE: moves `addr` on; the pause before the next attempt, in ms."""
        route = self.route
        if self.pool is not None and route.owners.get(self.pool) == self.addr:
            route.owners.pop(self.pool, None)
        self._tried.add(self.addr)
        self.addr = route.after(self.addr)
        # The endpoints are tried in a rotation: meeting a tried one again means each was tried.
        if self.addr not in self._tried:
            return 0.0
        self._tried.clear()
        pause = route.rand() * min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** min(self._pauses, 30))
        self._pauses += 1
        return pause
