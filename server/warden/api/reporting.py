"""Checks and conversions for the reporting RPCs (GetUsage, GetBudgetSummary, ListTopSpenders,
GetRequestMetrics); the handlers are in admin_service.py, the queries in store/reporting.py."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from warden.api import convert
from warden.api.validate import MAX_TEXT, Violations
from warden.engine import policy_from_row
from warden.v1 import admin_pb2, types_pb2, warden_pb2

Row = Mapping[str, Any]

DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=366)
DEFAULT_SPENDERS = 10
MAX_SPENDERS = 1000
GROUP_BY = {admin_pb2.SPEND_GROUP_BY_APP: "app", admin_pb2.SPEND_GROUP_BY_USER: "user",
            admin_pb2.SPEND_GROUP_BY_API_KEY: "api_key", admin_pb2.SPEND_GROUP_BY_MODEL: "model",
            admin_pb2.SPEND_GROUP_BY_PROVIDER: "provider", admin_pb2.SPEND_GROUP_BY_TEAM: "team"}
# What google.protobuf.Timestamp can hold: 0001-01-01 to 9999-12-31.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def timestamp_field(v: Violations, request: Any, name: str) -> datetime | None:
    """The request's Timestamp field `name`, None when unset or invalid (then noted in v)."""
    if not request.HasField(name):
        return None
    ts = getattr(request, name)
    if not v.check(_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 10**9, name,
                   "must be a valid timestamp between years 1 and 9999"):
        return None
    return ts.ToDatetime(UTC)


def time_range(v: Violations, request: Any, now: datetime) -> tuple[datetime, datetime]:
    """[start_time, end_time) of the request: end defaults to now, start to a day before end."""
    start = timestamp_field(v, request, "start_time")
    end = timestamp_field(v, request, "end_time")
    bad = any(f in ("start_time", "end_time") for f, _ in v.items)
    end = end or now
    start = start or end - DEFAULT_RANGE
    if not bad and v.check(end > start, "end_time", "must be after start_time"):
        v.check(end - start <= MAX_RANGE, "end_time",
                f"must be at most {MAX_RANGE.days} days after start_time")
    return start, end


def scope(v: Violations, request: Any, required: bool) -> tuple[str, str] | None:
    """The request's `scope` as (kind, id); None when optional and not given."""
    if not request.HasField("scope") or not (request.scope.kind or request.scope.id):
        v.check(not required, "scope", "is required")
        return None
    s = request.scope
    v.check(s.kind in convert.SCOPE_NAMES, "scope.kind",
            f"must be one of {', '.join(types_pb2.ScopeKind.Name(k) for k in convert.SCOPE_NAMES)}")
    v.id(s.id, "scope.id")
    return convert.SCOPE_NAMES.get(s.kind, ""), s.id


def spenders_limit(v: Violations, limit: int) -> int:
    v.check(0 <= limit <= MAX_SPENDERS, "limit",
            f"must be between 0 and {MAX_SPENDERS} (0 means {DEFAULT_SPENDERS})")
    return limit or DEFAULT_SPENDERS


def model_filter(v: Violations, model: str) -> None:
    v.text(model, "model", MAX_TEXT)


def _usage(row: Row) -> types_pb2.Usage:
    return types_pb2.Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                           cached_input_tokens=row["cached_input_tokens"])


def _limit_status(row: Row) -> warden_pb2.LimitStatus:
    policy = policy_from_row(row)
    return warden_pb2.LimitStatus(
        policy_id=policy.id, scope=convert.scope(policy.scope_kind, policy.scope_id),
        metric=convert.METRICS[policy.metric], limit=policy.limit,
        remaining=max(policy.limit - row["used"], 0),
        reset_time=convert.timestamp(row["reset_time"]))


def usage_to_proto(totals: Row, quotas: list[Row]) -> admin_pb2.GetUsageResponse:
    return admin_pb2.GetUsageResponse(
        limits=[_limit_status(q) for q in quotas],
        limit_usage=[admin_pb2.LimitUsage(policy_id=q["id"], used=q["used"]) for q in quotas],
        requests=totals["requests"], allowed=totals["allowed"], denied=totals["denied"],
        usage=_usage(totals), cost_micros=totals["cost_micros"])


def _percent(part: int, whole: int) -> float:
    return 100 * part / whole if whole > 0 else 0.0


def budget_to_proto(row: Row) -> admin_pb2.BudgetStatus:
    """A budget with its counter and its period's spend per (model, provider); the selector
    picks the spend that counts, with the engine's pattern rules."""
    budget = policy_from_row(row).budget
    assert budget is not None
    spent = reserved = 0
    for model, provider, model_spent, model_reserved in row["spend"]:
        if budget.selector.matches(provider, model):
            spent += model_spent
            reserved += model_reserved
    limit, threshold = budget.limit_micros, budget.alert_threshold_percent
    return admin_pb2.BudgetStatus(
        policy_id=row["id"], scope=convert.scope(row["scope_kind"], row["scope_id"]),
        name=row["name"], mode=convert.MODES[row["mode"]],
        period=types_pb2.Period.Value("PERIOD_" + budget.period),
        period_start=convert.timestamp(row["window_start"]),
        period_end=convert.timestamp(row["window_end"]),
        limit_micros=limit, spent_micros=spent, reserved_micros=reserved,
        used_micros=row["used"], remaining_micros=max(limit - row["used"], 0),
        percent_used=_percent(row["used"], limit), percent_spent=_percent(spent, limit),
        alert_threshold_percent=threshold,
        alert_threshold_crossed=threshold > 0 and spent * 100 >= threshold * limit)


def spender_to_proto(row: Row) -> admin_pb2.Spender:
    return admin_pb2.Spender(key=row["key"] or "", requests=row["requests"],
                             input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                             cost_micros=row["cost_micros"])


def _reason(name: str) -> int:
    return convert.REASONS.get(name, types_pb2.REASON_UNSPECIFIED)


def metrics_to_proto(row: Row) -> admin_pb2.GetRequestMetricsResponse:
    latency = None
    if row["latency_count"]:
        p50, p90, p99 = row["latency_ms"]
        latency = admin_pb2.LatencySummary(count=row["latency_count"], p50_ms=p50, p90_ms=p90,
                                           p99_ms=p99)
    return admin_pb2.GetRequestMetricsResponse(
        **{name: row[name] for name in ("requests", "allowed", "denied", "completed", "failed",
                                        "cancelled", "expired", "cost_micros")},
        usage=_usage(row), latency=latency,
        deny_reasons=[admin_pb2.ReasonCount(reason=_reason(reason), count=count)
                      for reason, count in row["deny_reasons"]])
