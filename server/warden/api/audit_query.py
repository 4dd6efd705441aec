"""Checks, page tokens and conversions for ListAuditEvents and GetRequestStory; the handlers are
in admin_service.py, the queries in store/audit_query.py.

A page token holds the (event_time, event_id) of the last event returned, behind an HMAC that
also covers the request's org and filters: a token that was altered, made up, or replayed with
other filters is INVALID_ARGUMENT instead of a silently different listing. The HMAC key derives
from the key pepper, which every sidecar of a database shares, so any sidecar takes the token.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, struct_pb2

from warden.api import convert
from warden.api.reporting import model_filter, timestamp_field
from warden.api.validate import Violations
from warden.engine import audit
from warden.store.audit_query import AuditFilter
from warden.v1 import admin_pb2, types_pb2, warden_pb2

Row = Mapping[str, Any]

# The story returns at most this many events; ListAuditEvents(request_id=...) pages through all.
MAX_STORY_EVENTS = 1000
DECISIONS = {warden_pb2.DECISION_ALLOW: "allow", warden_pb2.DECISION_DENY: "deny"}
# 'expired' (a reservation settled at its reserved amount) has no Outcome value: unspecified.
OUTCOMES = {name: value for value, name in convert.OUTCOMES.items()}

_TOKEN_PURPOSE = b"warden.v1.Admin.ListAuditEvents page_token"
_TOKEN_VERSION = 1
_MAC_BYTES = 16
_BAD_TOKEN = ("must be a next_page_token that ListAuditEvents returned for the same org_id and "
              "filters")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def audit_filter(v: Violations, request: admin_pb2.ListAuditEventsRequest) -> AuditFilter:
    """The request's filters, every bad one noted in v."""
    v.id(request.app_id, "app_id", required=False)
    for name in ("user_id", "action", "request_id"):
        v.text(getattr(request, name), name)
    model_filter(v, request.model)
    v.check(request.decision in (warden_pb2.DECISION_UNSPECIFIED, *DECISIONS), "decision",
            "must be DECISION_ALLOW, DECISION_DENY or unspecified (no filter)")
    start = timestamp_field(v, request, "start_time")
    end = timestamp_field(v, request, "end_time")
    if start is not None and end is not None:
        v.check(end > start, "end_time", "must be after start_time")
    return AuditFilter(app_id=request.app_id, user_id=request.user_id, action=request.action,
                       model=request.model, request_id=request.request_id,
                       decision=DECISIONS.get(request.decision, ""), start=start, end=end)


def _mac(pepper: bytes, request: admin_pb2.ListAuditEventsRequest, payload: bytes) -> bytes:
    """Binds payload to the request minus its paging fields (so page_size may change)."""
    query = admin_pb2.ListAuditEventsRequest()
    query.CopyFrom(request)
    query.ClearField("page_size")
    query.ClearField("page_token")
    key = hmac.new(pepper, _TOKEN_PURPOSE, hashlib.sha256).digest()
    message = query.SerializeToString(deterministic=True) + b"\0" + payload
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_page_token(pepper: bytes, request: admin_pb2.ListAuditEventsRequest,
                      last: Row) -> str:
    micros = (last["event_time"] - _EPOCH) // timedelta(microseconds=1)
    payload = json.dumps([_TOKEN_VERSION, micros, last["event_id"]],
                         separators=(",", ":")).encode()
    raw = _mac(pepper, request, payload) + payload
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(v: Violations, pepper: bytes,
                      request: admin_pb2.ListAuditEventsRequest) -> tuple[datetime, str] | None:
    """The cursor in request.page_token; None for the first page or a bad token (noted)."""
    token = request.page_token
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if hmac.compare_digest(mac, _mac(pepper, request, payload)):
            version, micros, event_id = json.loads(payload)
            if version == _TOKEN_VERSION and isinstance(micros, int) and \
                    isinstance(event_id, str):
                return _EPOCH + timedelta(microseconds=micros), event_id
    except (ValueError, TypeError, OverflowError, binascii.Error):
        pass
    v.check(False, "page_token", _BAD_TOKEN)
    return None


def _attributes(row: Row) -> dict[str, Any]:
    """An event's attributes as Admin shows them: an explanation in its full form."""
    return audit.expand(row["attributes"], row["snapshot"])


def event_to_proto(row: Row) -> admin_pb2.StoredAuditEvent:
    attributes = struct_pb2.Struct()
    attributes.update(_attributes(row))
    return admin_pb2.StoredAuditEvent(
        event=warden_pb2.AuditEvent(
            event_id=row["event_id"], time=convert.timestamp(row["event_time"]),
            action=row["action"], request_id=row["request_id"], user_id=row["user_id"],
            model=row["model"], provider=row["provider"], attributes=attributes),
        org_id=row["org_id"], app_id=row["app_id"],
        receive_time=convert.timestamp(row["receive_time"]))


def _settlement(row: Row) -> warden_pb2.RecordUsageRequest | None:
    if row["outcome"] is None:
        return None
    latency = None
    if row["latency_ms"] is not None:
        latency = duration_pb2.Duration()
        latency.FromMilliseconds(row["latency_ms"])
    return warden_pb2.RecordUsageRequest(
        request_id=row["request_id"],
        usage=types_pb2.Usage(input_tokens=row["used_input_tokens"],
                              output_tokens=row["used_output_tokens"],
                              cached_input_tokens=row["used_cached_input_tokens"]),
        cost_micros=row["used_cost_micros"], model=row["used_model"],
        provider=row["used_provider"],
        outcome=OUTCOMES.get(row["outcome"], warden_pb2.OUTCOME_UNSPECIFIED), latency=latency,
        reservation_id=row["reservation_id"])


def _explain(reply: admin_pb2.GetRequestStoryResponse, attributes: Mapping[str, Any]) -> None:
    """Fill the decision's results, limits, fallbacks and retry_after (and the request's
    messages, when the audit setting stored them) from its authorize.decision event
    (engine/audit.explanation). A setting that masked or hashed those attributes leaves the
    parts it changed unset."""
    decision, a = reply.decision, attributes
    for r in a.get("results") or ():
        with _unreadable():
            r = dict(zip(audit.RESULT, r, strict=True))
            decision.results.append(warden_pb2.PolicyResult(
                policy_id=r["policy_id"], scope=_scope(r["scope"]),
                policy_type=r["policy_type"], mode=convert.MODES[r["mode"]],
                allowed=r["allowed"], reason=convert.REASONS[r["reason"]],
                message=r["message"]))
    for o in a.get("limits") or ():
        with _unreadable():
            o = dict(zip(audit.LIMIT, o, strict=True))
            decision.limits.append(warden_pb2.LimitStatus(
                policy_id=o["policy_id"], scope=_scope(o["scope"]),
                metric=convert.METRICS[o["metric"]], limit=o["limit"],
                remaining=min(max(o["remaining"] or 0, 0), o["limit"]),
                reset_time=convert.timestamp(datetime.fromisoformat(o["reset_time"]))
                if o["reset_time"] else None))
    with _unreadable():
        route = dict(zip(audit.ROUTE, a["route"], strict=True)) if a.get("route") else {}
        for provider, model in route.get("fallbacks", ()):
            decision.route.fallbacks.append(types_pb2.RouteTarget(provider=provider,
                                                                  model=model))
    with _unreadable():
        if a.get("retry_after_seconds") is not None:
            decision.retry_after.FromTimedelta(timedelta(seconds=a["retry_after_seconds"]))
    for m in a.get("messages") or ():
        with _unreadable():
            reply.request.messages.append(warden_pb2.ChatMessage(**m))


def _scope(text: str) -> types_pb2.Scope:
    kind, scope_id = text.split(":", 1)
    return convert.scope(kind, scope_id)


@contextlib.contextmanager
def _unreadable():
    """A part of an explanation that is not as explanation() wrote it is left out."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError):
        pass


def story_to_proto(decision: Row | None,
                   events: Sequence[Row]) -> admin_pb2.GetRequestStoryResponse:
    """The log keeps the routed model, provider and max_output_tokens of an allowed call (its
    route) and the asked-for ones of a denied call; the decision's explanation event, when the
    audit setting sampled it, adds the policy results, limits, fallbacks and retry_after.
    Its user_id is the identity's: whether the caller named it is not kept, so
    request.user_id stays empty."""
    reply = admin_pb2.GetRequestStoryResponse(events=[event_to_proto(e) for e in events])
    if decision is None:
        return reply
    d = decision
    identity = warden_pb2.Identity(org_id=d["org_id"], app_id=d["app_id"],
                                   user_id=d["user_id"], api_key_id=d["api_key_id"])
    allowed = d["decision"] == "allow"
    reply.identity.CopyFrom(identity)
    reply.request.request_id, reply.request.input_tokens = d["request_id"], d["input_tokens"]
    if not allowed:
        reply.request.model, reply.request.provider = d["model"], d["provider"]
        reply.request.max_output_tokens = d["max_output_tokens"]
    reply.decision.CopyFrom(warden_pb2.AuthorizeResponse(
        decision=warden_pb2.DECISION_ALLOW if allowed else warden_pb2.DECISION_DENY,
        reason=convert.REASONS.get(d["reason"], types_pb2.REASON_UNSPECIFIED),
        reservation_id=d["reservation_id"], identity=identity,
        route=warden_pb2.Route(provider=d["provider"], model=d["model"],
                               max_output_tokens=d["max_output_tokens"]) if allowed else None))
    usage = _settlement(d)
    if usage is not None:
        reply.usage.CopyFrom(usage)
    explained = [e for e in events if e["event_id"] == f"decision:{d['request_id']}"]
    if explained:
        _explain(reply, _attributes(explained[0]))
    return reply
