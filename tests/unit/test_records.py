"""The decision record encoded from a compiled set's fragments (records.DecisionJSON) is the
same JSON value as the one built from dicts (records.decision_record with its explanation),
for every allowed engine case whose results are its set's own, explained or not, for a
caller's own end user and for another."""

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tests.unit.engine_cases import CASES, run
from warden.engine import Part
from warden.engine.audit import explanation
from warden.records import DecisionJSON, decision_record
from warden.reservations import _own_results

BUCKET = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ELIGIBLE = [p for p in CASES if (r := run(p)).decision is not None and r.decision.allowed
            and _own_results(r.plan, r.decision)]


@pytest.mark.parametrize("explained", [False, True])
@pytest.mark.parametrize("user", ["", "someone else"])
@pytest.mark.parametrize("path", ELIGIBLE, ids=[p.stem for p in ELIGIBLE])
def test_the_fragments_give_the_record_the_dicts_give(path, explained, user) -> None:
    ran = run(path)
    plan = replace(ran.plan, request=replace(ran.plan.request, user_id=user))
    decision = ran.decision
    parts = tuple(Part(o.check.policy.id, BUCKET if n % 2 == 0 else None, o.check.policy.metric,
                       o.amount, BUCKET.isoformat() if n % 2 == 0 else None)
                  for n, o in enumerate(decision.limits) if o.amount)
    snapshot = ran.compiled.snapshot(plan, decision) if explained else None
    decision = replace(decision, limits=[replace(o, reset_text=o.reset_time.isoformat())
                                         for o in decision.limits])
    created, expires = "2026-01-01T12:00:30+00:00", "2026-01-01T12:10:30+00:00"
    cost = ran.compiled.worst_cost(plan, decision)
    price = ran.compiled.price if ran.compiled.price_is_default else None
    fast = DecisionJSON(ran.compiled).encode(plan, decision, parts, "d" * 32, created, expires,
                                             cost, snapshot.id if snapshot else None)
    slow = decision_record(ran.compiled.identity, plan.request, decision, "d" * 32, parts, cost,
                           price, created, expires)
    if snapshot is not None:
        slow["explanation"] = explanation(decision, snapshot)
    assert json.loads(fast) == slow


def test_there_are_eligible_cases() -> None:
    assert len(ELIGIBLE) >= 5
