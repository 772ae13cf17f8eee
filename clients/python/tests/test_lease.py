"""The lease's outcome precedence and the requests that end it."""

from __future__ import annotations

import threading
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from keymesh_client import Lease, Outcome, OutcomeKind
from keymesh_client._renewal import Renewals
from keymesh_client.lease import LeaseOptions
from keymesh_client.v1 import common_pb2, pool_pb2
from sdk_errors import openai_error

SECRET = "sk-live-0123456789abcdef"


def make_lease() -> Lease:
    response = pool_pb2.AcquireResponse(
        lease_id="lk1.payload.mac",
        key=SECRET,
        key_id="k1",
        key_label="primary",
        key_metadata={"base_url": "http://127.0.0.1:9"},
        expires_at=Timestamp(seconds=1_767_225_600),
        ttl=Duration(seconds=30),
        renew_interval=Duration(seconds=10),
        pool="openai",
    )
    return Lease(response, threading.Event())


def test_the_key_never_shows_in_repr() -> None:
    lease = make_lease()
    assert SECRET not in repr(lease) and "primary" in repr(lease)
    assert lease.metadata == {"base_url": "http://127.0.0.1:9"}


def test_a_clean_exit_is_a_success_released_with_usage_and_budget() -> None:
    lease = make_lease()
    lease.report(status=200, headers={"x-ratelimit-remaining-tokens": "900"}, input_tokens=3, output_tokens=4)
    method, request = lease.final_request(lease.final_outcome(None), 0.25)
    assert method == "Release"
    assert request.latency.ToTimedelta() == timedelta(milliseconds=250)
    assert (request.usage.input_tokens, request.usage.output_tokens) == (3, 4)
    assert request.rate_limit.tokens_remaining == 900 and not request.rate_limit.HasField("requests_remaining")


def test_usage_alone_keeps_the_success() -> None:
    lease = make_lease()
    lease.report(input_tokens=1)
    assert lease.final_outcome(None).kind is OutcomeKind.SUCCESS


def test_a_reported_outcome_wins_over_the_exception() -> None:
    lease = make_lease()
    lease.report(Outcome(OutcomeKind.OVERLOADED, http_status=529))
    assert lease.final_outcome(ValueError("later")).kind is OutcomeKind.OVERLOADED


def test_an_interrupt_says_nothing_about_the_key() -> None:
    for interrupt in (KeyboardInterrupt(), SystemExit(1)):
        outcome = make_lease().final_outcome(interrupt)
        assert outcome.kind is OutcomeKind.CLIENT_ERROR


def test_a_rate_limit_ends_with_mark_rate_limited_and_its_retry_after() -> None:
    lease = make_lease()
    outcome = lease.final_outcome(openai_error(429, "rate_limit_exceeded", "slow down", {"retry-after-ms": "1500"}))
    method, request = lease.final_request(outcome, 0.1)
    assert method == "MarkRateLimited"
    assert request.retry_after.ToTimedelta() == timedelta(milliseconds=1500)


def test_a_rate_limit_without_retry_after_leaves_it_to_the_pool_default() -> None:
    lease = make_lease()
    method, request = lease.final_request(lease.final_outcome(openai_error(429)), 0.1)
    assert method == "MarkRateLimited" and not request.HasField("retry_after")


def test_a_failure_ends_with_mark_failed_without_the_key_in_the_message() -> None:
    lease = make_lease()
    outcome = lease.final_outcome(openai_error(401, "invalid_api_key", f"Incorrect API key provided: {SECRET}" + "." * 300))
    method, request = lease.final_request(outcome, 0.1)
    assert method == "MarkFailed"
    assert (request.reason, request.http_status) == (pool_pb2.FAILURE_REASON_AUTH, 401)
    assert SECRET not in request.message and "[key]" in request.message
    assert len(request.message) == 200


def test_keep_alive_answers_renew_or_end_the_lease() -> None:
    lease = make_lease()
    renewals = Renewals(lambda held, reason, message: held._gone(reason, message))
    renewals.hold(lease, 30_000, 10_000, 0)
    renewed = pool_pb2.KeepAliveResponse(
        lease_id=lease.lease_id,
        renewed=pool_pb2.LeaseRenewed(expires_at=Timestamp(seconds=1_767_225_700), ttl=Duration(seconds=60), renew_interval=Duration(seconds=20)),
    )
    assert not renewals.answer(renewed, 0)
    assert (lease.ttl, lease.renew_interval) == (timedelta(seconds=60), timedelta(seconds=20))
    assert not lease.revoked

    gone = pool_pb2.KeepAliveResponse(
        lease_id=lease.lease_id, gone=pool_pb2.LeaseGone(reason=common_pb2.ERROR_REASON_LEASE_REVOKED, message="key disabled")
    )
    assert renewals.answer(gone, 0)
    assert lease.revoked and lease.revoked_event.is_set() and len(renewals) == 0
    assert (lease.gone_reason, lease.gone_message) == ("LEASE_REVOKED", "key disabled")


def test_acquire_requests_carry_the_options_and_a_deadline_past_the_wait() -> None:
    options = LeaseOptions(wait_timeout=timedelta(seconds=2), ttl=30, holder="worker-1", estimated_tokens=500, exclude_key_ids=("k9",))
    request = options.acquire_request("openai")
    assert request.wait_timeout.ToTimedelta() == timedelta(seconds=2)
    assert request.lease_ttl.ToTimedelta() == timedelta(seconds=30)
    assert (request.holder, request.estimated_tokens, list(request.exclude_key_ids)) == ("worker-1", 500, ["k9"])
    assert options.acquire_timeout(10.0) == 12.0
    assert list(options.acquire_request("openai", exclude_key_ids=["k1", "k2"], wait_timeout=0).exclude_key_ids) == ["k1", "k2"]
    assert not LeaseOptions().acquire_request("p").HasField("lease_ttl")


def test_renewal_never_spins_and_defaults_to_a_third_of_the_ttl() -> None:
    lease = make_lease()
    lease._renewed(Timestamp(), Duration(nanos=1_000_000), Duration(nanos=1))
    assert lease.renew_interval == timedelta(milliseconds=50)
    lease._renewed(Timestamp(), Duration(seconds=30), Duration())
    assert lease.renew_interval == timedelta(seconds=10)
