"""AuditQueryStore: reading an org's audit trail back. Listing is a keyset walk in (event_time,
event_id) order with ids compared bytewise, so a page token means the same on every database
and a walk neither repeats nor skips events; each filter narrows, none leaks another org's
events. A request's story is its decision, its settlement and its first events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.contract.rows import directory
from warden.store.audit_query import AuditFilter


@pytest.fixture
async def t0(directory_store, seed) -> datetime:
    """The usual directory, and a time a day ago, whole to the second."""
    await directory(directory_store)
    return (await seed.now() - timedelta(days=1)).replace(microsecond=0)


async def _walk(store, org_id: str, where: AuditFilter, limit: int) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        page = await store.list_events(org_id, where, after, limit)
        assert len(page) <= limit
        ids += [e["event_id"] for e in page]
        if len(page) < limit:
            return ids
        assert len(ids) <= 100, f"the walk does not end: {ids[:20]}..."
        after = (page[-1]["event_time"], page[-1]["event_id"])


async def test_events_are_listed_in_time_then_bytewise_id_order(audit_query_store, seed, t0):
    """Same-time ids differing in case and punctuation: a locale's collation would order them
    differently (and page tokens with it)."""
    tie = ["b", "a_b", "ab", "aB", "a-b", "A"]
    for event_id in tie:
        await seed.store_event("acme", event_id, t0, app_id="chat")
    await seed.store_event("acme", "zz-first", t0 - timedelta(seconds=1), app_id="chat")
    await seed.store_event("acme", "00-last", t0 + timedelta(microseconds=1), app_id="chat")
    expected = ["zz-first", *sorted(tie, key=str.encode), "00-last"]
    assert expected[1:7] == ["A", "a-b", "aB", "a_b", "ab", "b"]
    for limit in (1, 2, 3, 100):
        assert await _walk(audit_query_store, "acme", AuditFilter(), limit) == expected


async def test_after_is_strictly_after_in_that_order(audit_query_store, seed, t0):
    for event_id, at in (("e1", t0), ("e2", t0), ("e0", t0 + timedelta(seconds=1))):
        await seed.store_event("acme", event_id, at, app_id="chat")

    async def ids(after):
        return [e["event_id"] for e in
                await audit_query_store.list_events("acme", AuditFilter(), after, 10)]

    assert await ids((t0, "e1")) == ["e2", "e0"]
    assert await ids((t0, "e2")) == ["e0"]
    assert await ids((t0, "")) == ["e1", "e2", "e0"]
    assert await ids((t0 + timedelta(seconds=1), "e0")) == []


async def test_a_walk_is_not_disturbed_by_events_stored_meanwhile(audit_query_store, seed, t0):
    """Events arrive while an operator pages: nothing seen repeats, nothing after the cursor is
    pushed out of the walk."""
    for i in range(4):
        await seed.store_event("acme", f"e{i}", t0 + timedelta(seconds=i), app_id="chat")
    first = await audit_query_store.list_events("acme", AuditFilter(), None, 2)
    assert [e["event_id"] for e in first] == ["e0", "e1"]
    await seed.store_event("acme", "early", t0 - timedelta(seconds=1), app_id="chat")
    await seed.store_event("acme", "late", t0 + timedelta(seconds=9), app_id="chat")
    rest = await audit_query_store.list_events(
        "acme", AuditFilter(), (first[-1]["event_time"], first[-1]["event_id"]), 10)
    assert [e["event_id"] for e in rest] == ["e2", "e3", "late"]


async def test_each_filter_narrows_the_listing(audit_query_store, seed, t0):
    events = (("e1", 0, "chat", "llm.call", "r1", "ann", "gpt-4o"),
              ("e2", 1, "batch", "llm.call", "r2", "bob", "o3"),
              ("e3", 2, "chat", "tool.call", "r1", "bob", "gpt-4o"),
              ("e4", 3, "chat", "llm.call", "", "", ""))
    for event_id, seconds, app_id, action, request_id, user_id, model in events:
        await seed.store_event("acme", event_id, t0 + timedelta(seconds=seconds), app_id=app_id,
                               action=action, request_id=request_id, user_id=user_id,
                               model=model)
    await seed.store_event("globex", "g1", t0, app_id="chat", action="llm.call",
                           request_id="r1", user_id="ann", model="gpt-4o")

    async def ids(**where) -> list[str]:
        return [e["event_id"] for e in
                await audit_query_store.list_events("acme", AuditFilter(**where), None, 100)]

    assert await ids() == ["e1", "e2", "e3", "e4"]
    assert await ids(app_id="chat") == ["e1", "e3", "e4"]
    assert await ids(user_id="bob") == ["e2", "e3"]
    assert await ids(action="tool.call") == ["e3"]
    assert await ids(model="gpt-4o") == ["e1", "e3"]
    assert await ids(request_id="r1") == ["e1", "e3"]
    assert await ids(app_id="chat", user_id="bob", model="gpt-4o") == ["e3"]
    assert await ids(start=t0 + timedelta(seconds=1), end=t0 + timedelta(seconds=3)) == \
        ["e2", "e3"]
    assert await ids(start=t0 + timedelta(seconds=3)) == ["e4"]
    assert await ids(end=t0 + timedelta(seconds=1)) == ["e1"]
    assert [e["event_id"] for e in await audit_query_store.list_events(
        "globex", AuditFilter(), None, 100)] == ["g1"]
    assert await audit_query_store.list_events("nope", AuditFilter(), None, 100) == []


async def test_the_decision_filter_keeps_events_of_requests_so_decided(audit_query_store, seed,
                                                                       t0):
    await seed.log_request("acme", "r-allow", t0, app_id="chat")
    await seed.log_request("acme", "r-deny", t0, app_id="chat", decision="deny",
                           reason="RATE_LIMITED")
    await seed.log_request("globex", "r-other", t0, app_id="g-app", decision="deny",
                           reason="RATE_LIMITED")
    for event_id, request_id in (("e1", "r-allow"), ("e2", "r-deny"), ("e3", "unlogged"),
                                 ("e4", ""), ("e5", "r-other")):
        await seed.store_event("acme", event_id, t0, app_id="chat", request_id=request_id)

    async def ids(decision: str) -> list[str]:
        return [e["event_id"] for e in await audit_query_store.list_events(
            "acme", AuditFilter(decision=decision), None, 100)]

    assert await ids("allow") == ["e1"]
    assert await ids("deny") == ["e2"]
    assert await ids("") == ["e1", "e2", "e3", "e4", "e5"]


async def test_rows_carry_decoded_attributes_and_a_decisions_snapshot(audit_query_store, seed,
                                                                      t0):
    """A decision's explanation names its snapshot by id; the reader gets the snapshot's body
    with it. Another event's "snapshot" attribute is its own business."""
    body = {"results": [["p1", "app:chat", "rate_limit", "enforce"]]}
    await seed.store_snapshot("acme", "s1", body)
    await seed.store_snapshot("globex", "s2", {"other": True})
    await seed.store_event("acme", "decision:r1", t0, app_id="chat",
                           action="authorize.decision", request_id="r1",
                           attributes={"snapshot": "s1", "decision": "allow"})
    await seed.store_event("acme", "decision:r2", t0 + timedelta(seconds=1), app_id="chat",
                           action="authorize.decision", request_id="r2",
                           attributes={"snapshot": "s2"})
    await seed.store_event("acme", "note", t0 + timedelta(seconds=2), app_id="chat",
                           action="llm.call", request_id="r1",
                           attributes={"snapshot": "s1", "n": [1, 2], "nested": {"k": "v"}})
    rows = await audit_query_store.list_events("acme", AuditFilter(), None, 10)
    assert [(r["event_id"], r["snapshot"]) for r in rows] == [
        ("decision:r1", body), ("decision:r2", None), ("note", None)]
    assert rows[0]["attributes"] == {"snapshot": "s1", "decision": "allow"}
    assert rows[2]["attributes"] == {"snapshot": "s1", "n": [1, 2], "nested": {"k": "v"}}
    assert (rows[0]["org_id"], rows[0]["app_id"], rows[0]["action"], rows[0]["request_id"],
            rows[0]["event_time"]) == ("acme", "chat", "authorize.decision", "r1", t0)
    assert rows[0]["receive_time"] is not None


async def test_a_request_story_is_its_decision_settlement_and_first_events(audit_query_store,
                                                                          seed, t0):
    await seed.log_request("acme", "r1", t0, app_id="chat", model="gpt-4o", input_tokens=12,
                           reserved_cost_micros=99)
    await seed.log_request("globex", "r1", t0, app_id="g-app", model="o3")
    for i in range(4):
        await seed.store_event("acme", f"e{i}", t0 + timedelta(seconds=3 - i), app_id="chat",
                               request_id="r1")
    await seed.store_event("acme", "unrelated", t0, app_id="chat", request_id="r2")
    await seed.store_event("globex", "g-event", t0, app_id="g-app", request_id="r1")

    decision, events = await audit_query_store.request_story("acme", "r1", 3)
    assert (decision["org_id"], decision["request_id"], decision["model"],
            decision["input_tokens"], decision["reserved_cost_micros"]) == (
        "acme", "r1", "gpt-4o", 12, 99)
    assert all(decision[c] is None for c in (
        "used_input_tokens", "used_output_tokens", "used_cached_input_tokens",
        "used_cost_micros", "cost_source", "outcome", "latency_ms", "record_time"))
    assert [e["event_id"] for e in events] == ["e3", "e2", "e1"]

    await seed.settle("acme", "r1", 10, 20, 300, cached_input_tokens=4, outcome="completed",
                      latency_ms=150)
    decision, events = await audit_query_store.request_story("acme", "r1", 10)
    assert (decision["used_input_tokens"], decision["used_output_tokens"],
            decision["used_cached_input_tokens"], decision["used_cost_micros"],
            decision["cost_source"], decision["used_model"], decision["outcome"],
            decision["latency_ms"]) == (10, 20, 4, 300, "reported", "gpt-4o", "completed", 150)
    assert decision["record_time"] == t0 + timedelta(seconds=1)
    assert [e["event_id"] for e in events] == ["e3", "e2", "e1", "e0"]


async def test_a_story_without_a_logged_decision(audit_query_store, seed, t0):
    """Events may name a request id no decision was logged for (or not yet: the journal is
    behind); the story still tells them."""
    await seed.store_event("acme", "e1", t0, app_id="chat", request_id="r-unlogged")
    assert [(d, [e["event_id"] for e in events]) for d, events in
            [await audit_query_store.request_story("acme", "r-unlogged", 10)]] == [(None, ["e1"])]
    assert await audit_query_store.request_story("acme", "nope", 10) == (None, [])
