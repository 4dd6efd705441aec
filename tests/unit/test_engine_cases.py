"""Decision cases as data: each file in cases/ holds an identity, a request, policies, what the
counter store admits, and the expected decision with its explanation."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from warden import engine
from warden.engine import (
    AuthorizeInput,
    Identity,
    LimitOutcome,
    PolicyRecord,
    RateLimit,
)

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))
NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def _policy(data: dict) -> PolicyRecord:
    limit = data.get("rate_limit")
    return PolicyRecord(data["id"], data["scope_kind"], data["scope_id"], data["policy_type"],
                        data.get("mode", "enforce"), RateLimit(**limit) if limit else None)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = json.loads(path.read_text())
    identity = Identity(**{**case["identity"],
                           "allowed_models": tuple(case["identity"].get("allowed_models", ()))})
    plan = engine.plan(identity, AuthorizeInput(**case["request"]),
                       [_policy(p) for p in case["policies"]])
    assert [c.policy.id for c in plan.checks] == case["expect"]["checked"]
    used = case.get("used", {})
    outcomes = []
    for check in plan.checks:
        count, limit = used.get(check.policy.id, 0), check.policy.rate_limit.limit
        admitted = count + check.amount <= limit
        outcomes.append(LimitOutcome(check, admitted, count + check.amount if admitted else count,
                                     NOW, NOW + timedelta(seconds=30)))
    decision = engine.decide(plan, outcomes)
    expect = case["expect"]
    assert decision.allowed == expect["allowed"]
    assert decision.reason.value == expect["reason"]
    assert [(r.policy_id, r.allowed, r.reason.value) for r in decision.results] == \
        [tuple(r) for r in expect["results"]]
    retry = decision.retry_after.total_seconds() if decision.retry_after else None
    assert retry == expect.get("retry_after_seconds")


def test_there_are_cases() -> None:
    assert len(CASES) >= 4
