"""Decisions shared by the sync and asyncio retry helpers (call_with_retry)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional

import grpc

from keymesh_client.classify import Outcome, OutcomeKind
from keymesh_client.errors import KeyMeshError, ProviderError

RETRYABLE = frozenset(
    {OutcomeKind.RATE_LIMITED, OutcomeKind.TRANSIENT, OutcomeKind.OVERLOADED, OutcomeKind.AUTH, OutcomeKind.QUOTA_EXHAUSTED}
)


def full_jitter(base_s: float, cap_s: float, attempt: int, rand: Callable[[], float] = random.random) -> float:
    """A random pause in [0, min(cap, base * 2**attempt)) ("full jitter")."""
    return rand() * min(cap_s, base_s * (2 ** min(attempt, 30)))


@dataclass
class RetryState:
    """What one call_with_retry has learnt so far."""

    deadline: float
    base_exclude: tuple[str, ...]
    exclude: list[str] = field(default_factory=list)
    # The last rate-limited key cools down past the budget: waiting for it is pointless.
    past_budget: bool = False
    last_error: Optional[BaseException] = None
    last_outcome: Optional[Outcome] = None

    def __post_init__(self) -> None:
        self.exclude = list(self.base_exclude)

    @property
    def moved_away(self) -> bool:
        return len(self.exclude) > len(self.base_exclude)

    def after_failure(self, key_id: str, outcome: Outcome, error: Optional[BaseException], now: float) -> bool:
        """Record a failed attempt; True if it is worth another one."""
        self.last_outcome, self.last_error = outcome, error
        if outcome.kind not in RETRYABLE:
            return False
        # Overload is provider-wide: another key would not help.
        if outcome.kind is not OutcomeKind.OVERLOADED and key_id not in self.exclude:
            self.exclude.append(key_id)
        self.past_budget = (
            outcome.kind is OutcomeKind.RATE_LIMITED
            and outcome.retry_after_ms is not None
            and now + outcome.retry_after_ms / 1000 > self.deadline
        )
        return True

    def after_acquire_error(self, error: KeyMeshError) -> bool:
        """Record a failed Acquire; True if it is worth another one."""
        if self.last_outcome is not None and error.reason == "NO_KEY_AVAILABLE":
            return False
        if error.code is grpc.StatusCode.UNAVAILABLE:
            self.last_error = error
            return True
        return False

    def final_error(self, acquire_error: Optional[KeyMeshError] = None) -> BaseException:
        """What to raise on giving up: a fresh Acquire failure, else the last failure seen."""
        nothing_left = acquire_error is not None and acquire_error.reason == "NO_KEY_AVAILABLE"
        if acquire_error is not None and not (nothing_left and self.last_outcome is not None):
            return acquire_error
        if self.last_error is not None:
            return self.last_error
        assert self.last_outcome is not None
        return ProviderError(self.last_outcome)

    def pause(self, attempt: int, base_s: float, cap_s: float, now: float) -> Optional[float]:
        """The pause before the next attempt, or None when it would end past the budget."""
        delay = full_jitter(base_s, cap_s, attempt)
        if self.last_outcome is not None and self.last_outcome.kind is OutcomeKind.OVERLOADED:
            delay = max(delay, (self.last_outcome.retry_after_ms or 0) / 1000)
        return None if now + delay > self.deadline else delay

    def acquire_wait(self, wait_timeout: Optional[float], now: float) -> float:
        left = max(0.0, self.deadline - now)
        return left if wait_timeout is None else min(wait_timeout, left)
