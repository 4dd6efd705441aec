"""The audit setting: decision-log sampling per org, prompts kept out unless asked for, masked
and hashed attributes; and its bad input."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime

import grpc
from google.protobuf import json_format, struct_pb2

from tests.conftest import KEY_PEPPER
from tests.helpers import authorize_request, expect_error, rate_limit, tenant
from warden.engine.audit import expand, sampled
from warden.v1 import admin_pb2, types_pb2, warden_pb2

ORG = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id="acme")


async def audit_policy(client, scope=ORG, **config) -> types_pb2.Policy:
    reply = await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        scope=scope, audit=types_pb2.AuditConfig(**config))), metadata=client.auth)
    return reply.policy


async def decision_events(db) -> dict[str, dict]:
    """Each stored explanation in its full form: its snapshot joined back in, as Admin does."""
    rows = await db.fetch(
        "SELECT e.request_id, e.attributes, s.body FROM audit_events e"
        " LEFT JOIN explanation_snapshots s ON s.org_id = e.org_id"
        "  AND s.id = e.attributes->>'snapshot' WHERE e.action = 'authorize.decision'")
    return {r["request_id"]: expand(json.loads(r["attributes"]),
                                    r["body"] and json.loads(r["body"])) for r in rows}


async def journaled_decisions(warden) -> list[dict]:
    """The decision records of the journal's segments so far (sealed here), as written."""
    return [json.loads(b) for s in await warden.components.journal.seal()
            for (kind, _), b in zip(s.records, s.bodies, strict=True) if kind == "decision"]


async def test_every_decision_is_explained_by_default(client, db, warden):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="chat-rpm")
    first = await client.warden.Authorize(authorize_request(
        key, "r1", messages=[warden_pb2.ChatMessage(role="user", content="secret plan")]))
    second = await client.warden.Authorize(authorize_request(key, "r2"))
    assert (first.decision, second.decision) == (warden_pb2.DECISION_ALLOW,
                                                 warden_pb2.DECISION_DENY)
    await warden.components.flusher.flush()
    events = await decision_events(db)
    assert events["r1"]["decision"] == "allow" and events["r2"]["decision"] == "deny"
    # Positional lists, fields in engine/audit.py's RESULT, ROUTE and LIMIT order.
    refused = [r for r in events["r2"]["results"] if not r[4]]
    assert [(r[0], r[1], r[5]) for r in refused] == [("chat-rpm", "app:chat", "RATE_LIMITED")]
    assert events["r1"]["route"][1] == "gpt-4o-mini"
    assert events["r1"]["limits"][0][0] == "chat-rpm"
    # Prompt text is not stored without store_prompts.
    assert "messages" not in events["r1"]
    assert "secret plan" not in json.dumps(events)


async def test_an_explanation_stores_its_fixed_fields_once(client, db, warden):
    """Each result's policy, scope, type and mode and each limit's policy, scope, metric and
    limit are a snapshot: journaled with the first decision of a journal segment that refers
    to it, stored once per org, named by id in every explanation."""
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 100, policy_id="chat-rpm")
    for i in range(5):
        await client.warden.Authorize(authorize_request(key, f"r{i}"))
    records = await journaled_decisions(warden)
    assert ["snapshot" in r for r in records] == [True, False, False, False, False]
    assert records[0]["snapshot"]["limits"] == [["chat-rpm", "app:chat", "REQUESTS", 100]]
    await client.warden.Authorize(authorize_request(key, "r5"))  # a new segment: again
    [again] = [r for r in await journaled_decisions(warden) if r["request_id"] == "r5"]
    assert again["snapshot"] == records[0]["snapshot"]
    await warden.components.flusher.flush()
    stored = await db.fetch("SELECT org_id, id FROM explanation_snapshots")
    assert [(r["org_id"], r["id"]) for r in stored] == [
        ("acme", records[0]["explanation"]["snapshot"])]
    raw = [json.loads(r["attributes"]) for r in await db.fetch(
        "SELECT attributes FROM audit_events WHERE action = 'authorize.decision'")]
    # Plain allows: no results of their own; limits [remaining, reset_time].
    assert all(a["snapshot"] == stored[0]["id"] and "results" not in a for a in raw)
    assert sorted(a["limits"][0][0] for a in raw) == [94, 95, 96, 97, 98, 99]
    # Through Admin, every explanation reads in full.
    listed = await client.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(
        org_id="acme", action="authorize.decision"), metadata=client.auth)
    assert len(listed.events) == 6
    for event in listed.events:
        attributes = json.loads(json_format.MessageToJson(event.event.attributes))
        assert "snapshot" not in attributes
        assert attributes["limits"][0][:4] == ["chat-rpm", "app:chat", "REQUESTS", 100]
        assert attributes["results"][0][0] == "chat-rpm" and attributes["results"][0][4]


async def test_an_explanation_is_named_and_timed_by_its_decision(client, db, warden):
    """The journal carries an explanation's attributes only; the flush gives it its decision's
    id, time, user, model and provider. A decision record an earlier Warden journaled carries
    a whole event, and is stored as that event says."""
    key = await tenant(client)
    await client.warden.Authorize(authorize_request(key, "r1"))
    [record] = await journaled_decisions(warden)
    explained = record["explanation"]
    old = {k: v for k, v in record.items() if k not in ("explanation", "snapshot")}
    old.update(request_id="r0", reservation_id=uuid.uuid4().hex, event={
        "event_id": "decision:r0", "event_time": "2026-01-02T03:04:05+00:00",
        "action": "authorize.decision", "request_id": "r0", "user_id": record["user_id"],
        "model": record["model"], "provider": record["provider"], "attributes": explained})
    await warden.components.flusher.flush()
    await warden.components.flusher.apply([("decision", json.dumps(old).encode())])
    rows = {r["request_id"]: r for r in await db.fetch(
        "SELECT e.*, q.create_time, q.user_id AS decision_user FROM audit_events e"
        " JOIN requests q USING (org_id, request_id) WHERE e.action = 'authorize.decision'")}
    new = rows["r1"]
    assert (new["event_id"], new["event_time"], new["user_id"], new["model"]) == \
        ("decision:r1", new["create_time"], new["decision_user"], "gpt-4o-mini")
    assert json.loads(new["attributes"]) == explained and explained["decision"] == "allow"
    assert rows["r0"]["event_id"] == "decision:r0"
    assert rows["r0"]["event_time"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert json.loads(rows["r0"]["attributes"]) == explained


async def test_sampling_logs_every_denial_and_a_share_of_allows(client, db, warden):
    key = await tenant(client)
    await audit_policy(client, allow_sample_rate=0.1, deny_sample_rate=1)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 300, policy_id="chat-rpm")
    for i in range(400):
        await client.warden.Authorize(authorize_request(key, f"r{i}"))
    await warden.components.flusher.flush()
    events = await decision_events(db)
    # The first 300 calls are allowed, the rest denied.
    assert {k for k, e in events.items() if e["decision"] == "deny"} == {
        f"r{i}" for i in range(300, 400)}
    allows = {k for k, e in events.items() if e["decision"] == "allow"}
    assert 10 <= len(allows) <= 60, len(allows)  # about 30 of 300
    # A hash of the request id decides, so every sidecar (and a replay) samples alike.
    assert allows == {f"r{i}" for i in range(300) if sampled(0.1, f"r{i}")}
    # Every call is still in the decision log that reporting and settlement read.
    assert await db.fetchval("SELECT count(*) FROM requests") == 400


async def test_an_app_setting_overrides_the_org_unless_the_org_locks_it(client, db, warden):
    key = await tenant(client)
    app_scope = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")
    await audit_policy(client, allow_sample_rate=1)
    await audit_policy(client, app_scope, allow_sample_rate=0)
    await client.warden.Authorize(authorize_request(key, "quiet"))
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        scope=ORG, locked=True, priority=1, audit=types_pb2.AuditConfig(allow_sample_rate=1))),
        metadata=client.auth)
    await client.warden.Authorize(authorize_request(key, "loud"))
    await warden.components.flusher.flush()
    assert set(await decision_events(db)) == {"loud"}


async def test_prompts_masks_and_hashes_in_audit_events(client, db, warden):
    key = await tenant(client)
    attributes = struct_pb2.Struct()
    attributes.update({"prompt": "tell me the secret", "completion": "no",
                       "user": {"email": "ann@example.com", "plan": "pro"},
                       "card": "4111 1111 1111 1111", "tool": "search"})
    await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[
        warden_pb2.AuditEvent(event_id="plain", action="llm.call", attributes=attributes)]))
    await audit_policy(client, store_prompts=True, mask_fields=["card"],
                       hash_fields=["user.email", "missing.path"])
    await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[
        warden_pb2.AuditEvent(event_id="scrubbed", action="llm.call", attributes=attributes)]))
    await warden.components.flusher.flush()
    stored = {r["event_id"]: json.loads(r["attributes"]) for r in await db.fetch(
        "SELECT event_id, attributes FROM audit_events")}
    # Default: prompt text removed, the rest as sent.
    assert stored["plain"]["prompt"] == stored["plain"]["completion"] != "no"
    assert "secret" not in json.dumps(stored["plain"])
    assert stored["plain"]["card"] == "4111 1111 1111 1111"
    # With the setting: prompts kept, the card masked, the email an HMAC under the pepper.
    s = stored["scrubbed"]
    assert (s["prompt"], s["completion"], s["card"], s["tool"]) == (
        "tell me the secret", "no", "***", "search")
    digest = hmac.new(KEY_PEPPER.encode(), b'"ann@example.com"', hashlib.sha256).hexdigest()
    assert s["user"] == {"email": f"hmac-sha256:{digest}", "plan": "pro"}


async def test_a_masking_setting_stores_explanations_whole(client, db, warden):
    """Masked and hashed paths name the full form, so under such a setting an explanation
    is stored whole, with no snapshot, and read as it is."""
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 100, policy_id="chat-rpm")
    await audit_policy(client, mask_fields=["limits"])
    await client.warden.Authorize(authorize_request(key, "r1"))
    await warden.components.flusher.flush()
    [raw] = [json.loads(r["attributes"]) for r in await db.fetch(
        "SELECT attributes FROM audit_events WHERE action = 'authorize.decision'")]
    assert "snapshot" not in raw and raw["limits"] == "***"
    assert raw["results"][0][:2] == ["chat-rpm", "app:chat"]
    assert await db.fetchval("SELECT count(*) FROM explanation_snapshots") == 0
    story = await client.admin.GetRequestStory(admin_pb2.GetRequestStoryRequest(
        org_id="acme", request_id="r1"), metadata=client.auth)
    assert [r.policy_id for r in story.decision.results] == ["chat-rpm"]
    assert not story.decision.limits


async def test_stored_prompts_join_the_explanation(client, db, warden):
    key = await tenant(client)
    await audit_policy(client, store_prompts=True)
    await client.warden.Authorize(authorize_request(
        key, "r1", messages=[warden_pb2.ChatMessage(role="user", content="hello there")]))
    await warden.components.flusher.flush()
    assert (await decision_events(db))["r1"]["messages"] == [
        {"role": "user", "content": "hello there"}]


async def test_bad_audit_settings_are_refused_with_the_field(client, db):
    await tenant(client)
    user_scope = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_USER, id="ann")
    cases = [
        ({"allow_sample_rate": 1.5}, ORG, "policy.audit.allow_sample_rate"),
        ({"deny_sample_rate": -0.1}, ORG, "policy.audit.deny_sample_rate"),
        ({"mask_fields": ["a..b"]}, ORG, "policy.audit.mask_fields[0]"),
        ({"mask_fields": ["card"], "hash_fields": ["card"]}, ORG, "policy.audit.hash_fields[0]"),
        ({}, user_scope, "policy.scope.kind"),
    ]
    for config, scope, field in cases:
        error = await expect_error(audit_policy(client, scope, **config))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, config
        assert field in error.violations, (config, error.violations)
    assert await db.fetchval("SELECT count(*) FROM policies") == 0


async def test_a_request_story_explains_the_decision_as_authorize_did(client, warden):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="chat-rpm")
    answers = [await client.warden.Authorize(authorize_request(key, f"r{i}")) for i in (1, 2)]
    await warden.components.flusher.flush()
    for request_id, answer in zip(("r1", "r2"), answers, strict=True):
        story = await client.admin.GetRequestStory(admin_pb2.GetRequestStoryRequest(
            org_id="acme", request_id=request_id), metadata=client.auth)
        assert story.decision.decision == answer.decision
        assert list(story.decision.results) == list(answer.results)
        assert list(story.decision.limits) == list(answer.limits)
        assert story.decision.retry_after == answer.retry_after
    assert answers[1].decision == warden_pb2.DECISION_DENY and answers[1].retry_after.seconds
