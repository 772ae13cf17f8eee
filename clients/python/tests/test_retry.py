"""Backoff and the retry decisions shared by Client.call_with_retry and AsyncClient.call_with_retry."""

from __future__ import annotations

import grpc

from keymesh_client import KeyMeshError, Outcome, OutcomeKind, ProviderError
from keymesh_client.retry import RetryState, full_jitter


def test_full_jitter_is_random_below_an_exponential_ceiling() -> None:
    assert full_jitter(0.1, 5.0, 0, rand=lambda: 0.0) == 0.0
    assert full_jitter(0.1, 5.0, 0, rand=lambda: 0.5) == 0.05
    assert full_jitter(0.1, 5.0, 3, rand=lambda: 0.5) == 0.4
    assert full_jitter(0.1, 5.0, 10, rand=lambda: 0.5) == 2.5
    assert full_jitter(0.1, 5.0, 10_000, rand=lambda: 0.999) < 5.0


def state(deadline: float = 100.0) -> RetryState:
    return RetryState(deadline=deadline, base_exclude=("k-never",))


def test_a_rate_limited_key_is_excluded_from_the_next_attempt() -> None:
    s = state()
    assert s.after_failure("k1", Outcome(OutcomeKind.RATE_LIMITED, retry_after_ms=5_000), None, now=0.0)
    assert s.exclude == ["k-never", "k1"] and s.moved_away and not s.past_budget
    assert s.after_failure("k1", Outcome(OutcomeKind.TRANSIENT), None, now=1.0)
    assert s.exclude == ["k-never", "k1"]


def test_a_retry_after_past_the_deadline_is_noted() -> None:
    s = state(deadline=10.0)
    assert s.after_failure("k1", Outcome(OutcomeKind.RATE_LIMITED, retry_after_ms=60_000), None, now=0.0)
    assert s.past_budget


def test_an_overload_retries_on_the_same_keys_after_its_retry_after() -> None:
    s = state()
    assert s.after_failure("k1", Outcome(OutcomeKind.OVERLOADED, retry_after_ms=3_000), None, now=0.0)
    assert not s.moved_away
    assert s.pause(0, 0.1, 5.0, now=0.0) == 3.0


def test_a_client_error_is_not_retried() -> None:
    error = ValueError("bad request")
    s = state()
    assert not s.after_failure("k1", Outcome(OutcomeKind.CLIENT_ERROR), error, now=0.0)
    assert s.last_error is error


def test_no_pause_ends_past_the_deadline() -> None:
    s = state(deadline=10.0)
    s.after_failure("k1", Outcome(OutcomeKind.OVERLOADED, retry_after_ms=20_000), None, now=0.0)
    assert s.pause(0, 0.1, 5.0, now=0.0) is None


def test_acquire_errors() -> None:
    unavailable = KeyMeshError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    no_key = KeyMeshError(grpc.StatusCode.RESOURCE_EXHAUSTED, "no key", "NO_KEY_AVAILABLE")
    s = state()
    assert s.after_acquire_error(unavailable) and s.last_error is unavailable
    assert not s.after_acquire_error(no_key)
    assert not state().after_acquire_error(KeyMeshError(grpc.StatusCode.NOT_FOUND, "no pool", "POOL_NOT_FOUND"))


def test_the_acquire_wait_never_outlives_the_budget() -> None:
    assert state(deadline=10.0).acquire_wait(None, now=4.0) == 6.0
    assert state(deadline=10.0).acquire_wait(2.0, now=4.0) == 2.0
    assert state(deadline=10.0).acquire_wait(2.0, now=11.0) == 0.0


def test_giving_up_raises_the_most_telling_error() -> None:
    no_key = KeyMeshError(grpc.StatusCode.RESOURCE_EXHAUSTED, "no key", "NO_KEY_AVAILABLE")
    no_pool = KeyMeshError(grpc.StatusCode.NOT_FOUND, "no pool", "POOL_NOT_FOUND")
    assert state().final_error(no_key) is no_key

    provider_error = ValueError("429 from the provider")
    s = state()
    s.after_failure("k1", Outcome(OutcomeKind.RATE_LIMITED), provider_error, now=0.0)
    assert s.final_error(no_key) is provider_error
    assert s.final_error(no_pool) is no_pool
    assert s.final_error() is provider_error

    reported = state()
    reported.after_failure("k1", Outcome(OutcomeKind.TRANSIENT, http_status=503), None, now=0.0)
    error = reported.final_error()
    assert isinstance(error, ProviderError) and error.outcome.http_status == 503
