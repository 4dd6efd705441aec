import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from warden_client.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_COMPLETED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
    OUTCOME_CANCELLED: _ClassVar[Outcome]
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_COMPLETED: Outcome
OUTCOME_FAILED: Outcome
OUTCOME_CANCELLED: Outcome

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("org_id", "app_id", "user_id")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    app_id: str
    user_id: str
    def __init__(self, org_id: _Optional[str] = ..., app_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class AuthorizeRequest(_message.Message):
    __slots__ = ("request_id", "api_key", "model", "provider", "input_tokens", "max_output_tokens", "messages", "user_id", "subject", "labels", "rag_sources", "min_output_tokens")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RAG_SOURCES_FIELD_NUMBER: _ClassVar[int]
    MIN_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    api_key: str
    model: str
    provider: str
    input_tokens: int
    max_output_tokens: int
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    user_id: str
    subject: Subject
    labels: _containers.ScalarMap[str, str]
    rag_sources: _containers.RepeatedScalarFieldContainer[str]
    min_output_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., api_key: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., user_id: _Optional[str] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., rag_sources: _Optional[_Iterable[str]] = ..., min_output_tokens: _Optional[int] = ...) -> None: ...

class PolicyResult(_message.Message):
    __slots__ = ("policy_id", "scope", "policy_type", "mode", "allowed", "reason", "message")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    POLICY_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    scope: _types_pb2.Scope
    policy_type: str
    mode: _types_pb2.PolicyMode
    allowed: bool
    reason: _types_pb2.Reason
    message: str
    def __init__(self, policy_id: _Optional[str] = ..., scope: _Optional[_Union[_types_pb2.Scope, _Mapping]] = ..., policy_type: _Optional[str] = ..., mode: _Optional[_Union[_types_pb2.PolicyMode, str]] = ..., allowed: _Optional[bool] = ..., reason: _Optional[_Union[_types_pb2.Reason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class LimitStatus(_message.Message):
    __slots__ = ("policy_id", "scope", "metric", "limit", "remaining", "reset_time")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_TIME_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    scope: _types_pb2.Scope
    metric: _types_pb2.Metric
    limit: int
    remaining: int
    reset_time: _timestamp_pb2.Timestamp
    def __init__(self, policy_id: _Optional[str] = ..., scope: _Optional[_Union[_types_pb2.Scope, _Mapping]] = ..., metric: _Optional[_Union[_types_pb2.Metric, str]] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("provider", "model", "max_output_tokens", "fallbacks")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    max_output_tokens: int
    fallbacks: _containers.RepeatedCompositeFieldContainer[_types_pb2.RouteTarget]
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., max_output_tokens: _Optional[int] = ..., fallbacks: _Optional[_Iterable[_Union[_types_pb2.RouteTarget, _Mapping]]] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("org_id", "app_id", "user_id", "api_key_id")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    app_id: str
    user_id: str
    api_key_id: str
    def __init__(self, org_id: _Optional[str] = ..., app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., api_key_id: _Optional[str] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("decision", "reason", "results", "limits", "route", "retry_after", "reservation_id", "identity", "redactions", "redacted_messages")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REDACTIONS_FIELD_NUMBER: _ClassVar[int]
    REDACTED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    reason: _types_pb2.Reason
    results: _containers.RepeatedCompositeFieldContainer[PolicyResult]
    limits: _containers.RepeatedCompositeFieldContainer[LimitStatus]
    route: Route
    retry_after: _duration_pb2.Duration
    reservation_id: str
    identity: Identity
    redactions: _containers.RepeatedCompositeFieldContainer[Redaction]
    redacted_messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[_Union[_types_pb2.Reason, str]] = ..., results: _Optional[_Iterable[_Union[PolicyResult, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[LimitStatus, _Mapping]]] = ..., route: _Optional[_Union[Route, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reservation_id: _Optional[str] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ..., redactions: _Optional[_Iterable[_Union[Redaction, _Mapping]]] = ..., redacted_messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class Redaction(_message.Message):
    __slots__ = ("message_index", "start", "end", "kind", "replacement")
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENT_FIELD_NUMBER: _ClassVar[int]
    message_index: int
    start: int
    end: int
    kind: str
    replacement: str
    def __init__(self, message_index: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., kind: _Optional[str] = ..., replacement: _Optional[str] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("request_id", "api_key", "usage", "cost_micros", "model", "provider", "outcome", "latency", "reservation_id", "subject")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    api_key: str
    usage: _types_pb2.Usage
    cost_micros: int
    model: str
    provider: str
    outcome: Outcome
    latency: _duration_pb2.Duration
    reservation_id: str
    subject: Subject
    def __init__(self, request_id: _Optional[str] = ..., api_key: _Optional[str] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ..., cost_micros: _Optional[int] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reservation_id: _Optional[str] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("cost_micros", "duplicate", "cost_unknown")
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    COST_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    cost_micros: int
    duplicate: bool
    cost_unknown: bool
    def __init__(self, cost_micros: _Optional[int] = ..., duplicate: _Optional[bool] = ..., cost_unknown: _Optional[bool] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "time", "action", "request_id", "user_id", "model", "provider", "attributes")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time: _timestamp_pb2.Timestamp
    action: str
    request_id: str
    user_id: str
    model: str
    provider: str
    attributes: _struct_pb2.Struct
    def __init__(self, event_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("api_key", "events", "subject")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    subject: Subject
    def __init__(self, api_key: _Optional[str] = ..., events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class AuditResponse(_message.Message):
    __slots__ = ("accepted", "event_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., event_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamAuditRequest(_message.Message):
    __slots__ = ("api_key", "events", "subject")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    subject: Subject
    def __init__(self, api_key: _Optional[str] = ..., events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ...) -> None: ...

class StreamAuditResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...
