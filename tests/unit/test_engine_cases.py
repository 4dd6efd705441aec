"""Decision cases as data: each file in cases/ holds an identity (with its teams), a request,
policies as stored rows (config in proto3 JSON), provider switches, what the counter store
admits, and the expected decision with its explanation and route."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from warden import engine
from warden.engine import AuthorizeInput, Identity, LimitOutcome, ProviderSwitch, policy_from_row

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))
NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    identity = Identity(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in case["identity"].items()})
    policies = [policy_from_row({"mode": "enforce", **p}) for p in case.get("policies", [])]
    switches = [ProviderSwitch(**s) for s in case.get("switches", [])]
    plan = engine.plan(identity, AuthorizeInput(**case["request"]), policies, switches)
    expect = case["expect"]
    assert [c.policy.id for c in plan.checks] == expect.get("checked", [])

    used = case.get("used", {})
    outcomes = []
    for check in plan.checks:
        count, limit = used.get(check.policy.id, 0), check.policy.rate_limit.limit
        admitted = count + check.amount <= limit
        outcomes.append(LimitOutcome(check, admitted, count + check.amount if admitted else count,
                                     NOW, NOW + timedelta(seconds=30)))
    decision = engine.decide(plan, outcomes)

    assert decision.allowed == expect["allowed"]
    assert decision.reason.value == expect["reason"]
    got = [(r.policy_id, r.allowed, r.reason.value) for r in decision.results]
    assert got == [tuple(r[:3]) for r in expect["results"]]
    for result, wanted in zip(decision.results, expect["results"], strict=True):
        if len(wanted) > 3:
            assert wanted[3] in result.message, (result.policy_id, result.message)
    retry = decision.retry_after.total_seconds() if decision.retry_after else None
    assert retry == expect.get("retry_after_seconds")
    route = expect.get("route")
    if route is None:
        assert decision.route is None
    else:
        assert decision.route is not None
        assert (decision.route.provider, decision.route.model,
                decision.route.max_output_tokens) == (route["provider"], route["model"],
                                                      route.get("max_output_tokens", 0))
        assert [[t.provider, t.model] for t in decision.route.fallbacks] == \
            route.get("fallbacks", [])


def test_there_are_cases() -> None:
    assert len(CASES) >= 15
