"""Each decision case of cases/ (see engine_cases.py) decides as its file expects."""

from pathlib import Path

import pytest

from tests.unit.engine_cases import CASES, run


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    ran = run(path)
    expect = ran.case["expect"]
    if ran.decision is None:
        assert expect.get("unpriced") == ran.unpriced
        return
    decision, plan = ran.decision, ran.plan
    assert [c.policy.id for c in plan.checks] == expect.get("checked", [])
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
    redacted = decision.redactions.contents if decision.redactions else None
    assert redacted == (tuple(expect["redacted"]) if "redacted" in expect else None)


def test_there_are_cases() -> None:
    assert len(CASES) >= 15
