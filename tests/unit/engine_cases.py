"""Decision cases as data: each file in cases/ holds an identity (with its teams), a request,
policies as stored rows (config in proto3 JSON), provider switches, open circuits (with
`probe: true`, the call is the probe of the set's circuit), model prices, how much of each quota
is already used, and the expected decision with its explanation and route. `run` compiles the
case's set, plans the call and decides it as the quota layer would."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from warden import engine
from warden.engine import (
    AuthorizeInput,
    Circuit,
    CompiledSet,
    Decision,
    Identity,
    Plan,
    ProviderSwitch,
    QuotaOutcome,
    policy_from_row,
)
from warden.engine.pricing import Price

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))
NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


@dataclass
class Ran:
    case: dict[str, Any]
    compiled: CompiledSet
    plan: Plan | None  # None: the set raised Unpriced
    decision: Decision | None
    unpriced: str = ""


def run(path: Path) -> Ran:
    case = yaml.safe_load(path.read_text())
    identity = Identity(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in case["identity"].items()})
    policies = [policy_from_row({"mode": "enforce", **p}) for p in case.get("policies", [])]
    switches = [ProviderSwitch(**s) for s in case.get("switches", [])]
    circuits = [Circuit(**{"state": "open", "forced": False, "reason": "", **c,
                           "retry_time": NOW + timedelta(seconds=c.get("retry_time", 0))})
                for c in case.get("circuits", [])]
    prices = {(p["provider"], p["model"]): Price(p["input"], p["output"], p["input"])
              for p in case.get("prices", [])}
    request = AuthorizeInput(**{**case["request"], "messages": [
        SimpleNamespace(**m) for m in case["request"].get("messages", ())]})
    compiled = engine.compile_set(identity, request.model, request.provider, policies,
                                  switches, prices, circuits=circuits)
    assert (compiled.probe is not None) == case.get("probed", False)
    if case.get("probe"):
        assert compiled.probe is not None
        compiled = compiled.probe.compiled
    try:
        plan = compiled.plan(request)
    except engine.Unpriced as exc:
        return Ran(case, compiled, None, None, exc.policy_id)
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
    return Ran(case, compiled, plan,
               engine.decide(plan, outcomes, got.max_output if plan.route else None, NOW))
