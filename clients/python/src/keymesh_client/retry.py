"""The retry loop shared by Client.call_with_retry and AsyncClient.call_with_retry (test/vectors/retry.json).

The loop is a generator of steps — Acquire, Run, Pause — that the sync and asyncio clients (and the
vector runner, with a fake clock) carry out and answer, so both clients decide alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional, Union

import grpc

from keymesh_client.classify import Outcome, OutcomeKind
from keymesh_client.errors import KeyMeshError, ProviderError

RETRYABLE = frozenset(
    {OutcomeKind.RATE_LIMITED, OutcomeKind.TRANSIENT, OutcomeKind.OVERLOADED, OutcomeKind.AUTH, OutcomeKind.QUOTA_EXHAUSTED}
)


def full_jitter(base_s: float, cap_s: float, attempt: int, rand: Callable[[], float] = random.random) -> float:
    """A random pause in [0, min(cap, base * 2**attempt)) ("full jitter")."""
    return rand() * min(cap_s, base_s * (2 ** min(attempt, 30)))


@dataclass(frozen=True)
class RetryPolicy:
    budget_s: float
    wait_s: float
    exclude: tuple[str, ...]
    backoff_base_s: float
    backoff_cap_s: float


@dataclass(frozen=True)
class Acquire:
    """Borrow a key not in `exclude`, waiting up to `wait_s`; answer with the Lease or the KeyMeshError."""

    exclude: tuple[str, ...]
    wait_s: float


@dataclass(frozen=True)
class Run:
    """Call the function under `lease` and end the lease; answer with (outcome, failure or None, value)."""

    lease: Any


@dataclass(frozen=True)
class Pause:
    seconds: float


RetryStep = Union[Acquire, Run, Pause]


def retry_loop(
    policy: RetryPolicy, clock: Callable[[], float], rand: Callable[[], float] = random.random
) -> Generator[RetryStep, Any, Any]:
    """Yields the steps of one call_with_retry and returns the function's value, or raises the last failure.

    A rate limit, an auth or quota failure or a transient error moves at once, with no pause, to
    another key (exclude_key_ids). When no other key is eligible, and after an overload
    (provider-wide, so the same key will do), it pauses — full jitter, and at least the provider's
    retry-after after an overload or a transient failure — then waits for any key: the server keeps
    a rate-limited key cooling until its retry-after, so a rate limit whose retry-after ends past the
    budget gives up at once. Client errors are not retried.
    """
    deadline = clock() + policy.budget_s
    exclude = list(policy.exclude)
    last: Optional[BaseException] = None
    pauses = 0

    def wait_for_any() -> Acquire:
        return Acquire(policy.exclude, max(0.0, min(policy.wait_s, deadline - clock())))

    got = yield wait_for_any()
    while True:
        floor = 0.0
        if isinstance(got, KeyMeshError):
            if last is not None and got.reason == "NO_KEY_AVAILABLE":
                raise last
            if got.code is not grpc.StatusCode.UNAVAILABLE:
                raise got
            last = got
        else:
            lease = got
            outcome, failure, value = yield Run(lease)
            if failure is None:
                return value
            last = failure
            if outcome.kind not in RETRYABLE:
                raise failure
            if outcome.kind is not OutcomeKind.OVERLOADED:
                if lease.key_id not in exclude:
                    exclude.append(lease.key_id)
                # Another key needs no pause.
                got = yield Acquire(tuple(exclude), 0.0)
                if not isinstance(got, KeyMeshError) or got.reason != "NO_KEY_AVAILABLE":
                    continue
                if outcome.kind is OutcomeKind.RATE_LIMITED and outcome.retry_after_ms is not None:
                    if clock() + outcome.retry_after_ms / 1000 > deadline:
                        raise failure
            # The server holds a rate-limited key back itself; after these the provider's word is the floor.
            if outcome.kind in (OutcomeKind.OVERLOADED, OutcomeKind.TRANSIENT):
                floor = (outcome.retry_after_ms or 0) / 1000
        pause = max(full_jitter(policy.backoff_base_s, policy.backoff_cap_s, pauses, rand), floor)
        if clock() + pause > deadline:
            raise last
        yield Pause(pause)
        pauses += 1
        got = yield wait_for_any()


def failure_of(outcome: Outcome, error: Optional[BaseException]) -> Optional[BaseException]:
    """What a finished scope failed with: its exception, else ProviderError for a reported failure, else None."""
    if error is not None:
        return error
    return None if outcome.kind is OutcomeKind.SUCCESS else ProviderError(outcome)
