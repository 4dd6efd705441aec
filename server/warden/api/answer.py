"""Authorize's answer as wire bytes, from parts pre-encoded once per compiled policy set.

Why: building an AuthorizeResponse message field by field (six results, four limits with
their scopes and timestamps, the route, the identity) and serializing it cost more CPU than the
whole decision. Most of those bytes are the same for every call of a compiled set: each
result, each limit's policy, scope, metric and limit, the route's provider, model and
fallbacks, the identity. They are encoded once (with protobuf itself) into the set's `derived`
memo, which lives and dies with the set; per call only the decision, the limits' remaining and
reset times, the route's max_output_tokens, retry_after, the reservation id, any result that
is not a set's own and a PII policy's redactions are encoded, and the pieces joined. Protobuf
parsers accept fields in any order and concatenated submessage bytes, so the bytes decode to
exactly the message built field by field from the decision: tests/unit/test_answer.py checks
that on every engine case. Authorize's handler is registered to send these bytes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from warden.api import convert
from warden.api.wire import field as _field
from warden.api.wire import number as _number
from warden.authorizer import Authorization
from warden.engine import CompiledSet, PolicyRecord, PolicyResult
from warden.engine.model import Redactions
from warden.guardrails.pii import replacement
from warden.v1 import types_pb2, warden_pb2

_EPOCH_MICROS = convert.epoch_micros


def _seconds_nanos(seconds: int, nanos: int) -> bytes:
    """A Timestamp or Duration body."""
    return _number(1, seconds) + _number(2, nanos)


def _result(result: PolicyResult) -> bytes:
    return _field(3, warden_pb2.PolicyResult(
        policy_id=result.policy_id, scope=convert.scope(result.scope_kind, result.scope_id),
        policy_type=result.policy_type, mode=convert.MODES[result.mode],
        allowed=result.allowed, reason=convert.reason(result.reason.value),
        message=result.message).SerializeToString())


@dataclass(frozen=True, slots=True)
class _Parts:
    fixed: bytes  # the set's fixed results
    fixed_capped: bytes
    admitted: tuple[bytes, ...]  # per quota term: its plain-allow result
    limits: tuple[tuple[bytes, int], ...]  # per quota term: LimitStatus without its state; limit
    # Per quota term: the last reset time encoded, and its reset_time field (a lease's reset
    # time changes with its grants, not with every call).
    resets: list[tuple[datetime | None, bytes]]
    route: bytes  # Route without max_output_tokens
    identity: bytes  # the identity field
    denied: bytes  # the whole answer, when every target of the set is refused for good
    # By policy id, for the policies whose results each call works out (guardrails, cost
    # caps): a PolicyResult's policy_id, scope, policy_type and mode.
    heads: dict[str, bytes]


def _parts(compiled: CompiledSet) -> _Parts:
    identity = compiled.identity
    identity_field = _field(8, warden_pb2.Identity(
        org_id=identity.org_id, app_id=identity.app_id, user_id=identity.user_id,
        api_key_id=identity.api_key_id).SerializeToString())
    route = compiled.route
    denied = b""
    if route is None and compiled.probe is None:  # else its retry_after varies per call
        (denial,) = compiled.fixed
        denied = (_number(1, warden_pb2.DECISION_DENY)
                  + _number(2, convert.reason(denial.reason.value)) + _result(denial)
                  + identity_field)
    return _Parts(
        b"".join(map(_result, compiled.fixed)), b"".join(map(_result, compiled.fixed_capped)),
        tuple(_result(t.admitted) for t in compiled.terms),
        tuple((warden_pb2.LimitStatus(
            policy_id=t.policy.id, scope=convert.scope(t.policy.scope_kind, t.policy.scope_id),
            metric=convert.METRICS[t.policy.metric], limit=t.policy.limit).SerializeToString(),
            t.policy.limit) for t in compiled.terms),
        [(None, b"")] * len(compiled.terms),
        warden_pb2.Route(provider=route.provider, model=route.model, fallbacks=[
            types_pb2.RouteTarget(provider=f.provider, model=f.model) for f in route.fallbacks]
        ).SerializeToString() if route else b"",
        identity_field, denied, {p.id: warden_pb2.PolicyResult(
            policy_id=p.id, scope=convert.scope(p.scope_kind, p.scope_id),
            policy_type=p.policy_type, mode=convert.MODES[p.mode]).SerializeToString()
            for p in _per_call(compiled)})


def _per_call(compiled: CompiledSet) -> list[PolicyRecord]:
    """The policies whose results a call of the set works out itself."""
    pii = compiled.pii.policies if compiled.pii is not None else ()
    return [*pii, *compiled.rag, *compiled.injection, *(t.policy for t in compiled.cost_caps)]


def _own_result(result: PolicyResult, heads: dict[str, bytes]) -> bytes:
    """_result() of a result of one of the set's per-call policies, from its head."""
    head = heads.get(result.policy_id)
    if head is None:
        return _result(result)
    return _field(3, b"".join((head, _number(5, result.allowed),
                               _number(6, convert.reason(result.reason.value)),
                               _field(7, result.message.encode()) if result.message else b"")))


def _timestamp(value: datetime) -> bytes:
    micros = _EPOCH_MICROS(value)
    return _seconds_nanos(micros // 1_000_000, micros % 1_000_000 * 1000)


def _duration(value: timedelta) -> bytes:
    micros = max(value, timedelta(0)) // timedelta(microseconds=1)
    return _seconds_nanos(micros // 1_000_000, micros % 1_000_000 * 1000)


_ALLOWED = _number(1, warden_pb2.DECISION_ALLOW) + _number(2, types_pb2.REASON_ALLOWED)


def authorize_response(a: Authorization) -> bytes:
    """The serialized AuthorizeResponse of an Authorization."""
    compiled, plan, decision = a.compiled, a.plan, a.decision
    parts = compiled.derived.get("grpc")
    if parts is None:
        parts = compiled.derived["grpc"] = _parts(compiled)
    if parts.denied:
        return parts.denied
    if decision.allowed:
        out = [_ALLOWED]
    else:
        out = [_number(1, warden_pb2.DECISION_DENY),
               _number(2, convert.reason(decision.reason.value))]
    out.append(parts.fixed if plan.fixed is compiled.fixed else parts.fixed_capped)
    results, limits = decision.results, decision.limits
    quota_from = len(results) - len(limits)
    out += [_own_result(r, parts.heads) for r in results[len(plan.fixed):quota_from]]
    if limits:  # one quota result and one limit per term of the set, in its order
        for i, (r, term) in enumerate(zip(results[quota_from:], compiled.terms, strict=True)):
            out.append(parts.admitted[i] if r is term.admitted else _result(r))
        resets = parts.resets
        for i, ((head, limit), outcome) in enumerate(zip(parts.limits, limits, strict=True)):
            remaining, reset = outcome.remaining, outcome.reset_time
            if resets[i][0] is not reset:
                resets[i] = (reset, _field(6, _timestamp(reset)) if reset is not None else b"")
            body = b"".join((head, _number(5, min(max(remaining, 0), limit)
                                          if remaining is not None else 0), resets[i][1]))
            out.append(_field(4, body))
    if decision.route is not None:
        out.append(_field(5, parts.route + _number(3, decision.route.max_output_tokens)))
    if decision.retry_after is not None:
        out.append(_field(6, _duration(decision.retry_after)))
    if decision.allowed:
        out.append(_field(7, a.decision_id.encode()))
    out.append(parts.identity)
    if decision.redactions is not None:
        out.append(redactions(decision.redactions, plan.request.messages))
    return b"".join(out)


def redactions(r: Redactions, messages) -> bytes:
    """The redactions and redacted_messages fields (messages: the request's, for their roles)."""
    return warden_pb2.AuthorizeResponse(
        redactions=[warden_pb2.Redaction(message_index=f.message, start=f.start, end=f.end,
                                         kind=f.kind, replacement=replacement(f.kind))
                    for f in r.spans],
        redacted_messages=[warden_pb2.ChatMessage(role=m.role, content=text)
                           for m, text in zip(messages, r.contents, strict=True)]
    ).SerializeToString()
