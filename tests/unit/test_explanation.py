"""An explanation and its snapshot (engine/audit.py): split, joined back, and what is read as
stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from warden.engine.audit import expand, explanation, snapshot_of
from warden.engine.model import (
    Decision,
    Demand,
    PolicyResult,
    QuotaCheck,
    QuotaOutcome,
    Reason,
    Route,
    policy_from_row,
)

RESET = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)


def decision(allowed: bool) -> Decision:
    policy = policy_from_row({
        "id": "rpm", "scope_kind": "app", "scope_id": "chat", "policy_type": "rate_limit",
        "mode": "enforce", "config": {"metric": "METRIC_REQUESTS", "window": "WINDOW_MINUTE",
                                      "limit": 10}})
    results = [PolicyResult("access", "org", "o", "model_access", "enforce", True, Reason.ALLOWED),
               PolicyResult("rpm", "app", "chat", "rate_limit", "enforce", allowed,
                            Reason.ALLOWED if allowed else Reason.RATE_LIMITED,
                            "" if allowed else "10 requests a minute")]
    outcome = QuotaOutcome(QuotaCheck(policy, Demand(1)), allowed, int(allowed),
                           9 if allowed else 0, RESET - timedelta(seconds=30), RESET,
                           reset_text=RESET.isoformat())
    return Decision(allowed, Reason.ALLOWED if allowed else Reason.RATE_LIMITED, results,
                    [outcome], None if allowed else timedelta(seconds=30),
                    Route("openai", "gpt-4o", 100) if allowed else None)


def explained(d: Decision):
    snapshot = snapshot_of(d)
    return explanation(d, snapshot), snapshot


def test_an_explanation_keeps_what_varies_and_expands_in_full() -> None:
    attributes, snapshot = explained(decision(True))
    assert attributes == {"decision": "allow", "reason": "ALLOWED", "snapshot": snapshot.id,
                          "limits": [[9, RESET.isoformat()]],
                          "route": ["openai", "gpt-4o", 100, []]}
    assert expand(attributes, snapshot.body) == {
        "decision": "allow", "reason": "ALLOWED", "route": ["openai", "gpt-4o", 100, []],
        "results": [["access", "org:o", "model_access", "enforce", True, "ALLOWED", ""],
                    ["rpm", "app:chat", "rate_limit", "enforce", True, "ALLOWED", ""]],
        "limits": [["rpm", "app:chat", "REQUESTS", 10, 9, RESET.isoformat()]]}


def test_a_denial_carries_its_results_and_shares_the_snapshot() -> None:
    allowed, snapshot = explained(decision(True))
    denied, same = explained(decision(False))
    assert same == snapshot  # the same policies: one snapshot
    assert denied["results"] == [[1, False, "RATE_LIMITED", "10 requests a minute"]]
    assert expand(denied, snapshot.body)["results"][1] == [
        "rpm", "app:chat", "rate_limit", "enforce", False, "RATE_LIMITED",
        "10 requests a minute"]
    assert denied["retry_after_seconds"] == 30


def test_what_does_not_fit_is_read_as_stored() -> None:
    attributes, snapshot = explained(decision(True))
    assert expand(attributes, None) == attributes  # the snapshot is missing
    assert expand(attributes, {"results": [], "limits": []}) == attributes  # another shape
    whole = expand(attributes, snapshot.body)
    assert expand(whole, snapshot.body) == whole  # no snapshot id: as stored
    assert expand({"snapshot": 1, "limits": "***"}, snapshot.body) == {
        "snapshot": 1, "limits": "***"}
    for results in ([[2, True, "ALLOWED", ""]], [[0, True]], [["a", 1, 2, 3]], "***"):
        odd = dict(attributes, results=results)
        assert expand(odd, snapshot.body) == odd
