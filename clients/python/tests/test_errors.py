"""KeyMeshError decodes the keymesh.v1.ErrorDetail in grpc-status-details-bin."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import status_pb2

from keymesh_client import KeyMeshError
from keymesh_client.v1 import common_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers


def status_trailer(*details: object) -> tuple:
    packed = []
    for detail in details:
        any_detail = AnyProto()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(code=8, message="no key", details=packed)
    return (("content-type", "application/grpc"), ("grpc-status-details-bin", status.SerializeToString()))


def test_reason_field_and_retry_after_are_decoded() -> None:
    detail = common_pb2.ErrorDetail(
        reason=common_pb2.ERROR_REASON_NO_KEY_AVAILABLE, field="", retry_after=Duration(seconds=2, nanos=500_000_000)
    )
    error = KeyMeshError.from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "no key", status_trailer(detail)))
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "NO_KEY_AVAILABLE"
    assert error.retry_after == timedelta(seconds=2.5)
    assert str(error) == "RESOURCE_EXHAUSTED NO_KEY_AVAILABLE: no key"


def test_invalid_argument_names_the_field() -> None:
    detail = common_pb2.ErrorDetail(reason=common_pb2.ERROR_REASON_INVALID_ARGUMENT, field="lease_ttl")
    error = KeyMeshError.from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad ttl", status_trailer(detail)))
    assert (error.reason, error.field, error.retry_after) == ("INVALID_ARGUMENT", "lease_ttl", None)


def test_the_keymesh_detail_is_found_among_others() -> None:
    other = status_pb2.Status(code=1)
    detail = common_pb2.ErrorDetail(reason=common_pb2.ERROR_REASON_LEASE_EXPIRED)
    error = KeyMeshError.from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", status_trailer(other, detail)))
    assert error.reason == "LEASE_EXPIRED" and error.lease_ended


def test_without_or_with_a_broken_detail_the_reason_is_unspecified() -> None:
    plain = KeyMeshError.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert (plain.reason, str(plain)) == ("UNSPECIFIED", "UNAVAILABLE: connection refused")
    broken = KeyMeshError.from_rpc_error(
        FakeRpcError(grpc.StatusCode.INTERNAL, "x", (("grpc-status-details-bin", b"\xff\xff\xff"),))
    )
    assert broken.reason == "UNSPECIFIED" and not broken.lease_ended
