"""Bad input gets a specific status with rich details, and writes nothing."""

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory

from tests.helpers import authorize_request, expect_error, tenant
from warden.api.admin_service import AdminService
from warden.api.errors import fill_unimplemented
from warden.api.warden_service import WardenService
from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2

BAD_AUTHORIZE = [
    ({"request_id": ""}, "request_id"),
    ({"request_id": "has space"}, "request_id"),
    ({"request_id": "x" * 129}, "request_id"),
    ({"api_key": ""}, "api_key"),
    ({"model": ""}, "model"),
    ({"model": "m" * 201}, "model"),
    ({"input_tokens": -1}, "input_tokens"),
    ({"max_output_tokens": 10**12}, "max_output_tokens"),
]


@pytest.mark.parametrize(("change", "field"), BAD_AUTHORIZE)
async def test_authorize_field_violations(client, db, change, field):
    key = await tenant(client)
    fields = {"api_key": key, "request_id": "ok", "model": "m", **change}
    error = await expect_error(client.warden.Authorize(warden_pb2.AuthorizeRequest(**fields)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert list(error.violations) == [field]
    assert await db.fetchval("SELECT count(*) FROM requests") == 0


async def test_all_violations_are_reported_together(client):
    error = await expect_error(client.warden.Authorize(warden_pb2.AuthorizeRequest()))
    assert set(error.violations) == {"request_id", "api_key", "model"}


BAD_USAGE = [
    ({"usage": types_pb2.Usage(input_tokens=-5)}, "usage.input_tokens"),
    ({"usage": types_pb2.Usage(input_tokens=1, cached_input_tokens=2)},
     "usage.cached_input_tokens"),
    ({"cost_micros": -1}, "cost_micros"),
    ({"outcome": warden_pb2.OUTCOME_UNSPECIFIED}, "outcome"),
    ({"reservation_id": "r"}, "reservation_id"),
]


@pytest.mark.parametrize(("change", "field"), BAD_USAGE)
async def test_record_usage_field_violations(client, db, change, field):
    key = await tenant(client)
    await client.warden.Authorize(authorize_request(key, "r1"))
    fields = {"api_key": key, "request_id": "r1", "outcome": warden_pb2.OUTCOME_COMPLETED,
              **change}
    error = await expect_error(client.warden.RecordUsage(warden_pb2.RecordUsageRequest(**fields)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.violations) == [field]
    assert await db.fetchval("SELECT count(*) FROM usage") == 0


async def test_audit_batch_is_refused_whole(client, db, warden):
    key = await tenant(client)
    far_future = warden_pb2.AuditEvent(action="x")
    far_future.time.FromSeconds(4_000_000_000)
    beyond_datetime = warden_pb2.AuditEvent(action="x")
    beyond_datetime.time.seconds = 10**12  # past the year 9999, where datetime ends
    not_json = warden_pb2.AuditEvent(action="x")
    not_json.attributes.update({"score": float("nan"), "model": "m" * 201})
    bad_nanos = warden_pb2.AuditEvent(action="x")
    bad_nanos.time.GetCurrentTime()
    bad_nanos.time.nanos = -1  # not a valid Timestamp, though within the range
    events = [warden_pb2.AuditEvent(action="fine"), warden_pb2.AuditEvent(action=""),
              far_future, warden_pb2.AuditEvent(action="x", event_id="e" * 129),
              beyond_datetime, not_json, warden_pb2.AuditEvent(action="x", model="m" * 201),
              bad_nanos]
    error = await expect_error(client.warden.Audit(warden_pb2.AuditRequest(api_key=key,
                                                                           events=events)))
    assert set(error.violations) == {"events[1].action", "events[2].time", "events[3].event_id",
                                     "events[4].time", "events[5].attributes",
                                     "events[6].model", "events[7].time"}
    error = await expect_error(client.warden.Audit(warden_pb2.AuditRequest(
        api_key=key, events=[warden_pb2.AuditEvent(action="a", event_id="d")] * 2)))
    assert "events" in error.violations
    error = await expect_error(client.warden.Audit(warden_pb2.AuditRequest(api_key=key)))
    assert "events" in error.violations
    await warden.components.flusher.flush()
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 0


async def test_admin_is_closed_without_the_token(client, db):
    request = admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id="acme"))
    error = await expect_error(client.admin.CreateOrg(request))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ADMIN_TOKEN_MISSING")
    error = await expect_error(client.admin.CreateOrg(
        request, metadata=(("authorization", "Bearer wrong"),)))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ADMIN_TOKEN_INVALID")
    # Refused before the request is read: even bytes that are no CreateOrgRequest.
    raw = client.channel.unary_unary("/warden.v1.Admin/CreateOrg")
    error = await expect_error(raw(b"\xff\xff\xff"))
    assert error.reason == "ADMIN_TOKEN_MISSING"
    orgs = await client.admin.ListOrgs(admin_pb2.ListOrgsRequest(), metadata=client.auth)
    assert list(orgs.orgs) == []
    refusals = await db.fetch("SELECT method, reason, peer FROM admin_refusals ORDER BY id")
    assert [(r["method"], r["reason"]) for r in refusals] == [
        ("CreateOrg", "ADMIN_TOKEN_MISSING"), ("CreateOrg", "ADMIN_TOKEN_INVALID"),
        ("CreateOrg", "ADMIN_TOKEN_MISSING")]
    assert all(r["peer"].startswith("ipv4:127.0.0.1:") for r in refusals)


async def test_malformed_bytes_are_refused_without_harm(client):
    raw = client.channel.unary_unary("/warden.v1.Warden/Authorize")
    error = await expect_error(raw(b"\xff\xff\xff\xff"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid warden.v1.AuthorizeRequest" in error.violations["request"]
    stream = client.channel.stream_unary("/warden.v1.Warden/StreamAudit")

    async def messages():
        yield b"\xff"

    error = await expect_error(stream(messages()))
    assert "messages[0]" in error.violations
    assert (await tenant(client))  # the server still works


async def test_nul_in_any_string_is_refused_and_never_reaches_the_journal(client, db, warden):
    """Postgres text and jsonb cannot hold NUL: a NUL accepted into the journal would fail
    every flush of its record, and so hold back every record after it."""
    key = await tenant(client)
    nul = "a\x00b"
    refused = []
    for change, field in [({"model": nul}, "model"), ({"user_id": nul}, "user_id"),
                          ({"labels": {"team": nul}}, "labels['team']"),
                          ({"labels": {nul: "x"}}, f"labels[{nul!r}]"),
                          ({"messages": [warden_pb2.ChatMessage(role="user", content=nul)]},
                           "messages[0].content"),
                          ({"rag_sources": ["ok", nul]}, "rag_sources[1]")]:
        refused.append((client.warden.Authorize(authorize_request(key, "n", **change)), field))
    usage = warden_pb2.RecordUsageRequest(api_key=key, request_id="n", model=nul,
                                          outcome=warden_pb2.OUTCOME_COMPLETED)
    refused.append((client.warden.RecordUsage(usage), "model"))
    nested = warden_pb2.AuditEvent(action="x")
    nested.attributes.update({"deep": {"list": [1.5, nul]}})
    bad_key = warden_pb2.AuditEvent(action="x")
    bad_key.attributes.update({"ok": 2.5, "inner": {nul: 1}})
    top, top_key = warden_pb2.AuditEvent(action="x"), warden_pb2.AuditEvent(action="x")
    top.attributes.update({"ok": "\\u0000", "bad": nul})
    top_key.attributes.update({nul: True})
    for event, field in [(warden_pb2.AuditEvent(action=nul), "events[1].action"),
                         (warden_pb2.AuditEvent(action="x", event_id=nul), "events[1].event_id"),
                         (warden_pb2.AuditEvent(action="x", provider=nul), "events[1].provider"),
                         (nested, "events[1].attributes"), (bad_key, "events[1].attributes"),
                         (top, "events[1].attributes"), (top_key, "events[1].attributes")]:
        events = [warden_pb2.AuditEvent(action="fine"), event]
        refused.append((client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=events)),
                        field))
    refused.append((client.admin.CreateOrg(admin_pb2.CreateOrgRequest(
        org=admin_pb2.Org(id="other", display_name=nul)), metadata=client.auth),
        "org.display_name"))
    for call, field in refused:
        error = await expect_error(call)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error.violations == {field: "must not contain the NUL character (U+0000)"}

    stream = client.channel.stream_unary("/warden.v1.Warden/StreamAudit")

    async def messages():
        for action in ("fine", nul):
            yield warden_pb2.StreamAuditRequest(
                api_key=key, events=[warden_pb2.AuditEvent(action=action)]).SerializeToString()

    error = await expect_error(stream(messages()))
    assert list(error.violations) == ["messages[1].events[0].action"]
    # Nothing refused was journaled: the stream's first message was, and it flushes with the
    # calls after it.
    await client.warden.Authorize(authorize_request(key, "after"))
    await warden.components.flusher.flush()
    assert await db.fetchval("SELECT count(*) FROM requests") == 1
    stored = await db.fetch("SELECT action FROM audit_events"
                            " WHERE action <> 'authorize.decision'")
    assert [r["action"] for r in stored] == ["fine"]
    assert await db.fetchval("SELECT count(*) FROM orgs WHERE id = 'other'") == 0


async def test_oversized_message_is_refused(client, warden):
    key = await tenant(client)
    huge = warden_pb2.ChatMessage(role="user",
                                  content="x" * (warden.settings.max_message_bytes + 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.warden.Authorize(authorize_request(key, "big", messages=[huge]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_admin_bad_input_and_missing_parents(client):
    error = await expect_error(client.admin.CreateOrg(admin_pb2.CreateOrgRequest(
        org=admin_pb2.Org(id="Not Valid", currency="dollars")), metadata=client.auth))
    assert set(error.violations) == {"org.id", "org.currency"}
    error = await expect_error(client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="a", org_id="nope")), metadata=client.auth))
    assert (error.code, error.message) == (grpc.StatusCode.NOT_FOUND,
                                           "(org_id)=(nope) referenced by app 'a' not found")
    await tenant(client)
    error = await expect_error(client.admin.CreateOrg(admin_pb2.CreateOrgRequest(
        org=admin_pb2.Org(id="acme")), metadata=client.auth))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    error = await expect_error(client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
        app_id="missing"), metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND


def _policy(**fields):
    return admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(**fields))


APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")
RPM = types_pb2.RateLimitConfig(metric=types_pb2.METRIC_REQUESTS, window=types_pb2.WINDOW_MINUTE,
                                limit=5)


async def test_invalid_policies_are_refused_and_never_stored(client):
    await tenant(client)
    cases = [
        (_policy(scope=APP), grpc.StatusCode.INVALID_ARGUMENT, "policy.config"),
        (_policy(scope=APP, rate_limit=types_pb2.RateLimitConfig(limit=0)),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.rate_limit.metric"),
        (_policy(rate_limit=RPM), grpc.StatusCode.INVALID_ARGUMENT, "policy.scope.kind"),
        (_policy(scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="ghost"),
                 rate_limit=RPM), grpc.StatusCode.NOT_FOUND, None),
        (_policy(scope=APP, budget=types_pb2.BudgetConfig(limit_micros=1)),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.budget.period"),
        (_policy(scope=APP, budget=types_pb2.BudgetConfig(
            period=types_pb2.PERIOD_DAY, limit_micros=10, max_request_cost_micros=11)),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.budget.max_request_cost_micros"),
        (_policy(scope=APP, budget=types_pb2.BudgetConfig(
            period=types_pb2.PERIOD_DAY, limit_micros=10, default_input_micros_per_million=-1)),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.budget.default_input_micros_per_million"),
        (_policy(scope=APP, model_access=types_pb2.ModelAccessConfig(
            allow_models=["gpt-4o"], deny_models=["gpt-4o"])),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.model_access.deny_models"),
        (_policy(scope=APP, model_access=types_pb2.ModelAccessConfig(
            aliases={"fast": "quick", "quick": "fast"})),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.model_access.aliases['fast']"),
        (_policy(scope=APP, routing=types_pb2.RoutingConfig()),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.routing"),
        (_policy(scope=APP, routing=types_pb2.RoutingConfig(rules=[types_pb2.RouteRule(
            alias="x", targets=[types_pb2.RouteTarget(model="m")])])),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.routing.rules[0].targets[0].provider"),
        (_policy(scope=APP, pii=types_pb2.PiiConfig(action=types_pb2.GUARDRAIL_ACTION_BLOCK,
                                                    entities=["email", "shoe_size"])),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.pii.entities[1]"),
        (_policy(scope=APP, prompt_injection=types_pb2.PromptInjectionConfig(
            action=types_pb2.GUARDRAIL_ACTION_REDACT, threshold=1.5)),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.prompt_injection.threshold"),
        (_policy(scope=APP, rate_limit=RPM, locked=True),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.locked"),
        (_policy(scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_TEAM, id="nobody"),
                 rate_limit=RPM), grpc.StatusCode.NOT_FOUND, None),
        (_policy(scope=APP, rate_limit=types_pb2.RateLimitConfig(
            metric=types_pb2.METRIC_TOTAL_TOKENS, window=types_pb2.WINDOW_MINUTE, limit=-5)),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.rate_limit.limit"),
        (_policy(scope=APP, rate_limit=types_pb2.RateLimitConfig(
            metric=types_pb2.METRIC_COST_MICROS, window=types_pb2.WINDOW_MINUTE, limit=5)),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.rate_limit.metric"),
        (_policy(scope=APP, rate_limit=RPM, failure_mode=7),
         grpc.StatusCode.INVALID_ARGUMENT, "policy.failure_mode"),
    ]
    for request, code, field in cases:
        error = await expect_error(client.admin.CreatePolicy(request, metadata=client.auth))
        assert error.code == code, request
        if field:
            assert field in error.violations
    listed = await client.admin.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=client.auth)
    assert list(listed.policies) == []


async def test_unimplemented_rpcs_say_so_and_the_readme_lists_them(client):
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    for name in AdminService.UNIMPLEMENTED:
        request = message_factory.GetMessageClass(service.methods_by_name[name].input_type)()
        error = await expect_error(getattr(client.admin, name)(request, metadata=client.auth))
        assert (error.code, error.reason) == (grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Not built yet")[1].split("\n## ")[0]
    assert set(re.findall(r"`Admin\.(\w+)`", section)) == set(AdminService.UNIMPLEMENTED)
    assert WardenService.UNIMPLEMENTED == ()


async def test_an_rpc_without_a_handler_answers_not_implemented():
    """What every RPC not built yet answers, on a servicer that has none built."""
    bare = fill_unimplemented(type("Bare", (admin_pb2_grpc.AdminServicer,), {}),
                              admin_pb2.DESCRIPTOR.services_by_name["Admin"])
    assert "ListOrgs" in bare.UNIMPLEMENTED
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(bare(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            error = await expect_error(admin_pb2_grpc.AdminStub(channel).ListOrgs(
                admin_pb2.ListOrgsRequest()))
    finally:
        await server.stop(None)
    assert (error.code, error.reason) == (grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED")
    assert "Admin.ListOrgs" in error.message
