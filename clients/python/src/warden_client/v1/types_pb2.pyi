import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScopeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_KIND_UNSPECIFIED: _ClassVar[ScopeKind]
    SCOPE_KIND_ORG: _ClassVar[ScopeKind]
    SCOPE_KIND_TEAM: _ClassVar[ScopeKind]
    SCOPE_KIND_APP: _ClassVar[ScopeKind]
    SCOPE_KIND_USER: _ClassVar[ScopeKind]
    SCOPE_KIND_API_KEY: _ClassVar[ScopeKind]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_INVALID_ARGUMENT: _ClassVar[Reason]
    REASON_API_KEY_INVALID: _ClassVar[Reason]
    REASON_API_KEY_REVOKED: _ClassVar[Reason]
    REASON_API_KEY_EXPIRED: _ClassVar[Reason]
    REASON_ADMIN_TOKEN_MISSING: _ClassVar[Reason]
    REASON_ADMIN_TOKEN_INVALID: _ClassVar[Reason]
    REASON_NOT_FOUND: _ClassVar[Reason]
    REASON_ALREADY_EXISTS: _ClassVar[Reason]
    REASON_NOT_IMPLEMENTED: _ClassVar[Reason]
    REASON_DATABASE_UNAVAILABLE: _ClassVar[Reason]
    REASON_INTERNAL: _ClassVar[Reason]
    REASON_MODEL_NOT_PRICED: _ClassVar[Reason]
    REASON_REQUEST_NOT_AUTHORIZED: _ClassVar[Reason]
    REASON_USAGE_CONFLICT: _ClassVar[Reason]
    REASON_REQUEST_ID_REUSED: _ClassVar[Reason]
    REASON_FAILED_PRECONDITION: _ClassVar[Reason]
    REASON_REVISION_MISMATCH: _ClassVar[Reason]
    REASON_PERMISSION_DENIED: _ClassVar[Reason]
    REASON_BUSY: _ClassVar[Reason]
    REASON_RESERVATION_EXPIRED: _ClassVar[Reason]
    REASON_JOURNAL_FULL: _ClassVar[Reason]
    REASON_ALLOWED: _ClassVar[Reason]
    REASON_RATE_LIMITED: _ClassVar[Reason]
    REASON_BUDGET_EXHAUSTED: _ClassVar[Reason]
    REASON_MODEL_NOT_ALLOWED: _ClassVar[Reason]
    REASON_PROVIDER_DISABLED: _ClassVar[Reason]
    REASON_PII_DETECTED: _ClassVar[Reason]
    REASON_PROMPT_INJECTION: _ClassVar[Reason]
    REASON_RAG_SOURCE_NOT_ALLOWED: _ClassVar[Reason]
    REASON_REQUEST_COST_CAP: _ClassVar[Reason]
    REASON_QUOTA_UNAVAILABLE: _ClassVar[Reason]
    REASON_PROVIDER_UNAVAILABLE: _ClassVar[Reason]

class PolicyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_MODE_UNSPECIFIED: _ClassVar[PolicyMode]
    POLICY_MODE_ENFORCE: _ClassVar[PolicyMode]
    POLICY_MODE_DRY_RUN: _ClassVar[PolicyMode]

class FailureMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_MODE_UNSPECIFIED: _ClassVar[FailureMode]
    FAILURE_MODE_FAIL_CLOSED: _ClassVar[FailureMode]
    FAILURE_MODE_FAIL_OPEN: _ClassVar[FailureMode]

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_REQUESTS: _ClassVar[Metric]
    METRIC_INPUT_TOKENS: _ClassVar[Metric]
    METRIC_OUTPUT_TOKENS: _ClassVar[Metric]
    METRIC_TOTAL_TOKENS: _ClassVar[Metric]
    METRIC_COST_MICROS: _ClassVar[Metric]

class Window(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_UNSPECIFIED: _ClassVar[Window]
    WINDOW_MINUTE: _ClassVar[Window]
    WINDOW_HOUR: _ClassVar[Window]
    WINDOW_DAY: _ClassVar[Window]

class Period(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERIOD_UNSPECIFIED: _ClassVar[Period]
    PERIOD_DAY: _ClassVar[Period]
    PERIOD_MONTH: _ClassVar[Period]

class GuardrailAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUARDRAIL_ACTION_UNSPECIFIED: _ClassVar[GuardrailAction]
    GUARDRAIL_ACTION_LOG: _ClassVar[GuardrailAction]
    GUARDRAIL_ACTION_REDACT: _ClassVar[GuardrailAction]
    GUARDRAIL_ACTION_BLOCK: _ClassVar[GuardrailAction]
SCOPE_KIND_UNSPECIFIED: ScopeKind
SCOPE_KIND_ORG: ScopeKind
SCOPE_KIND_TEAM: ScopeKind
SCOPE_KIND_APP: ScopeKind
SCOPE_KIND_USER: ScopeKind
SCOPE_KIND_API_KEY: ScopeKind
REASON_UNSPECIFIED: Reason
REASON_INVALID_ARGUMENT: Reason
REASON_API_KEY_INVALID: Reason
REASON_API_KEY_REVOKED: Reason
REASON_API_KEY_EXPIRED: Reason
REASON_ADMIN_TOKEN_MISSING: Reason
REASON_ADMIN_TOKEN_INVALID: Reason
REASON_NOT_FOUND: Reason
REASON_ALREADY_EXISTS: Reason
REASON_NOT_IMPLEMENTED: Reason
REASON_DATABASE_UNAVAILABLE: Reason
REASON_INTERNAL: Reason
REASON_MODEL_NOT_PRICED: Reason
REASON_REQUEST_NOT_AUTHORIZED: Reason
REASON_USAGE_CONFLICT: Reason
REASON_REQUEST_ID_REUSED: Reason
REASON_FAILED_PRECONDITION: Reason
REASON_REVISION_MISMATCH: Reason
REASON_PERMISSION_DENIED: Reason
REASON_BUSY: Reason
REASON_RESERVATION_EXPIRED: Reason
REASON_JOURNAL_FULL: Reason
REASON_ALLOWED: Reason
REASON_RATE_LIMITED: Reason
REASON_BUDGET_EXHAUSTED: Reason
REASON_MODEL_NOT_ALLOWED: Reason
REASON_PROVIDER_DISABLED: Reason
REASON_PII_DETECTED: Reason
REASON_PROMPT_INJECTION: Reason
REASON_RAG_SOURCE_NOT_ALLOWED: Reason
REASON_REQUEST_COST_CAP: Reason
REASON_QUOTA_UNAVAILABLE: Reason
REASON_PROVIDER_UNAVAILABLE: Reason
POLICY_MODE_UNSPECIFIED: PolicyMode
POLICY_MODE_ENFORCE: PolicyMode
POLICY_MODE_DRY_RUN: PolicyMode
FAILURE_MODE_UNSPECIFIED: FailureMode
FAILURE_MODE_FAIL_CLOSED: FailureMode
FAILURE_MODE_FAIL_OPEN: FailureMode
METRIC_UNSPECIFIED: Metric
METRIC_REQUESTS: Metric
METRIC_INPUT_TOKENS: Metric
METRIC_OUTPUT_TOKENS: Metric
METRIC_TOTAL_TOKENS: Metric
METRIC_COST_MICROS: Metric
WINDOW_UNSPECIFIED: Window
WINDOW_MINUTE: Window
WINDOW_HOUR: Window
WINDOW_DAY: Window
PERIOD_UNSPECIFIED: Period
PERIOD_DAY: Period
PERIOD_MONTH: Period
GUARDRAIL_ACTION_UNSPECIFIED: GuardrailAction
GUARDRAIL_ACTION_LOG: GuardrailAction
GUARDRAIL_ACTION_REDACT: GuardrailAction
GUARDRAIL_ACTION_BLOCK: GuardrailAction

class Scope(_message.Message):
    __slots__ = ("kind", "id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    kind: ScopeKind
    id: str
    def __init__(self, kind: _Optional[_Union[ScopeKind, str]] = ..., id: _Optional[str] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ("models", "providers")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ..., providers: _Optional[_Iterable[str]] = ...) -> None: ...

class RateLimitConfig(_message.Message):
    __slots__ = ("metric", "window", "limit", "selector")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    metric: Metric
    window: Window
    limit: int
    selector: Selector
    def __init__(self, metric: _Optional[_Union[Metric, str]] = ..., window: _Optional[_Union[Window, str]] = ..., limit: _Optional[int] = ..., selector: _Optional[_Union[Selector, _Mapping]] = ...) -> None: ...

class BudgetConfig(_message.Message):
    __slots__ = ("period", "limit_micros", "max_request_cost_micros", "alert_threshold_percent", "selector", "default_input_micros_per_million", "default_output_micros_per_million")
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_INPUT_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_OUTPUT_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    period: Period
    limit_micros: int
    max_request_cost_micros: int
    alert_threshold_percent: int
    selector: Selector
    default_input_micros_per_million: int
    default_output_micros_per_million: int
    def __init__(self, period: _Optional[_Union[Period, str]] = ..., limit_micros: _Optional[int] = ..., max_request_cost_micros: _Optional[int] = ..., alert_threshold_percent: _Optional[int] = ..., selector: _Optional[_Union[Selector, _Mapping]] = ..., default_input_micros_per_million: _Optional[int] = ..., default_output_micros_per_million: _Optional[int] = ...) -> None: ...

class ModelAccessConfig(_message.Message):
    __slots__ = ("allow_models", "deny_models", "allow_providers", "deny_providers", "aliases")
    class AliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ALLOW_MODELS_FIELD_NUMBER: _ClassVar[int]
    DENY_MODELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    DENY_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    allow_models: _containers.RepeatedScalarFieldContainer[str]
    deny_models: _containers.RepeatedScalarFieldContainer[str]
    allow_providers: _containers.RepeatedScalarFieldContainer[str]
    deny_providers: _containers.RepeatedScalarFieldContainer[str]
    aliases: _containers.ScalarMap[str, str]
    def __init__(self, allow_models: _Optional[_Iterable[str]] = ..., deny_models: _Optional[_Iterable[str]] = ..., allow_providers: _Optional[_Iterable[str]] = ..., deny_providers: _Optional[_Iterable[str]] = ..., aliases: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RouteTarget(_message.Message):
    __slots__ = ("provider", "model")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class RouteRule(_message.Message):
    __slots__ = ("alias", "targets")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    alias: str
    targets: _containers.RepeatedCompositeFieldContainer[RouteTarget]
    def __init__(self, alias: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[RouteTarget, _Mapping]]] = ...) -> None: ...

class RoutingConfig(_message.Message):
    __slots__ = ("rules", "max_tokens_cap")
    RULES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_CAP_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[RouteRule]
    max_tokens_cap: int
    def __init__(self, rules: _Optional[_Iterable[_Union[RouteRule, _Mapping]]] = ..., max_tokens_cap: _Optional[int] = ...) -> None: ...

class AuditConfig(_message.Message):
    __slots__ = ("allow_sample_rate", "deny_sample_rate", "store_prompts", "mask_fields", "hash_fields")
    ALLOW_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    DENY_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    STORE_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELDS_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELDS_FIELD_NUMBER: _ClassVar[int]
    allow_sample_rate: float
    deny_sample_rate: float
    store_prompts: bool
    mask_fields: _containers.RepeatedScalarFieldContainer[str]
    hash_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, allow_sample_rate: _Optional[float] = ..., deny_sample_rate: _Optional[float] = ..., store_prompts: _Optional[bool] = ..., mask_fields: _Optional[_Iterable[str]] = ..., hash_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class PiiConfig(_message.Message):
    __slots__ = ("action", "entities", "entity_actions", "patterns")
    class EntityActionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: GuardrailAction
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[GuardrailAction, str]] = ...) -> None: ...
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    action: GuardrailAction
    entities: _containers.RepeatedScalarFieldContainer[str]
    entity_actions: _containers.ScalarMap[str, GuardrailAction]
    patterns: _containers.RepeatedCompositeFieldContainer[PiiPattern]
    def __init__(self, action: _Optional[_Union[GuardrailAction, str]] = ..., entities: _Optional[_Iterable[str]] = ..., entity_actions: _Optional[_Mapping[str, GuardrailAction]] = ..., patterns: _Optional[_Iterable[_Union[PiiPattern, _Mapping]]] = ...) -> None: ...

class PiiPattern(_message.Message):
    __slots__ = ("name", "pattern", "action")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    pattern: str
    action: GuardrailAction
    def __init__(self, name: _Optional[str] = ..., pattern: _Optional[str] = ..., action: _Optional[_Union[GuardrailAction, str]] = ...) -> None: ...

class PromptInjectionConfig(_message.Message):
    __slots__ = ("action", "threshold", "roles")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    action: GuardrailAction
    threshold: float
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, action: _Optional[_Union[GuardrailAction, str]] = ..., threshold: _Optional[float] = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class RagSourcesConfig(_message.Message):
    __slots__ = ("action", "allowed_sources", "denied_sources")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    DENIED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    action: GuardrailAction
    allowed_sources: _containers.RepeatedScalarFieldContainer[str]
    denied_sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, action: _Optional[_Union[GuardrailAction, str]] = ..., allowed_sources: _Optional[_Iterable[str]] = ..., denied_sources: _Optional[_Iterable[str]] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("id", "scope", "name", "mode", "priority", "locked", "failure_mode", "rate_limit", "budget", "model_access", "routing", "pii", "prompt_injection", "rag_sources", "audit", "create_time", "update_time", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MODE_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MODEL_ACCESS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    PII_FIELD_NUMBER: _ClassVar[int]
    PROMPT_INJECTION_FIELD_NUMBER: _ClassVar[int]
    RAG_SOURCES_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    scope: Scope
    name: str
    mode: PolicyMode
    priority: int
    locked: bool
    failure_mode: FailureMode
    rate_limit: RateLimitConfig
    budget: BudgetConfig
    model_access: ModelAccessConfig
    routing: RoutingConfig
    pii: PiiConfig
    prompt_injection: PromptInjectionConfig
    rag_sources: RagSourcesConfig
    audit: AuditConfig
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    revision: int
    def __init__(self, id: _Optional[str] = ..., scope: _Optional[_Union[Scope, _Mapping]] = ..., name: _Optional[str] = ..., mode: _Optional[_Union[PolicyMode, str]] = ..., priority: _Optional[int] = ..., locked: _Optional[bool] = ..., failure_mode: _Optional[_Union[FailureMode, str]] = ..., rate_limit: _Optional[_Union[RateLimitConfig, _Mapping]] = ..., budget: _Optional[_Union[BudgetConfig, _Mapping]] = ..., model_access: _Optional[_Union[ModelAccessConfig, _Mapping]] = ..., routing: _Optional[_Union[RoutingConfig, _Mapping]] = ..., pii: _Optional[_Union[PiiConfig, _Mapping]] = ..., prompt_injection: _Optional[_Union[PromptInjectionConfig, _Mapping]] = ..., rag_sources: _Optional[_Union[RagSourcesConfig, _Mapping]] = ..., audit: _Optional[_Union[AuditConfig, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cached_input_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ...) -> None: ...
