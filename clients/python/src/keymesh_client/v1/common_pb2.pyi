import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_POOL_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_LEASE_UNKNOWN: _ClassVar[ErrorReason]
    ERROR_REASON_LEASE_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_LEASE_RELEASED: _ClassVar[ErrorReason]
    ERROR_REASON_LEASE_REVOKED: _ClassVar[ErrorReason]
    ERROR_REASON_LEASE_ID_MALFORMED: _ClassVar[ErrorReason]
    ERROR_REASON_POOL_EMPTY: _ClassVar[ErrorReason]
    ERROR_REASON_NO_KEY_AVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_ARGUMENT: _ClassVar[ErrorReason]
    ERROR_REASON_POOL_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_POOL_HAS_LEASES: _ClassVar[ErrorReason]
    ERROR_REASON_DATABASE_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_MESSAGE_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_SHUTTING_DOWN: _ClassVar[ErrorReason]
    ERROR_REASON_MALFORMED_MESSAGE: _ClassVar[ErrorReason]
    ERROR_REASON_POOL_NOT_SERVED: _ClassVar[ErrorReason]
    ERROR_REASON_OWNER_UNREACHABLE: _ClassVar[ErrorReason]
    ERROR_REASON_OWNERSHIP_LOST: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_POOL_NOT_FOUND: ErrorReason
ERROR_REASON_KEY_NOT_FOUND: ErrorReason
ERROR_REASON_LEASE_UNKNOWN: ErrorReason
ERROR_REASON_LEASE_EXPIRED: ErrorReason
ERROR_REASON_LEASE_RELEASED: ErrorReason
ERROR_REASON_LEASE_REVOKED: ErrorReason
ERROR_REASON_LEASE_ID_MALFORMED: ErrorReason
ERROR_REASON_POOL_EMPTY: ErrorReason
ERROR_REASON_NO_KEY_AVAILABLE: ErrorReason
ERROR_REASON_INVALID_ARGUMENT: ErrorReason
ERROR_REASON_POOL_EXISTS: ErrorReason
ERROR_REASON_KEY_EXISTS: ErrorReason
ERROR_REASON_POOL_HAS_LEASES: ErrorReason
ERROR_REASON_DATABASE_UNAVAILABLE: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_PERMISSION_DENIED: ErrorReason
ERROR_REASON_MESSAGE_TOO_LARGE: ErrorReason
ERROR_REASON_SHUTTING_DOWN: ErrorReason
ERROR_REASON_MALFORMED_MESSAGE: ErrorReason
ERROR_REASON_POOL_NOT_SERVED: ErrorReason
ERROR_REASON_OWNER_UNREACHABLE: ErrorReason
ERROR_REASON_OWNERSHIP_LOST: ErrorReason

class ErrorDetail(_message.Message):
    __slots__ = ("reason", "field", "retry_after")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    reason: ErrorReason
    field: str
    retry_after: _duration_pb2.Duration
    def __init__(self, reason: _Optional[_Union[ErrorReason, str]] = ..., field: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("requests_remaining", "requests_limit", "requests_reset", "tokens_remaining", "tokens_limit", "tokens_reset", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUESTS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_RESET_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_RESET_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    requests_remaining: int
    requests_limit: int
    requests_reset: _duration_pb2.Duration
    tokens_remaining: int
    tokens_limit: int
    tokens_reset: _duration_pb2.Duration
    headers: _containers.ScalarMap[str, str]
    def __init__(self, requests_remaining: _Optional[int] = ..., requests_limit: _Optional[int] = ..., requests_reset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., tokens_remaining: _Optional[int] = ..., tokens_limit: _Optional[int] = ..., tokens_reset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...
