import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_ROUND_ROBIN: _ClassVar[Strategy]
    STRATEGY_LEAST_BUSY: _ClassVar[Strategy]
    STRATEGY_WEIGHTED: _ClassVar[Strategy]
    STRATEGY_LEAST_USED: _ClassVar[Strategy]
    STRATEGY_LATENCY: _ClassVar[Strategy]

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_ENABLED: _ClassVar[KeyState]
    KEY_STATE_DISABLED: _ClassVar[KeyState]
    KEY_STATE_AUTO_DISABLED_AUTH: _ClassVar[KeyState]
    KEY_STATE_AUTO_DISABLED_QUOTA: _ClassVar[KeyState]
    KEY_STATE_DRAINING: _ClassVar[KeyState]

class CircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_STATE_UNSPECIFIED: _ClassVar[CircuitState]
    CIRCUIT_STATE_CLOSED: _ClassVar[CircuitState]
    CIRCUIT_STATE_OPEN: _ClassVar[CircuitState]
    CIRCUIT_STATE_HALF_OPEN: _ClassVar[CircuitState]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_POOL_CREATED: _ClassVar[EventType]
    EVENT_TYPE_POOL_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_POOL_DELETED: _ClassVar[EventType]
    EVENT_TYPE_KEY_ADDED: _ClassVar[EventType]
    EVENT_TYPE_KEY_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_KEY_REMOVED: _ClassVar[EventType]
    EVENT_TYPE_KEY_ENABLED: _ClassVar[EventType]
    EVENT_TYPE_KEY_DISABLED: _ClassVar[EventType]
    EVENT_TYPE_KEY_AUTO_DISABLED: _ClassVar[EventType]
    EVENT_TYPE_COOLDOWN_STARTED: _ClassVar[EventType]
    EVENT_TYPE_COOLDOWN_ENDED: _ClassVar[EventType]
    EVENT_TYPE_CIRCUIT_OPENED: _ClassVar[EventType]
    EVENT_TYPE_CIRCUIT_HALF_OPENED: _ClassVar[EventType]
    EVENT_TYPE_CIRCUIT_CLOSED: _ClassVar[EventType]
    EVENT_TYPE_LEASE_EXPIRED: _ClassVar[EventType]
    EVENT_TYPE_LEASE_REVOKED: _ClassVar[EventType]
    EVENT_TYPE_POOL_EXHAUSTED: _ClassVar[EventType]
    EVENT_TYPE_LEASE_GRANTED: _ClassVar[EventType]
    EVENT_TYPE_LEASE_ENDED: _ClassVar[EventType]
    EVENT_TYPE_LAGGED: _ClassVar[EventType]
    EVENT_TYPE_ADMIN_CHANGE: _ClassVar[EventType]
    EVENT_TYPE_TIER_FALLBACK: _ClassVar[EventType]
    EVENT_TYPE_TIER_RESTORED: _ClassVar[EventType]
    EVENT_TYPE_POOL_CLAIMED: _ClassVar[EventType]
    EVENT_TYPE_POOL_HANDED_OVER: _ClassVar[EventType]
    EVENT_TYPE_POOL_LOST: _ClassVar[EventType]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_ROUND_ROBIN: Strategy
STRATEGY_LEAST_BUSY: Strategy
STRATEGY_WEIGHTED: Strategy
STRATEGY_LEAST_USED: Strategy
STRATEGY_LATENCY: Strategy
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_ENABLED: KeyState
KEY_STATE_DISABLED: KeyState
KEY_STATE_AUTO_DISABLED_AUTH: KeyState
KEY_STATE_AUTO_DISABLED_QUOTA: KeyState
KEY_STATE_DRAINING: KeyState
CIRCUIT_STATE_UNSPECIFIED: CircuitState
CIRCUIT_STATE_CLOSED: CircuitState
CIRCUIT_STATE_OPEN: CircuitState
CIRCUIT_STATE_HALF_OPEN: CircuitState
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_POOL_CREATED: EventType
EVENT_TYPE_POOL_UPDATED: EventType
EVENT_TYPE_POOL_DELETED: EventType
EVENT_TYPE_KEY_ADDED: EventType
EVENT_TYPE_KEY_UPDATED: EventType
EVENT_TYPE_KEY_REMOVED: EventType
EVENT_TYPE_KEY_ENABLED: EventType
EVENT_TYPE_KEY_DISABLED: EventType
EVENT_TYPE_KEY_AUTO_DISABLED: EventType
EVENT_TYPE_COOLDOWN_STARTED: EventType
EVENT_TYPE_COOLDOWN_ENDED: EventType
EVENT_TYPE_CIRCUIT_OPENED: EventType
EVENT_TYPE_CIRCUIT_HALF_OPENED: EventType
EVENT_TYPE_CIRCUIT_CLOSED: EventType
EVENT_TYPE_LEASE_EXPIRED: EventType
EVENT_TYPE_LEASE_REVOKED: EventType
EVENT_TYPE_POOL_EXHAUSTED: EventType
EVENT_TYPE_LEASE_GRANTED: EventType
EVENT_TYPE_LEASE_ENDED: EventType
EVENT_TYPE_LAGGED: EventType
EVENT_TYPE_ADMIN_CHANGE: EventType
EVENT_TYPE_TIER_FALLBACK: EventType
EVENT_TYPE_TIER_RESTORED: EventType
EVENT_TYPE_POOL_CLAIMED: EventType
EVENT_TYPE_POOL_HANDED_OVER: EventType
EVENT_TYPE_POOL_LOST: EventType

class CircuitBreakerConfig(_message.Message):
    __slots__ = ("failure_threshold", "open_duration", "max_open_duration", "half_open_probes")
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    OPEN_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_OPEN_DURATION_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_PROBES_FIELD_NUMBER: _ClassVar[int]
    failure_threshold: int
    open_duration: _duration_pb2.Duration
    max_open_duration: _duration_pb2.Duration
    half_open_probes: int
    def __init__(self, failure_threshold: _Optional[int] = ..., open_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_open_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., half_open_probes: _Optional[int] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("name", "strategy", "min_ttl", "max_ttl", "default_ttl", "default_cooldown", "max_cooldown", "circuit_breaker", "description", "key_count", "create_time", "update_time", "quota_groups", "default_estimated_tokens")
    class QuotaGroupsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Limits
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MIN_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_COOLDOWN_FIELD_NUMBER: _ClassVar[int]
    MAX_COOLDOWN_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    QUOTA_GROUPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ESTIMATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    strategy: Strategy
    min_ttl: _duration_pb2.Duration
    max_ttl: _duration_pb2.Duration
    default_ttl: _duration_pb2.Duration
    default_cooldown: _duration_pb2.Duration
    max_cooldown: _duration_pb2.Duration
    circuit_breaker: CircuitBreakerConfig
    description: str
    key_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    quota_groups: _containers.MessageMap[str, Limits]
    default_estimated_tokens: int
    def __init__(self, name: _Optional[str] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., min_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_cooldown: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_cooldown: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., circuit_breaker: _Optional[_Union[CircuitBreakerConfig, _Mapping]] = ..., description: _Optional[str] = ..., key_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., quota_groups: _Optional[_Mapping[str, Limits]] = ..., default_estimated_tokens: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("requests_per_minute", "tokens_per_minute", "requests_per_day")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    tokens_per_minute: int
    requests_per_day: int
    def __init__(self, requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., requests_per_day: _Optional[int] = ...) -> None: ...

class UsageTotals(_message.Message):
    __slots__ = ("requests", "input_tokens", "output_tokens", "successes", "rate_limited", "failures", "unreported")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    UNREPORTED_FIELD_NUMBER: _ClassVar[int]
    requests: int
    input_tokens: int
    output_tokens: int
    successes: int
    rate_limited: int
    failures: int
    unreported: int
    def __init__(self, requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., successes: _Optional[int] = ..., rate_limited: _Optional[int] = ..., failures: _Optional[int] = ..., unreported: _Optional[int] = ...) -> None: ...

class BudgetRemaining(_message.Message):
    __slots__ = ("requests_per_minute", "tokens_per_minute", "requests_per_day")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    tokens_per_minute: int
    requests_per_day: int
    def __init__(self, requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., requests_per_day: _Optional[int] = ...) -> None: ...

class QuotaGroupStats(_message.Message):
    __slots__ = ("name", "limits", "remaining", "usage", "keys")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: Limits
    remaining: BudgetRemaining
    usage: UsageTotals
    keys: int
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., remaining: _Optional[_Union[BudgetRemaining, _Mapping]] = ..., usage: _Optional[_Union[UsageTotals, _Mapping]] = ..., keys: _Optional[int] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("id", "pool", "label", "secret_hint", "weight", "max_concurrency", "quota_group", "metadata", "state", "state_reason", "create_time", "update_time", "limits", "priority", "usage")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SECRET_HINT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    QUOTA_GROUP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    pool: str
    label: str
    secret_hint: str
    weight: int
    max_concurrency: int
    quota_group: str
    metadata: _containers.ScalarMap[str, str]
    state: KeyState
    state_reason: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    limits: Limits
    priority: int
    usage: UsageTotals
    def __init__(self, id: _Optional[str] = ..., pool: _Optional[str] = ..., label: _Optional[str] = ..., secret_hint: _Optional[str] = ..., weight: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., quota_group: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[KeyState, str]] = ..., state_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., priority: _Optional[int] = ..., usage: _Optional[_Union[UsageTotals, _Mapping]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "pool", "key_id", "holder", "acquire_time", "expires_at", "ttl")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    pool: str
    key_id: str
    holder: str
    acquire_time: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., pool: _Optional[str] = ..., key_id: _Optional[str] = ..., holder: _Optional[str] = ..., acquire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ProviderBudget(_message.Message):
    __slots__ = ("requests_remaining", "requests_limit", "requests_reset_at", "tokens_remaining", "tokens_limit", "tokens_reset_at")
    REQUESTS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_RESET_AT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_RESET_AT_FIELD_NUMBER: _ClassVar[int]
    requests_remaining: int
    requests_limit: int
    requests_reset_at: _timestamp_pb2.Timestamp
    tokens_remaining: int
    tokens_limit: int
    tokens_reset_at: _timestamp_pb2.Timestamp
    def __init__(self, requests_remaining: _Optional[int] = ..., requests_limit: _Optional[int] = ..., requests_reset_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tokens_remaining: _Optional[int] = ..., tokens_limit: _Optional[int] = ..., tokens_reset_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class KeyStats(_message.Message):
    __slots__ = ("key_id", "label", "state", "eligible", "active_leases", "max_concurrency", "ema_latency", "success_rate", "consecutive_failures", "circuit_state", "circuit_open_until", "cooldown_remaining", "budget", "total_leases", "recent_leases", "input_tokens", "output_tokens", "priority", "quota_group", "limits", "remaining", "reserved_tokens", "usage")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LEASES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    EMA_LATENCY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_OPEN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_REMAINING_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LEASES_FIELD_NUMBER: _ClassVar[int]
    RECENT_LEASES_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    QUOTA_GROUP_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    label: str
    state: KeyState
    eligible: bool
    active_leases: int
    max_concurrency: int
    ema_latency: _duration_pb2.Duration
    success_rate: float
    consecutive_failures: int
    circuit_state: CircuitState
    circuit_open_until: _timestamp_pb2.Timestamp
    cooldown_remaining: _duration_pb2.Duration
    budget: ProviderBudget
    total_leases: int
    recent_leases: int
    input_tokens: int
    output_tokens: int
    priority: int
    quota_group: str
    limits: Limits
    remaining: BudgetRemaining
    reserved_tokens: int
    usage: UsageTotals
    def __init__(self, key_id: _Optional[str] = ..., label: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ..., eligible: _Optional[bool] = ..., active_leases: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., ema_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., success_rate: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., circuit_state: _Optional[_Union[CircuitState, str]] = ..., circuit_open_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cooldown_remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., budget: _Optional[_Union[ProviderBudget, _Mapping]] = ..., total_leases: _Optional[int] = ..., recent_leases: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., priority: _Optional[int] = ..., quota_group: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., remaining: _Optional[_Union[BudgetRemaining, _Mapping]] = ..., reserved_tokens: _Optional[int] = ..., usage: _Optional[_Union[UsageTotals, _Mapping]] = ...) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("pool", "total_keys", "eligible_keys", "active_leases", "waiters", "keys", "usage", "quota_groups", "serving_priority", "affinities", "owner", "term")
    POOL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_KEYS_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_KEYS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LEASES_FIELD_NUMBER: _ClassVar[int]
    WAITERS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    QUOTA_GROUPS_FIELD_NUMBER: _ClassVar[int]
    SERVING_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    AFFINITIES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    pool: str
    total_keys: int
    eligible_keys: int
    active_leases: int
    waiters: int
    keys: _containers.RepeatedCompositeFieldContainer[KeyStats]
    usage: UsageTotals
    quota_groups: _containers.RepeatedCompositeFieldContainer[QuotaGroupStats]
    serving_priority: int
    affinities: int
    owner: str
    term: int
    def __init__(self, pool: _Optional[str] = ..., total_keys: _Optional[int] = ..., eligible_keys: _Optional[int] = ..., active_leases: _Optional[int] = ..., waiters: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[KeyStats, _Mapping]]] = ..., usage: _Optional[_Union[UsageTotals, _Mapping]] = ..., quota_groups: _Optional[_Iterable[_Union[QuotaGroupStats, _Mapping]]] = ..., serving_priority: _Optional[int] = ..., affinities: _Optional[int] = ..., owner: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "time", "pool", "key_id", "lease_id", "reason", "until", "admin_change", "replica", "term")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    ADMIN_CHANGE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    time: _timestamp_pb2.Timestamp
    pool: str
    key_id: str
    lease_id: str
    reason: str
    until: _timestamp_pb2.Timestamp
    admin_change: AuditEntry
    replica: str
    term: int
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pool: _Optional[str] = ..., key_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., admin_change: _Optional[_Union[AuditEntry, _Mapping]] = ..., replica: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "time", "actor", "action", "pool", "key_id", "lease_id", "before", "after", "replica", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: _timestamp_pb2.Timestamp
    actor: str
    action: str
    pool: str
    key_id: str
    lease_id: str
    before: _struct_pb2.Struct
    after: _struct_pb2.Struct
    replica: str
    reason: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., pool: _Optional[str] = ..., key_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., before: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., after: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., replica: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CreatePoolRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class CreatePoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ...) -> None: ...

class UpdatePoolRequest(_message.Message):
    __slots__ = ("pool", "update_mask")
    POOL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdatePoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeletePoolResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddKeyRequest(_message.Message):
    __slots__ = ("pool", "key", "secret")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    pool: str
    key: Key
    secret: str
    def __init__(self, pool: _Optional[str] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class AddKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("pool", "key_id")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    pool: str
    key_id: str
    def __init__(self, pool: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class GetKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("pool", "page_size", "page_token")
    POOL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pool: str
    page_size: int
    page_token: str
    def __init__(self, pool: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("key", "update_mask", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: Key
    update_mask: _field_mask_pb2.FieldMask
    secret: str
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class UpdateKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class RemoveKeyRequest(_message.Message):
    __slots__ = ("pool", "key_id", "drain")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    pool: str
    key_id: str
    drain: bool
    def __init__(self, pool: _Optional[str] = ..., key_id: _Optional[str] = ..., drain: _Optional[bool] = ...) -> None: ...

class RemoveKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnableKeyRequest(_message.Message):
    __slots__ = ("pool", "key_id")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    pool: str
    key_id: str
    def __init__(self, pool: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class EnableKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class DisableKeyRequest(_message.Message):
    __slots__ = ("pool", "key_id", "drain", "reason")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pool: str
    key_id: str
    drain: bool
    reason: str
    def __init__(self, pool: _Optional[str] = ..., key_id: _Optional[str] = ..., drain: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class DisableKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("pool", "key_id", "page_size", "page_token")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pool: str
    key_id: str
    page_size: int
    page_token: str
    def __init__(self, pool: _Optional[str] = ..., key_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases", "next_page_token")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    next_page_token: str
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeLeaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPoolStatsRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class GetPoolStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: PoolStats
    def __init__(self, stats: _Optional[_Union[PoolStats, _Mapping]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("pool", "include_lease_events")
    POOL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LEASE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    include_lease_events: bool
    def __init__(self, pool: _Optional[str] = ..., include_lease_events: _Optional[bool] = ...) -> None: ...

class ListReplicasRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Replica(_message.Message):
    __slots__ = ("id", "address", "heartbeat_age", "started_at", "pools")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    heartbeat_age: _duration_pb2.Duration
    started_at: _timestamp_pb2.Timestamp
    pools: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., heartbeat_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pools: _Optional[_Iterable[str]] = ...) -> None: ...

class ListReplicasResponse(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    def __init__(self, replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("pool", "since", "page_size", "page_token")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pool: str
    since: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, pool: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
