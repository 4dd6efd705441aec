import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from warden.v1 import types_pb2 as _types_pb2
from warden.v1 import warden_pb2 as _warden_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_STATE_UNSPECIFIED: _ClassVar[CircuitState]
    CIRCUIT_STATE_CLOSED: _ClassVar[CircuitState]
    CIRCUIT_STATE_OPEN: _ClassVar[CircuitState]
    CIRCUIT_STATE_HALF_OPEN: _ClassVar[CircuitState]

class CircuitMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_MODE_UNSPECIFIED: _ClassVar[CircuitMode]
    CIRCUIT_MODE_AUTOMATIC: _ClassVar[CircuitMode]
    CIRCUIT_MODE_FORCED_OPEN: _ClassVar[CircuitMode]
    CIRCUIT_MODE_FORCED_CLOSED: _ClassVar[CircuitMode]

class SpendGroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEND_GROUP_BY_UNSPECIFIED: _ClassVar[SpendGroupBy]
    SPEND_GROUP_BY_APP: _ClassVar[SpendGroupBy]
    SPEND_GROUP_BY_USER: _ClassVar[SpendGroupBy]
    SPEND_GROUP_BY_API_KEY: _ClassVar[SpendGroupBy]
    SPEND_GROUP_BY_MODEL: _ClassVar[SpendGroupBy]
    SPEND_GROUP_BY_PROVIDER: _ClassVar[SpendGroupBy]
    SPEND_GROUP_BY_TEAM: _ClassVar[SpendGroupBy]

class ChangeAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_ACTION_UNSPECIFIED: _ClassVar[ChangeAction]
    CHANGE_ACTION_CREATE: _ClassVar[ChangeAction]
    CHANGE_ACTION_UPDATE: _ClassVar[ChangeAction]
    CHANGE_ACTION_DELETE: _ClassVar[ChangeAction]
CIRCUIT_STATE_UNSPECIFIED: CircuitState
CIRCUIT_STATE_CLOSED: CircuitState
CIRCUIT_STATE_OPEN: CircuitState
CIRCUIT_STATE_HALF_OPEN: CircuitState
CIRCUIT_MODE_UNSPECIFIED: CircuitMode
CIRCUIT_MODE_AUTOMATIC: CircuitMode
CIRCUIT_MODE_FORCED_OPEN: CircuitMode
CIRCUIT_MODE_FORCED_CLOSED: CircuitMode
SPEND_GROUP_BY_UNSPECIFIED: SpendGroupBy
SPEND_GROUP_BY_APP: SpendGroupBy
SPEND_GROUP_BY_USER: SpendGroupBy
SPEND_GROUP_BY_API_KEY: SpendGroupBy
SPEND_GROUP_BY_MODEL: SpendGroupBy
SPEND_GROUP_BY_PROVIDER: SpendGroupBy
SPEND_GROUP_BY_TEAM: SpendGroupBy
CHANGE_ACTION_UNSPECIFIED: ChangeAction
CHANGE_ACTION_CREATE: ChangeAction
CHANGE_ACTION_UPDATE: ChangeAction
CHANGE_ACTION_DELETE: ChangeAction

class Org(_message.Message):
    __slots__ = ("id", "display_name", "time_zone", "currency", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    time_zone: str
    currency: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., time_zone: _Optional[str] = ..., currency: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Team(_message.Message):
    __slots__ = ("id", "org_id", "display_name", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    org_id: str
    display_name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., org_id: _Optional[str] = ..., display_name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class App(_message.Message):
    __slots__ = ("id", "org_id", "display_name", "team_id", "create_time", "principals")
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    id: str
    org_id: str
    display_name: str
    team_id: str
    create_time: _timestamp_pb2.Timestamp
    principals: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., org_id: _Optional[str] = ..., display_name: _Optional[str] = ..., team_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., principals: _Optional[_Iterable[str]] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("id", "org_id", "display_name", "team_ids", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TEAM_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    org_id: str
    display_name: str
    team_ids: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., org_id: _Optional[str] = ..., display_name: _Optional[str] = ..., team_ids: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "app_id", "user_id", "display_name", "prefix", "allowed_models", "create_time", "expire_time", "revoke_time", "last_used_time", "org_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_TIME_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    app_id: str
    user_id: str
    display_name: str
    prefix: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    last_used_time: _timestamp_pb2.Timestamp
    org_id: str
    def __init__(self, id: _Optional[str] = ..., app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., prefix: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., org_id: _Optional[str] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("provider", "model", "input_micros_per_million", "output_micros_per_million", "cached_input_micros_per_million")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    input_micros_per_million: int
    output_micros_per_million: int
    cached_input_micros_per_million: int
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., input_micros_per_million: _Optional[int] = ..., output_micros_per_million: _Optional[int] = ..., cached_input_micros_per_million: _Optional[int] = ...) -> None: ...

class ProviderSwitch(_message.Message):
    __slots__ = ("provider", "model", "org_id", "enabled", "reason", "update_time")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    org_id: str
    enabled: bool
    reason: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., org_id: _Optional[str] = ..., enabled: _Optional[bool] = ..., reason: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CircuitThresholds(_message.Message):
    __slots__ = ("error_rate", "min_calls", "window_seconds", "consecutive_failures", "cooldown_seconds")
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MIN_CALLS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    error_rate: float
    min_calls: int
    window_seconds: int
    consecutive_failures: int
    cooldown_seconds: float
    def __init__(self, error_rate: _Optional[float] = ..., min_calls: _Optional[int] = ..., window_seconds: _Optional[int] = ..., consecutive_failures: _Optional[int] = ..., cooldown_seconds: _Optional[float] = ...) -> None: ...

class Circuit(_message.Message):
    __slots__ = ("provider", "model", "state", "mode", "reason", "thresholds", "window_calls", "window_failures", "consecutive_failures", "open_time", "retry_time", "update_time")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_CALLS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FAILURES_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    OPEN_TIME_FIELD_NUMBER: _ClassVar[int]
    RETRY_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    state: CircuitState
    mode: CircuitMode
    reason: str
    thresholds: CircuitThresholds
    window_calls: int
    window_failures: int
    consecutive_failures: int
    open_time: _timestamp_pb2.Timestamp
    retry_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., state: _Optional[_Union[CircuitState, str]] = ..., mode: _Optional[_Union[CircuitMode, str]] = ..., reason: _Optional[str] = ..., thresholds: _Optional[_Union[CircuitThresholds, _Mapping]] = ..., window_calls: _Optional[int] = ..., window_failures: _Optional[int] = ..., consecutive_failures: _Optional[int] = ..., open_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retry_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateOrgRequest(_message.Message):
    __slots__ = ("org",)
    ORG_FIELD_NUMBER: _ClassVar[int]
    org: Org
    def __init__(self, org: _Optional[_Union[Org, _Mapping]] = ...) -> None: ...

class CreateOrgResponse(_message.Message):
    __slots__ = ("org",)
    ORG_FIELD_NUMBER: _ClassVar[int]
    org: Org
    def __init__(self, org: _Optional[_Union[Org, _Mapping]] = ...) -> None: ...

class GetOrgRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetOrgResponse(_message.Message):
    __slots__ = ("org",)
    ORG_FIELD_NUMBER: _ClassVar[int]
    org: Org
    def __init__(self, org: _Optional[_Union[Org, _Mapping]] = ...) -> None: ...

class ListOrgsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrgsResponse(_message.Message):
    __slots__ = ("orgs", "next_page_token")
    ORGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orgs: _containers.RepeatedCompositeFieldContainer[Org]
    next_page_token: str
    def __init__(self, orgs: _Optional[_Iterable[_Union[Org, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateTeamRequest(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: Team
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ...) -> None: ...

class CreateTeamResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: Team
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ...) -> None: ...

class ListTeamsRequest(_message.Message):
    __slots__ = ("org_id", "page_size", "page_token")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    page_size: int
    page_token: str
    def __init__(self, org_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTeamsResponse(_message.Message):
    __slots__ = ("teams", "next_page_token")
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    teams: _containers.RepeatedCompositeFieldContainer[Team]
    next_page_token: str
    def __init__(self, teams: _Optional[_Iterable[_Union[Team, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateAppRequest(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class CreateAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class ListAppsRequest(_message.Message):
    __slots__ = ("org_id", "page_size", "page_token")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    page_size: int
    page_token: str
    def __init__(self, org_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAppsResponse(_message.Message):
    __slots__ = ("apps", "next_page_token")
    APPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[App]
    next_page_token: str
    def __init__(self, apps: _Optional[_Iterable[_Union[App, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("org_id", "page_size", "page_token")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    page_size: int
    page_token: str
    def __init__(self, org_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("app_id", "user_id", "display_name", "allowed_models", "expire_time")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    display_name: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "plaintext")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    plaintext: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., plaintext: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("app_id", "page_size", "page_token")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    page_size: int
    page_token: str
    def __init__(self, app_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RotateApiKeyRequest(_message.Message):
    __slots__ = ("id", "grace_period")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    id: str
    grace_period: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RotateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "plaintext")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    plaintext: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., plaintext: _Optional[str] = ...) -> None: ...

class CreatePolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _types_pb2.Policy
    def __init__(self, policy: _Optional[_Union[_types_pb2.Policy, _Mapping]] = ...) -> None: ...

class CreatePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _types_pb2.Policy
    def __init__(self, policy: _Optional[_Union[_types_pb2.Policy, _Mapping]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _types_pb2.Policy
    def __init__(self, policy: _Optional[_Union[_types_pb2.Policy, _Mapping]] = ...) -> None: ...

class UpdatePolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _types_pb2.Policy
    def __init__(self, policy: _Optional[_Union[_types_pb2.Policy, _Mapping]] = ...) -> None: ...

class UpdatePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _types_pb2.Policy
    def __init__(self, policy: _Optional[_Union[_types_pb2.Policy, _Mapping]] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ("scope", "page_size", "page_token")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    scope: _types_pb2.Scope
    page_size: int
    page_token: str
    def __init__(self, scope: _Optional[_Union[_types_pb2.Scope, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "next_page_token")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[_types_pb2.Policy]
    next_page_token: str
    def __init__(self, policies: _Optional[_Iterable[_Union[_types_pb2.Policy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetModelPriceRequest(_message.Message):
    __slots__ = ("price",)
    PRICE_FIELD_NUMBER: _ClassVar[int]
    price: ModelPrice
    def __init__(self, price: _Optional[_Union[ModelPrice, _Mapping]] = ...) -> None: ...

class SetModelPriceResponse(_message.Message):
    __slots__ = ("price",)
    PRICE_FIELD_NUMBER: _ClassVar[int]
    price: ModelPrice
    def __init__(self, price: _Optional[_Union[ModelPrice, _Mapping]] = ...) -> None: ...

class ListModelPricesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelPricesResponse(_message.Message):
    __slots__ = ("prices",)
    PRICES_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    def __init__(self, prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ...) -> None: ...

class SetProviderSwitchRequest(_message.Message):
    __slots__ = ("switch",)
    SWITCH_FIELD_NUMBER: _ClassVar[int]
    switch: ProviderSwitch
    def __init__(self, switch: _Optional[_Union[ProviderSwitch, _Mapping]] = ...) -> None: ...

class SetProviderSwitchResponse(_message.Message):
    __slots__ = ("switch",)
    SWITCH_FIELD_NUMBER: _ClassVar[int]
    switch: ProviderSwitch
    def __init__(self, switch: _Optional[_Union[ProviderSwitch, _Mapping]] = ...) -> None: ...

class ListProviderSwitchesRequest(_message.Message):
    __slots__ = ("org_id",)
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    def __init__(self, org_id: _Optional[str] = ...) -> None: ...

class ListProviderSwitchesResponse(_message.Message):
    __slots__ = ("switches",)
    SWITCHES_FIELD_NUMBER: _ClassVar[int]
    switches: _containers.RepeatedCompositeFieldContainer[ProviderSwitch]
    def __init__(self, switches: _Optional[_Iterable[_Union[ProviderSwitch, _Mapping]]] = ...) -> None: ...

class SetCircuitRequest(_message.Message):
    __slots__ = ("provider", "model", "mode", "reason", "thresholds")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    mode: CircuitMode
    reason: str
    thresholds: CircuitThresholds
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., mode: _Optional[_Union[CircuitMode, str]] = ..., reason: _Optional[str] = ..., thresholds: _Optional[_Union[CircuitThresholds, _Mapping]] = ...) -> None: ...

class SetCircuitResponse(_message.Message):
    __slots__ = ("circuit",)
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    circuit: Circuit
    def __init__(self, circuit: _Optional[_Union[Circuit, _Mapping]] = ...) -> None: ...

class ListCircuitsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCircuitsResponse(_message.Message):
    __slots__ = ("circuits",)
    CIRCUITS_FIELD_NUMBER: _ClassVar[int]
    circuits: _containers.RepeatedCompositeFieldContainer[Circuit]
    def __init__(self, circuits: _Optional[_Iterable[_Union[Circuit, _Mapping]]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("scope", "start_time", "end_time")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    scope: _types_pb2.Scope
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, scope: _Optional[_Union[_types_pb2.Scope, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("limits", "requests", "usage", "cost_micros", "allowed", "denied", "limit_usage")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_USAGE_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.RepeatedCompositeFieldContainer[_warden_pb2.LimitStatus]
    requests: int
    usage: _types_pb2.Usage
    cost_micros: int
    allowed: int
    denied: int
    limit_usage: _containers.RepeatedCompositeFieldContainer[LimitUsage]
    def __init__(self, limits: _Optional[_Iterable[_Union[_warden_pb2.LimitStatus, _Mapping]]] = ..., requests: _Optional[int] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ..., cost_micros: _Optional[int] = ..., allowed: _Optional[int] = ..., denied: _Optional[int] = ..., limit_usage: _Optional[_Iterable[_Union[LimitUsage, _Mapping]]] = ...) -> None: ...

class LimitUsage(_message.Message):
    __slots__ = ("policy_id", "used")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    used: int
    def __init__(self, policy_id: _Optional[str] = ..., used: _Optional[int] = ...) -> None: ...

class GetBudgetSummaryRequest(_message.Message):
    __slots__ = ("org_id", "scope")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    scope: _types_pb2.Scope
    def __init__(self, org_id: _Optional[str] = ..., scope: _Optional[_Union[_types_pb2.Scope, _Mapping]] = ...) -> None: ...

class GetBudgetSummaryResponse(_message.Message):
    __slots__ = ("budgets", "currency", "time_zone")
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    currency: str
    time_zone: str
    def __init__(self, budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ..., currency: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class BudgetStatus(_message.Message):
    __slots__ = ("policy_id", "scope", "name", "mode", "period", "period_start", "period_end", "limit_micros", "spent_micros", "reserved_micros", "used_micros", "remaining_micros", "percent_used", "percent_spent", "alert_threshold_percent", "alert_threshold_crossed")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    LIMIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    SPENT_MICROS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MICROS_FIELD_NUMBER: _ClassVar[int]
    USED_MICROS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    PERCENT_USED_FIELD_NUMBER: _ClassVar[int]
    PERCENT_SPENT_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLD_CROSSED_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    scope: _types_pb2.Scope
    name: str
    mode: _types_pb2.PolicyMode
    period: _types_pb2.Period
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    limit_micros: int
    spent_micros: int
    reserved_micros: int
    used_micros: int
    remaining_micros: int
    percent_used: float
    percent_spent: float
    alert_threshold_percent: int
    alert_threshold_crossed: bool
    def __init__(self, policy_id: _Optional[str] = ..., scope: _Optional[_Union[_types_pb2.Scope, _Mapping]] = ..., name: _Optional[str] = ..., mode: _Optional[_Union[_types_pb2.PolicyMode, str]] = ..., period: _Optional[_Union[_types_pb2.Period, str]] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit_micros: _Optional[int] = ..., spent_micros: _Optional[int] = ..., reserved_micros: _Optional[int] = ..., used_micros: _Optional[int] = ..., remaining_micros: _Optional[int] = ..., percent_used: _Optional[float] = ..., percent_spent: _Optional[float] = ..., alert_threshold_percent: _Optional[int] = ..., alert_threshold_crossed: _Optional[bool] = ...) -> None: ...

class ListTopSpendersRequest(_message.Message):
    __slots__ = ("org_id", "start_time", "end_time", "group_by", "limit")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    group_by: SpendGroupBy
    limit: int
    def __init__(self, org_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Union[SpendGroupBy, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTopSpendersResponse(_message.Message):
    __slots__ = ("spenders",)
    SPENDERS_FIELD_NUMBER: _ClassVar[int]
    spenders: _containers.RepeatedCompositeFieldContainer[Spender]
    def __init__(self, spenders: _Optional[_Iterable[_Union[Spender, _Mapping]]] = ...) -> None: ...

class Spender(_message.Message):
    __slots__ = ("key", "requests", "input_tokens", "output_tokens", "cost_micros")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    key: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micros: int
    def __init__(self, key: _Optional[str] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ...) -> None: ...

class GetRequestMetricsRequest(_message.Message):
    __slots__ = ("org_id", "app_id", "model", "start_time", "end_time")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    app_id: str
    model: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, org_id: _Optional[str] = ..., app_id: _Optional[str] = ..., model: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRequestMetricsResponse(_message.Message):
    __slots__ = ("requests", "allowed", "denied", "completed", "failed", "cancelled", "expired", "usage", "cost_micros", "latency", "deny_reasons")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    DENY_REASONS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    allowed: int
    denied: int
    completed: int
    failed: int
    cancelled: int
    expired: int
    usage: _types_pb2.Usage
    cost_micros: int
    latency: LatencySummary
    deny_reasons: _containers.RepeatedCompositeFieldContainer[ReasonCount]
    def __init__(self, requests: _Optional[int] = ..., allowed: _Optional[int] = ..., denied: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., expired: _Optional[int] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ..., cost_micros: _Optional[int] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., deny_reasons: _Optional[_Iterable[_Union[ReasonCount, _Mapping]]] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("count", "p50_ms", "p90_ms", "p99_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    def __init__(self, count: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class ReasonCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: _types_pb2.Reason
    count: int
    def __init__(self, reason: _Optional[_Union[_types_pb2.Reason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class StoredAuditEvent(_message.Message):
    __slots__ = ("event", "org_id", "app_id", "receive_time")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    event: _warden_pb2.AuditEvent
    org_id: str
    app_id: str
    receive_time: _timestamp_pb2.Timestamp
    def __init__(self, event: _Optional[_Union[_warden_pb2.AuditEvent, _Mapping]] = ..., org_id: _Optional[str] = ..., app_id: _Optional[str] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("org_id", "app_id", "user_id", "action", "model", "request_id", "start_time", "end_time", "page_size", "page_token", "decision")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    app_id: str
    user_id: str
    action: str
    model: str
    request_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    decision: _warden_pb2.Decision
    def __init__(self, org_id: _Optional[str] = ..., app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., request_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., decision: _Optional[_Union[_warden_pb2.Decision, str]] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StoredAuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[StoredAuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRequestStoryRequest(_message.Message):
    __slots__ = ("org_id", "request_id")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    request_id: str
    def __init__(self, org_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetRequestStoryResponse(_message.Message):
    __slots__ = ("identity", "request", "decision", "usage", "events")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    identity: _warden_pb2.Identity
    request: _warden_pb2.AuthorizeRequest
    decision: _warden_pb2.AuthorizeResponse
    usage: _warden_pb2.RecordUsageRequest
    events: _containers.RepeatedCompositeFieldContainer[StoredAuditEvent]
    def __init__(self, identity: _Optional[_Union[_warden_pb2.Identity, _Mapping]] = ..., request: _Optional[_Union[_warden_pb2.AuthorizeRequest, _Mapping]] = ..., decision: _Optional[_Union[_warden_pb2.AuthorizeResponse, _Mapping]] = ..., usage: _Optional[_Union[_warden_pb2.RecordUsageRequest, _Mapping]] = ..., events: _Optional[_Iterable[_Union[StoredAuditEvent, _Mapping]]] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("orgs", "teams", "apps", "users", "policies", "dry_run")
    ORGS_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    orgs: _containers.RepeatedCompositeFieldContainer[Org]
    teams: _containers.RepeatedCompositeFieldContainer[Team]
    apps: _containers.RepeatedCompositeFieldContainer[App]
    users: _containers.RepeatedCompositeFieldContainer[User]
    policies: _containers.RepeatedCompositeFieldContainer[_types_pb2.Policy]
    dry_run: bool
    def __init__(self, orgs: _Optional[_Iterable[_Union[Org, _Mapping]]] = ..., teams: _Optional[_Iterable[_Union[Team, _Mapping]]] = ..., apps: _Optional[_Iterable[_Union[App, _Mapping]]] = ..., users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., policies: _Optional[_Iterable[_Union[_types_pb2.Policy, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("kind", "id", "action", "fields")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    action: ChangeAction
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ..., action: _Optional[_Union[ChangeAction, str]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("changes", "applied")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    applied: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., applied: _Optional[bool] = ...) -> None: ...
