import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from keymesh_client.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_AUTH: _ClassVar[FailureReason]
    FAILURE_REASON_QUOTA_EXHAUSTED: _ClassVar[FailureReason]
    FAILURE_REASON_TRANSIENT: _ClassVar[FailureReason]
    FAILURE_REASON_OVERLOADED: _ClassVar[FailureReason]
    FAILURE_REASON_CLIENT_ERROR: _ClassVar[FailureReason]
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_AUTH: FailureReason
FAILURE_REASON_QUOTA_EXHAUSTED: FailureReason
FAILURE_REASON_TRANSIENT: FailureReason
FAILURE_REASON_OVERLOADED: FailureReason
FAILURE_REASON_CLIENT_ERROR: FailureReason

class AcquireRequest(_message.Message):
    __slots__ = ("pool", "wait_timeout", "lease_ttl", "holder", "estimated_tokens", "exclude_key_ids", "affinity")
    POOL_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    pool: str
    wait_timeout: _duration_pb2.Duration
    lease_ttl: _duration_pb2.Duration
    holder: str
    estimated_tokens: int
    exclude_key_ids: _containers.RepeatedScalarFieldContainer[str]
    affinity: str
    def __init__(self, pool: _Optional[str] = ..., wait_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., holder: _Optional[str] = ..., estimated_tokens: _Optional[int] = ..., exclude_key_ids: _Optional[_Iterable[str]] = ..., affinity: _Optional[str] = ...) -> None: ...

class AcquireResponse(_message.Message):
    __slots__ = ("lease_id", "key", "key_id", "key_label", "key_metadata", "expires_at", "ttl", "renew_interval", "pool")
    class KeyMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_LABEL_FIELD_NUMBER: _ClassVar[int]
    KEY_METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RENEW_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    key: str
    key_id: str
    key_label: str
    key_metadata: _containers.ScalarMap[str, str]
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    renew_interval: _duration_pb2.Duration
    pool: str
    def __init__(self, lease_id: _Optional[str] = ..., key: _Optional[str] = ..., key_id: _Optional[str] = ..., key_label: _Optional[str] = ..., key_metadata: _Optional[_Mapping[str, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., renew_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., pool: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id", "latency", "usage", "rate_limit")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    latency: _duration_pb2.Duration
    usage: _common_pb2.Usage
    rate_limit: _common_pb2.RateLimit
    def __init__(self, lease_id: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., rate_limit: _Optional[_Union[_common_pb2.RateLimit, _Mapping]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MarkFailedRequest(_message.Message):
    __slots__ = ("lease_id", "reason", "http_status", "message", "latency")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    reason: FailureReason
    http_status: int
    message: str
    latency: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[_Union[FailureReason, str]] = ..., http_status: _Optional[int] = ..., message: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class MarkFailedResponse(_message.Message):
    __slots__ = ("classified_as",)
    CLASSIFIED_AS_FIELD_NUMBER: _ClassVar[int]
    classified_as: FailureReason
    def __init__(self, classified_as: _Optional[_Union[FailureReason, str]] = ...) -> None: ...

class MarkRateLimitedRequest(_message.Message):
    __slots__ = ("lease_id", "retry_after", "rate_limit")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    retry_after: _duration_pb2.Duration
    rate_limit: _common_pb2.RateLimit
    def __init__(self, lease_id: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rate_limit: _Optional[_Union[_common_pb2.RateLimit, _Mapping]] = ...) -> None: ...

class MarkRateLimitedResponse(_message.Message):
    __slots__ = ("cooldown_until",)
    COOLDOWN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    cooldown_until: _timestamp_pb2.Timestamp
    def __init__(self, cooldown_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RenewLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "ttl")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RenewLeaseResponse(_message.Message):
    __slots__ = ("lease_id", "expires_at", "ttl", "renew_interval")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RENEW_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    renew_interval: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., renew_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class KeepAliveRequest(_message.Message):
    __slots__ = ("lease_id", "ttl")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ("lease_id", "renewed", "gone")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    renewed: LeaseRenewed
    gone: LeaseGone
    def __init__(self, lease_id: _Optional[str] = ..., renewed: _Optional[_Union[LeaseRenewed, _Mapping]] = ..., gone: _Optional[_Union[LeaseGone, _Mapping]] = ...) -> None: ...

class LeaseRenewed(_message.Message):
    __slots__ = ("expires_at", "ttl", "renew_interval")
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RENEW_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    renew_interval: _duration_pb2.Duration
    def __init__(self, expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., renew_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LeaseGone(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: _common_pb2.ErrorReason
    message: str
    def __init__(self, reason: _Optional[_Union[_common_pb2.ErrorReason, str]] = ..., message: _Optional[str] = ...) -> None: ...
