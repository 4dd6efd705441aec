"""The vertical slice end to end: Admin creates a tenant, Authorize authenticates and takes from
quota leases, RecordUsage stores what was consumed, Audit stores events. Decisions and usage
reach Postgres through the sidecar's journal: tests flush it before reading the tables."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from tests.helpers import authorize_request, expect_error, new_key, rate_limit, tenant
from warden.v1 import admin_pb2, types_pb2, warden_pb2


async def test_authorize_allows_and_logs_the_decision(client, db, warden):
    key = await tenant(client)
    reply = await client.warden.Authorize(authorize_request(
        key, "req-1", provider="openai", max_output_tokens=300, user_id="u1"))
    assert reply.decision == warden_pb2.DECISION_ALLOW
    assert reply.reason == types_pb2.REASON_ALLOWED
    assert (reply.identity.org_id, reply.identity.app_id) == ("acme", "chat")
    assert reply.route.model == "gpt-4o-mini" and reply.route.max_output_tokens == 300
    assert reply.reservation_id
    await warden.components.flusher.flush()
    row = await db.fetchrow("SELECT * FROM requests WHERE request_id = 'req-1'")
    assert (row["org_id"], row["decision"], row["user_id"], row["provider"]) == \
        ("acme", "allow", "u1", "openai")
    last_used = await db.fetchval("SELECT last_used_time FROM api_keys")
    assert last_used is not None


async def test_api_key_is_stored_only_as_a_keyed_hash(client, db):
    key = await tenant(client)
    stored = await db.fetch("SELECT * FROM api_keys")
    assert len(stored) == 1
    # wk_<12 hex prefix>_<secret>; the secret is base64url, so it may itself hold "_".
    secret = key[len("wk_") + 12 + 1:]
    assert len(secret) == 43
    assert all(key not in str(v) and secret not in str(v) for v in stored[0].values())
    assert len(stored[0]["hash"]) == 32


async def test_request_rate_limit_counts_in_postgres_and_denies_with_retry(client, db, warden):
    key = await tenant(client)
    policy = await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 3, policy_id="chat-rpm")
    replies = [await client.warden.Authorize(authorize_request(key, f"r{i}")) for i in range(4)]
    assert [r.decision for r in replies] == [warden_pb2.DECISION_ALLOW] * 3 + \
        [warden_pb2.DECISION_DENY]
    assert [r.limits[0].remaining for r in replies] == [2, 1, 0, 0]
    denied = replies[3]
    assert denied.reason == types_pb2.REASON_RATE_LIMITED
    # A window frees its oldest bucket (1/120 of it) whole, at most one window and bucket on.
    assert 0 < denied.retry_after.ToTimedelta().total_seconds() <= 60.5
    [result] = denied.results
    assert (result.policy_id, result.allowed, result.scope.id) == (policy.id, False, "chat")
    assert "3 requests per minute" in result.message
    assert not denied.reservation_id
    await warden.components.flusher.flush()
    assert await db.fetchval("SELECT sum(granted) FROM quota_buckets") == 3
    assert await db.fetchval("SELECT count(*) FROM requests WHERE decision = 'deny'") == 1


async def test_all_limits_must_pass_and_a_denial_counts_nothing(client, db):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_ORG, "acme", 100, policy_id="org-rpm")
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="app-rpm")
    first = await client.warden.Authorize(authorize_request(key, "a"))
    second = await client.warden.Authorize(authorize_request(key, "b"))
    assert (first.decision, second.decision) == (warden_pb2.DECISION_ALLOW,
                                                  warden_pb2.DECISION_DENY)
    assert {r.policy_id: r.allowed for r in second.results} == {"org-rpm": True,
                                                                "app-rpm": False}
    # The org limit passed but took nothing: its remaining allowance did not move.
    remaining = [{s.policy_id: s.remaining for s in r.limits} for r in (first, second)]
    assert remaining[0]["org-rpm"] == remaining[1]["org-rpm"] == 99
    third = await client.warden.Authorize(authorize_request(key, "c"))
    assert third.decision == warden_pb2.DECISION_DENY


async def test_dry_run_limit_reports_but_never_denies(client):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1,
                     mode=types_pb2.POLICY_MODE_DRY_RUN)
    replies = [await client.warden.Authorize(authorize_request(key, f"d{i}")) for i in range(2)]
    assert all(r.decision == warden_pb2.DECISION_ALLOW for r in replies)
    assert replies[1].results[0].allowed is False
    assert replies[1].results[0].mode == types_pb2.POLICY_MODE_DRY_RUN


async def test_concurrent_authorize_never_exceeds_the_limit(client, db, warden):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 20)
    replies = await asyncio.gather(*(client.warden.Authorize(authorize_request(key, f"c{i}"))
                                     for i in range(60)))
    allowed = sum(r.decision == warden_pb2.DECISION_ALLOW for r in replies)
    assert allowed == 20
    await warden.components.flusher.flush()
    assert await db.fetchval("SELECT sum(granted) FROM quota_buckets") == 20
    assert await db.fetchval("SELECT count(*) FROM requests WHERE decision = 'allow'") == 20


async def test_key_allowed_models(client):
    await tenant(client)
    key = await new_key(client, "chat", allowed_models=["small"])
    ok = await client.warden.Authorize(authorize_request(key, "m1", model="small"))
    no = await client.warden.Authorize(authorize_request(key, "m2", model="large"))
    assert ok.decision == warden_pb2.DECISION_ALLOW
    assert (no.decision, no.reason) == (warden_pb2.DECISION_DENY,
                                        types_pb2.REASON_MODEL_NOT_ALLOWED)


async def test_reused_request_id_is_refused_and_counts_nothing(client, db, warden):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 10)
    await client.warden.Authorize(authorize_request(key, "same"))
    error = await expect_error(client.warden.Authorize(authorize_request(key, "same")))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    other = await client.warden.Authorize(authorize_request(key, "other"))
    assert other.limits[0].remaining == 8
    await warden.components.flusher.flush()
    assert await db.fetchval("SELECT count(*) FROM requests") == 2


async def test_revoked_and_expired_keys_are_unauthenticated(client):
    key = await tenant(client)
    keys = await client.admin.ListApiKeys(admin_pb2.ListApiKeysRequest(app_id="chat"),
                                          metadata=client.auth)
    await client.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=keys.api_keys[0].id),
                                    metadata=client.auth)
    error = await expect_error(client.warden.Authorize(authorize_request(key, "x")))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED")

    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(seconds=1))
    expired = await new_key(client, "chat", expire_time=past)
    error = await expect_error(client.warden.Authorize(authorize_request(expired, "y")))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_EXPIRED")

    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for bad in (forged, "wk_000000000000_" + "a" * 43, "not-a-key"):
        error = await expect_error(client.warden.Authorize(authorize_request(bad, "z")))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED,
                                              "API_KEY_INVALID")


async def _set_price(client, model="gpt-4o-mini", provider="", inp=150_000, out=600_000):
    await client.admin.SetModelPrice(admin_pb2.SetModelPriceRequest(price=admin_pb2.ModelPrice(
        provider=provider, model=model, input_micros_per_million=inp,
        output_micros_per_million=out, cached_input_micros_per_million=75_000)),
        metadata=client.auth)


def _usage(key, request_id, **fields):
    fields.setdefault("usage", types_pb2.Usage(input_tokens=1000, output_tokens=500,
                                               cached_input_tokens=200))
    return warden_pb2.RecordUsageRequest(request_id=request_id, api_key=key,
                                         outcome=warden_pb2.OUTCOME_COMPLETED, **fields)


async def test_record_usage_prices_stores_once_and_detects_conflicts(client, db, warden):
    key = await tenant(client)
    await _set_price(client)
    await client.warden.Authorize(authorize_request(key, "u1"))
    reply = await client.warden.RecordUsage(_usage(key, "u1"))
    # (800 * 150000 + 200 * 75000 + 500 * 600000) / 1e6 = 435 micros
    assert (reply.cost_micros, reply.duplicate) == (435, False)
    again = await client.warden.RecordUsage(_usage(key, "u1"))
    assert (again.cost_micros, again.duplicate) == (435, True)
    error = await expect_error(client.warden.RecordUsage(_usage(
        key, "u1", usage=types_pb2.Usage(input_tokens=1, output_tokens=1))))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USAGE_CONFLICT")
    await warden.components.flusher.flush()
    row = await db.fetchrow("SELECT * FROM usage")
    assert (row["input_tokens"], row["output_tokens"], row["cost_micros"],
            row["cost_source"], row["model"]) == (1000, 500, 435, "priced", "gpt-4o-mini")


async def test_record_usage_without_a_price_stores_tokens_unless_a_budget_counts_the_call(
        client, db, warden):
    """A model without a price: the tokens are stored with the cost unknown when no budget
    counts the call (an app with only rate limits need not invent a cost); a call a budget
    counts must be priced or report its cost."""
    key = await tenant(client)
    await client.warden.Authorize(authorize_request(key, "r1", model="mystery"))
    reply = await client.warden.RecordUsage(_usage(key, "r1"))
    assert (reply.cost_micros, reply.cost_unknown, reply.duplicate) == (0, True, False)
    again = await client.warden.RecordUsage(_usage(key, "r1"))
    assert (again.cost_unknown, again.duplicate) == (True, True)
    await client.warden.Authorize(authorize_request(key, "r2", model="mystery"))
    reply = await client.warden.RecordUsage(_usage(key, "r2", cost_micros=1234))
    assert (reply.cost_micros, reply.cost_unknown) == (1234, False)

    await _set_price(client)
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="acme-month", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id="acme"),
        budget=types_pb2.BudgetConfig(period=types_pb2.PERIOD_MONTH, limit_micros=10**9))),
        metadata=client.auth)
    await client.warden.Authorize(authorize_request(key, "b1"))
    # Served by another model than authorized, one without a price: the budget cannot count it.
    error = await expect_error(client.warden.RecordUsage(_usage(key, "b1", model="mystery")))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "MODEL_NOT_PRICED")
    assert "mystery" in error.message and "acme-month" in error.message
    error = await expect_error(client.warden.RecordUsage(_usage(key, "never-authorized")))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    await warden.components.flusher.flush()
    rows = await db.fetch("SELECT request_id, input_tokens, cost_micros, cost_source FROM usage"
                          " ORDER BY request_id")
    assert [tuple(r) for r in rows] == [("r1", 1000, None, "unpriced"),
                                        ("r2", 1000, 1234, "reported")]


async def test_record_usage_for_a_denied_request_is_refused(client):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1)
    await client.warden.Authorize(authorize_request(key, "ok"))
    await client.warden.Authorize(authorize_request(key, "denied"))
    error = await expect_error(client.warden.RecordUsage(_usage(key, "denied", cost_micros=1)))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "REQUEST_NOT_AUTHORIZED")


async def test_record_usage_is_scoped_to_the_org_of_the_key(client):
    key = await tenant(client)
    other = await tenant(client, org="globex", app="bot")
    await client.warden.Authorize(authorize_request(key, "shared-id"))
    error = await expect_error(client.warden.RecordUsage(_usage(other, "shared-id",
                                                                cost_micros=1)))
    assert error.code == grpc.StatusCode.NOT_FOUND


def _event(action="llm.call", **fields):
    return warden_pb2.AuditEvent(action=action, **fields)


async def test_audit_stores_each_event_once(client, db, warden):
    key = await tenant(client)
    attributes = struct_pb2.Struct()
    attributes.update({"tokens": 12, "tags": ["a", "b"]})
    reply = await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[
        _event(event_id="e1", request_id="r1", attributes=attributes), _event()]))
    assert reply.accepted == 2 and reply.event_ids[0] == "e1" and reply.event_ids[1]
    again = await client.warden.Audit(warden_pb2.AuditRequest(api_key=key,
                                                              events=[_event(event_id="e1")]))
    assert again.accepted == 1
    await warden.components.flusher.flush()
    rows = await db.fetch("SELECT * FROM audit_events ORDER BY event_id")
    assert len(rows) == 2
    stored = {r["event_id"]: r for r in rows}
    assert json.loads(stored["e1"]["attributes"]) == {"tags": ["a", "b"], "tokens": 12}
    assert (stored["e1"]["org_id"], stored["e1"]["app_id"]) == ("acme", "chat")


async def test_stream_audit_stores_every_message(client, db, warden):
    key = await tenant(client)

    async def messages():
        for batch in range(5):
            yield warden_pb2.StreamAuditRequest(
                api_key=key if batch == 0 else "",
                events=[_event(event_id=f"s{batch}-{i}") for i in range(100)])

    reply = await client.warden.StreamAudit(messages())
    assert reply.accepted == 500
    await warden.components.flusher.flush()
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 500


async def test_a_bad_batch_in_a_stream_writes_nothing_of_that_batch(client, db, warden):
    key = await tenant(client)

    async def messages():
        yield warden_pb2.StreamAuditRequest(api_key=key, events=[_event(event_id="ok")])
        yield warden_pb2.StreamAuditRequest(events=[_event(event_id="fine"), _event(action="")])

    error = await expect_error(client.warden.StreamAudit(messages()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[1].events[1].action" in error.violations
    await warden.components.flusher.flush()
    assert [r["event_id"] for r in await db.fetch("SELECT event_id FROM audit_events")] == ["ok"]
