"""Decision cases as data: each file in cases/ holds an identity (with its teams), a request,
policies as stored rows (config in proto3 JSON), provider switches, model prices, how much of
each quota is already used, and the expected decision with its explanation and route."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from warden import engine
from warden.engine import (
    AuthorizeInput,
    Identity,
    ProviderSwitch,
    QuotaOutcome,
    policy_from_row,
)
from warden.engine.pricing import Price

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))
NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    identity = Identity(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in case["identity"].items()})
    policies = [policy_from_row({"mode": "enforce", **p}) for p in case.get("policies", [])]
    switches = [ProviderSwitch(**s) for s in case.get("switches", [])]
    prices = {(p["provider"], p["model"]): Price(p["input"], p["output"], p["input"])
              for p in case.get("prices", [])}
    expect = case["expect"]
    try:
        plan = engine.plan(identity, AuthorizeInput(**case["request"]), policies, switches,
                           prices)
    except engine.Unpriced as exc:
        assert expect.get("unpriced") == exc.policy_id
        return
    assert [c.policy.id for c in plan.checks] == expect.get("checked", [])

    # What each quota has left, as the quota layer would see it; then take all or nothing.
    rooms = [c.policy.limit - case.get("used", {}).get(c.policy.id, 0) for c in plan.checks]
    want = plan.route.max_output_tokens if plan.route else 0
    got = engine.fit(plan.checks, rooms, want, plan.min_output_tokens)
    allowed = all(ok for c, ok in zip(plan.checks, got.fits, strict=True) if c.policy.enforced)
    outcomes = [QuotaOutcome(c, ok, c.demand.amount(got.max_output) if allowed and ok else 0,
                             room - (c.demand.amount(got.max_output) if allowed and ok else 0),
                             NOW, NOW + timedelta(seconds=30), binding=bound)
                for c, room, ok, bound in zip(plan.checks, rooms, got.fits, got.binding,
                                              strict=True)]
    decision = engine.decide(plan, outcomes, got.max_output if plan.route else None)

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
