"""Authorize's answer encoded from a compiled set's pre-encoded parts (api/answer.py) decodes to
exactly the message built field by field from the decision (plain() here), for every engine
case: allowed and denied, capped and lowered, static denials, cost caps, retry_after."""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from tests.unit.engine_cases import CASES, run
from warden.api import convert
from warden.api.answer import authorize_response
from warden.authorizer import Authorization
from warden.engine import PolicyResult, QuotaOutcome
from warden.v1 import types_pb2, warden_pb2

DECIDED = [p for p in CASES if run(p).decision is not None]


def _result(r: PolicyResult) -> warden_pb2.PolicyResult:
    return warden_pb2.PolicyResult(
        policy_id=r.policy_id, scope=convert.scope(r.scope_kind, r.scope_id),
        policy_type=r.policy_type, mode=convert.MODES[r.mode], allowed=r.allowed,
        reason=convert.reason(r.reason.value), message=r.message)


def _limit(outcome: QuotaOutcome) -> warden_pb2.LimitStatus:
    policy = outcome.check.policy
    return warden_pb2.LimitStatus(
        policy_id=policy.id, scope=convert.scope(policy.scope_kind, policy.scope_id),
        metric=convert.METRICS[policy.metric], limit=policy.limit,
        remaining=min(max(outcome.remaining, 0), policy.limit)
        if outcome.remaining is not None else 0,
        reset_time=convert.timestamp(outcome.reset_time))


def _duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    micros = max(value, timedelta(0)) // timedelta(microseconds=1)
    return duration_pb2.Duration(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


def plain(a: Authorization) -> warden_pb2.AuthorizeResponse:
    """The answer built message by message from the decision."""
    decision, identity, route = a.decision, a.compiled.identity, None
    if decision.route is not None:
        r = decision.route
        route = warden_pb2.Route(
            provider=r.provider, model=r.model, max_output_tokens=r.max_output_tokens,
            fallbacks=[types_pb2.RouteTarget(provider=t.provider, model=t.model)
                       for t in r.fallbacks])
    return warden_pb2.AuthorizeResponse(
        decision=warden_pb2.DECISION_ALLOW if decision.allowed else warden_pb2.DECISION_DENY,
        reason=convert.reason(decision.reason.value),
        results=[_result(r) for r in decision.results],
        limits=[_limit(o) for o in decision.limits],
        route=route,
        retry_after=_duration(decision.retry_after),
        reservation_id=a.reservation_id,
        identity=warden_pb2.Identity(org_id=identity.org_id, app_id=identity.app_id,
                                     user_id=identity.user_id, api_key_id=identity.api_key_id),
        redactions=[warden_pb2.Redaction(message_index=f.message, start=f.start, end=f.end,
                                         kind=f.kind, replacement=f"[{f.kind.upper()}]")
                    for f in decision.redactions.spans] if decision.redactions else [],
        redacted_messages=[warden_pb2.ChatMessage(role=m.role, content=c) for m, c in zip(
            a.plan.request.messages, decision.redactions.contents, strict=True)]
        if decision.redactions else [])


@pytest.mark.parametrize("path", DECIDED, ids=[p.stem for p in DECIDED])
def test_the_encoded_answer_is_the_plain_one(path: Path) -> None:
    ran = run(path)
    a = Authorization(ran.compiled, ran.plan, ran.decision, "0123456789abcdef" * 2)
    first = authorize_response(a)
    assert warden_pb2.AuthorizeResponse.FromString(first) == plain(a)
    assert authorize_response(a) == first  # again, from the parts kept with the set


def test_limits_without_reset_or_remaining_encode_as_the_plain_path_does() -> None:
    ran = next(r for r in map(run, DECIDED) if r.decision.limits)
    limits = [replace(o, remaining=None, reset_time=None) for o in ran.decision.limits]
    limits[0] = replace(limits[0], remaining=-5)
    a = Authorization(ran.compiled, ran.plan, replace(ran.decision, limits=limits), "r" * 32)
    assert warden_pb2.AuthorizeResponse.FromString(authorize_response(a)) == plain(a)


def test_there_are_cases_of_every_kind() -> None:
    decisions = [run(p).decision for p in DECIDED]
    assert any(d.allowed for d in decisions) and any(not d.allowed for d in decisions)
    assert any(d.retry_after for d in decisions) and any(d.limits for d in decisions)
    assert any(run(p).compiled.route is None for p in DECIDED)  # a static denial
