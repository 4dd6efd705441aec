"""Translation between protobuf messages and store rows / engine values, nothing else."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from warden.api.decoding import NUL
from warden.engine import AuthorizeInput
from warden.engine.audit import compact_json
from warden.v1 import admin_pb2, types_pb2, warden_pb2

Row = Mapping[str, Any]

SCOPE_KINDS = {"org": types_pb2.SCOPE_KIND_ORG, "team": types_pb2.SCOPE_KIND_TEAM,
               "app": types_pb2.SCOPE_KIND_APP, "user": types_pb2.SCOPE_KIND_USER,
               "api_key": types_pb2.SCOPE_KIND_API_KEY}
SCOPE_NAMES = {v: k for k, v in SCOPE_KINDS.items()}
MODES = {"enforce": types_pb2.POLICY_MODE_ENFORCE, "dry_run": types_pb2.POLICY_MODE_DRY_RUN}
FAILURE_MODES = {"fail_closed": types_pb2.FAILURE_MODE_FAIL_CLOSED,
                 "fail_open": types_pb2.FAILURE_MODE_FAIL_OPEN}
OUTCOMES = {warden_pb2.OUTCOME_COMPLETED: "completed", warden_pb2.OUTCOME_FAILED: "failed",
            warden_pb2.OUTCOME_CANCELLED: "cancelled"}


# Enum values by name without prefix, looked up once (Authorize builds several per answer).
REASONS = {n.removeprefix("REASON_"): v for n, v in types_pb2.Reason.items()}
METRICS = {n.removeprefix("METRIC_"): v for n, v in types_pb2.Metric.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """An aware datetime as a Timestamp (direct arithmetic: FromDatetime costs more)."""
    if value is None:
        return None
    micros = epoch_micros(value)
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000,
                                   nanos=micros % 1_000_000 * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_micros(value: datetime) -> int:
    """An aware datetime as microseconds since the epoch."""
    return (value - _EPOCH) // _MICROSECOND


@functools.lru_cache(maxsize=1024)
def _second_text(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def utc_text(seconds: int, micros: int) -> str:
    """A time since the epoch as RFC 3339 text in UTC (the events of a batch mostly share
    their second, whose text is built once)."""
    return f"{_second_text(seconds)}.{micros:06d}+00:00"


_json_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (C)
_float_text = float.__repr__  # as json writes a float


def struct_json(struct: struct_pb2.Struct) -> str:
    """A Struct as compact JSON text (engine.audit.compact_json's form), built directly: a
    third cheaper than struct_to_dict and encoding its dict (StreamAudit converts every
    event's attributes). ValueError as struct_to_dict raises it."""
    fields = struct.fields  # indexed by key: its items() view costs a fifth more
    parts = []
    for key in fields:
        value = fields[key]
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            text = _json_string(value.string_value)
        elif kind == "number_value":
            number = value.number_value
            if not math.isfinite(number):
                raise ValueError(_NOT_FINITE)
            text = _float_text(number)
        elif kind == "bool_value":
            text = "true" if value.bool_value else "false"
        elif kind == "struct_value" or kind == "list_value":
            text = compact_json(_json_value(value))
        else:
            text = "null"
        parts.append(f"{_json_string(key)}:{text}")
    text = "{" + ",".join(parts) + "}"
    if "\\u0000" in text:  # a NUL, or a backslash before "u0000" in the text sent
        struct_to_dict(struct)  # raises for the NUL
    return text


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values, as json_format.MessageToDict gives them at a third of
    its cost. ValueError, saying what it must not hold, for a NaN or an infinity, which JSON
    cannot hold, and for a key or string holding NUL, which Postgres's jsonb cannot."""
    fields = struct.fields  # indexed by key: its items() view costs a fifth more
    result = {key: _json_value(fields[key]) for key in fields}
    if "\x00" in "".join(result):
        raise ValueError(NUL)
    return result


_NOT_FINITE = "must hold JSON values: NaN and infinities are not allowed"


def _json_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        if "\x00" in text:
            raise ValueError(NUL)
        return text
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise ValueError(_NOT_FINITE)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_json_value(v) for v in value.list_value.values]
    return None


def reason(name: str) -> int:
    return REASONS[name]


def scope(kind: str, scope_id: str) -> types_pb2.Scope:
    return types_pb2.Scope(kind=SCOPE_KINDS[kind], id=scope_id)


def org_to_proto(row: Row) -> admin_pb2.Org:
    return admin_pb2.Org(id=row["id"], display_name=row["display_name"],
                         time_zone=row["time_zone"], currency=row["currency"],
                         create_time=timestamp(row["create_time"]))


def team_to_proto(row: Row) -> admin_pb2.Team:
    return admin_pb2.Team(id=row["id"], org_id=row["org_id"], display_name=row["display_name"],
                          create_time=timestamp(row["create_time"]))


def user_to_proto(row: Row) -> admin_pb2.User:
    return admin_pb2.User(id=row["id"], org_id=row["org_id"], display_name=row["display_name"],
                          team_ids=row["team_ids"], create_time=timestamp(row["create_time"]))


def switch_to_proto(row: Row) -> admin_pb2.ProviderSwitch:
    return admin_pb2.ProviderSwitch(
        provider=row["provider"], model=row["model"], org_id=row["org_id"],
        enabled=row["enabled"], reason=row["reason"], update_time=timestamp(row["update_time"]))


def app_to_proto(row: Row) -> admin_pb2.App:
    return admin_pb2.App(id=row["id"], org_id=row["org_id"], display_name=row["display_name"],
                         team_id=row["team_id"] or "", create_time=timestamp(row["create_time"]),
                         principals=row["principals"])


def api_key_to_proto(row: Row) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(
        id=row["id"], org_id=row["org_id"], app_id=row["app_id"], user_id=row["user_id"] or "",
        display_name=row["display_name"], prefix=f"wk_{row['prefix']}",
        allowed_models=row["allowed_models"], create_time=timestamp(row["create_time"]),
        expire_time=timestamp(row["expire_time"]), revoke_time=timestamp(row["revoke_time"]),
        last_used_time=timestamp(row["last_used_time"]))


def price_to_proto(row: Row) -> admin_pb2.ModelPrice:
    return admin_pb2.ModelPrice(**{f.name: row[f.name]
                                   for f in admin_pb2.ModelPrice.DESCRIPTOR.fields})


def policy_config_json(policy: types_pb2.Policy) -> tuple[str, dict[str, Any]]:
    """(policy type, the config message as proto3 JSON with proto field names)."""
    kind = policy.WhichOneof("config")
    return kind, json_format.MessageToDict(getattr(policy, kind),
                                           preserving_proto_field_name=True)


def policy_to_proto(row: Row) -> types_pb2.Policy:
    policy = types_pb2.Policy(
        id=row["id"], scope=scope(row["scope_kind"], row["scope_id"]), name=row["name"],
        mode=MODES[row["mode"]], priority=row["priority"], locked=row["locked"],
        failure_mode=FAILURE_MODES[row["failure_mode"]],
        create_time=timestamp(row["create_time"]), update_time=timestamp(row["update_time"]),
        revision=row["revision"])
    json_format.ParseDict(row["config"], getattr(policy, row["policy_type"]))
    return policy


def authorize_input(request: warden_pb2.AuthorizeRequest) -> AuthorizeInput:
    """The call as the engine sees it; the end user is the request's, or its subject's. Input
    tokens: the caller's count, else about four characters a token (until a tokenizer is wired
    in), from the one pass over the messages that also measures the prompt."""
    text = sum(len(m.content) for m in request.messages)
    chars = text + sum(len(m.role) for m in request.messages)
    return AuthorizeInput(request_id=request.request_id, model=request.model,
                          provider=request.provider,
                          input_tokens=request.input_tokens or -(-chars // 4),
                          prompt_chars=text,
                          max_output_tokens=request.max_output_tokens,
                          user_id=request.user_id or request.subject.user_id,
                          min_output_tokens=request.min_output_tokens,
                          messages=request.messages, rag_sources=request.rag_sources)


def usage_row(request: warden_pb2.RecordUsageRequest) -> dict[str, Any]:
    """What RecordUsage reports, by the names of the usage columns."""
    usage = request.usage
    return {"request_id": request.request_id, "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens, "model": request.model,
            "provider": request.provider, "outcome": OUTCOMES[request.outcome],
            "latency_ms": request.latency.ToMilliseconds() if request.HasField("latency")
            else None}


