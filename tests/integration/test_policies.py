"""Scopes, setting policies, provider switches, policy updates and key rotation, end to end
through a real server and Postgres."""

import asyncio
import os

import grpc
from google.protobuf import duration_pb2

from tests.helpers import authorize_request, expect_error, new_key, rate_limit, tenant
from warden.v1 import admin_pb2, types_pb2, warden_pb2

ORG, TEAM, APP, USER = (types_pb2.SCOPE_KIND_ORG, types_pb2.SCOPE_KIND_TEAM,
                        types_pb2.SCOPE_KIND_APP, types_pb2.SCOPE_KIND_USER)


async def _policy(client, kind, scope_id, policy_id="", **config) -> types_pb2.Policy:
    reply = await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id=policy_id, scope=types_pb2.Scope(kind=kind, id=scope_id), **config)),
        metadata=client.auth)
    return reply.policy


async def _org_with_team_and_user(client) -> None:
    await tenant(client)
    for team in ("research", "support"):
        await client.admin.CreateTeam(admin_pb2.CreateTeamRequest(
            team=admin_pb2.Team(id=team, org_id="acme")), metadata=client.auth)
    await client.admin.CreateUser(admin_pb2.CreateUserRequest(
        user=admin_pb2.User(id="alice", org_id="acme", team_ids=["research"])),
        metadata=client.auth)


async def test_teams_and_users_belong_to_one_org(client):
    await _org_with_team_and_user(client)
    await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id="globex")),
                                 metadata=client.auth)
    users = await client.admin.ListUsers(admin_pb2.ListUsersRequest(org_id="acme"),
                                         metadata=client.auth)
    assert [(u.id, list(u.team_ids)) for u in users.users] == [("alice", ["research"])]
    teams = await client.admin.ListTeams(admin_pb2.ListTeamsRequest(org_id="acme"),
                                         metadata=client.auth)
    assert [t.id for t in teams.teams] == ["research", "support"]
    # A team, user or membership of another org is not found: no cross-org links.
    error = await expect_error(client.admin.CreateUser(admin_pb2.CreateUserRequest(
        user=admin_pb2.User(id="bob", org_id="globex", team_ids=["research"])),
        metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND and "research" in error.message
    error = await expect_error(client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="g-app", org_id="globex", team_id="research")),
        metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND
    await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="g-app", org_id="globex")), metadata=client.auth)
    error = await expect_error(client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
        app_id="g-app", user_id="alice"), metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND
    # Nothing half-written: the refused user does not exist.
    users = await client.admin.ListUsers(admin_pb2.ListUsersRequest(org_id="globex"),
                                         metadata=client.auth)
    assert list(users.users) == []


async def test_user_and_team_limits_apply_through_the_users_key(client, db, warden):
    await _org_with_team_and_user(client)
    key = await new_key(client, "chat", user_id="alice")
    other = await new_key(client, "chat")
    await rate_limit(client, USER, "alice", 2, "alice-rpm")
    await rate_limit(client, TEAM, "research", 3, "research-rpm")
    reply = await client.warden.Authorize(authorize_request(key, "a1"))
    assert reply.identity.user_id == "alice"
    assert [r.policy_id for r in reply.results] == ["alice-rpm", "research-rpm"]
    await client.warden.Authorize(authorize_request(key, "a2"))
    denied = await client.warden.Authorize(authorize_request(key, "a3"))
    assert (denied.decision, denied.reason) == (warden_pb2.DECISION_DENY,
                                                types_pb2.REASON_RATE_LIMITED)
    # The app's other key has no user: neither limit applies to it.
    free = await client.warden.Authorize(authorize_request(other, "b1"))
    assert free.decision == warden_pb2.DECISION_ALLOW and list(free.results) == []
    # An app naming alice as its end user gets her scopes too, and the team's limit (3) is hit.
    named = await client.warden.Authorize(authorize_request(other, "b2", user_id="alice"))
    assert (named.decision, [r.allowed for r in named.results]) == (
        warden_pb2.DECISION_DENY, [False, True])
    research = next(s for s in named.limits if s.policy_id == "research-rpm")
    assert research.remaining == 1  # two of three taken; the denied call took nothing
    # An end user the org does not know is logged but has no user scope.
    unknown = await client.warden.Authorize(authorize_request(other, "b3", user_id="mallory"))
    assert unknown.decision == warden_pb2.DECISION_ALLOW and unknown.identity.user_id == ""
    await warden.components.flusher.flush()
    assert await db.fetchval("SELECT user_id FROM requests WHERE request_id = 'b3'") == "mallory"


async def test_a_users_key_cannot_act_for_another_user(client):
    await _org_with_team_and_user(client)
    key = await new_key(client, "chat", user_id="alice")
    error = await expect_error(client.warden.Authorize(authorize_request(key, "r1",
                                                                         user_id="bob")))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert "user_id" in error.violations


async def test_app_team_policies_apply_to_the_apps_keys(client):
    await _org_with_team_and_user(client)
    await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="helpdesk", org_id="acme", team_id="support")), metadata=client.auth)
    key = await new_key(client, "helpdesk")
    await _policy(client, TEAM, "support", "support-models",
                  model_access=types_pb2.ModelAccessConfig(allow_models=["gpt-4o-mini"]))
    denied = await client.warden.Authorize(authorize_request(key, "r1", model="gpt-4o"))
    assert denied.reason == types_pb2.REASON_MODEL_NOT_ALLOWED
    assert denied.results[0].policy_id == "support-models"
    assert denied.results[0].scope == types_pb2.Scope(kind=TEAM, id="support")


async def test_routing_aliases_and_caps_shape_the_route_and_the_log(client, db, warden):
    key = await tenant(client)
    await _policy(client, ORG, "acme", "org-models", locked=True,
                  model_access=types_pb2.ModelAccessConfig(
                      deny_providers=["shady"], aliases={"fast": "gpt-4o-mini"}))
    await _policy(client, APP, "chat", "chat-routing", routing=types_pb2.RoutingConfig(
        rules=[types_pb2.RouteRule(alias="default", targets=[
            types_pb2.RouteTarget(provider="shady", model="gpt-4o"),
            types_pb2.RouteTarget(provider="openai", model="gpt-4o"),
            types_pb2.RouteTarget(provider="azure", model="gpt-4o")])],
        max_tokens_cap=1000))
    reply = await client.warden.Authorize(authorize_request(key, "r1", model="default",
                                                            max_output_tokens=4000))
    assert reply.decision == warden_pb2.DECISION_ALLOW
    assert (reply.route.provider, reply.route.model, reply.route.max_output_tokens) == (
        "openai", "gpt-4o", 1000)
    assert [(t.provider, t.model) for t in reply.route.fallbacks] == [("azure", "gpt-4o")]
    assert "skipped shady/gpt-4o: provider 'shady' is denied" in reply.results[1].message
    await warden.components.flusher.flush()
    row = await db.fetchrow("SELECT model, provider FROM requests WHERE request_id = 'r1'")
    assert (row["model"], row["provider"]) == ("gpt-4o", "openai")
    alias = await client.warden.Authorize(authorize_request(key, "r2", model="fast"))
    assert alias.route.model == "gpt-4o-mini"


async def test_provider_switches_deny_then_allow_again(client):
    key = await tenant(client)
    request = authorize_request(key, "r1", model="gpt-4o", provider="openai")
    error = await expect_error(client.admin.SetProviderSwitch(admin_pb2.SetProviderSwitchRequest(
        switch=admin_pb2.ProviderSwitch(provider="openai")), metadata=client.auth))
    assert "switch.reason" in error.violations
    error = await expect_error(client.admin.SetProviderSwitch(admin_pb2.SetProviderSwitchRequest(
        switch=admin_pb2.ProviderSwitch(provider="openai", org_id="ghost", reason="x")),
        metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND
    await client.admin.SetProviderSwitch(admin_pb2.SetProviderSwitchRequest(
        switch=admin_pb2.ProviderSwitch(provider="openai", org_id="acme", reason="incident 7")),
        metadata=client.auth)
    denied = await client.warden.Authorize(request)
    assert denied.reason == types_pb2.REASON_PROVIDER_DISABLED
    assert "incident 7" in denied.results[0].message
    listed = await client.admin.ListProviderSwitches(
        admin_pb2.ListProviderSwitchesRequest(org_id="acme"), metadata=client.auth)
    assert [(s.provider, s.org_id, s.enabled) for s in listed.switches] == [
        ("openai", "acme", False)]
    await client.admin.SetProviderSwitch(admin_pb2.SetProviderSwitchRequest(
        switch=admin_pb2.ProviderSwitch(provider="openai", org_id="acme", enabled=True)),
        metadata=client.auth)
    request.request_id = "r2"
    allowed = await client.warden.Authorize(request)
    assert allowed.decision == warden_pb2.DECISION_ALLOW


async def test_update_policy_is_conditional_and_keeps_scope_and_type(client):
    key = await tenant(client)
    policy = await _policy(client, APP, "chat", "chat-models",
                           model_access=types_pb2.ModelAccessConfig(allow_models=["gpt-4o"]))
    assert (await client.warden.Authorize(authorize_request(key, "r1", model="gpt-4o"))
            ).decision == warden_pb2.DECISION_ALLOW
    policy.model_access.allow_models[:] = ["gpt-4o-mini"]
    updated = (await client.admin.UpdatePolicy(admin_pb2.UpdatePolicyRequest(policy=policy),
                                               metadata=client.auth)).policy
    assert updated.revision == policy.revision + 1
    # Applied at once on this sidecar (other sidecars: tests/integration/test_propagation.py).
    assert (await client.warden.Authorize(authorize_request(key, "r2", model="gpt-4o"))
            ).reason == types_pb2.REASON_MODEL_NOT_ALLOWED
    error = await expect_error(client.admin.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(policy=policy), metadata=client.auth))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "REVISION_MISMATCH")
    moved = types_pb2.Policy()
    moved.CopyFrom(updated)
    moved.scope.kind = ORG
    moved.scope.id = "acme"
    error = await expect_error(client.admin.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(policy=moved), metadata=client.auth))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION and "scope_kind" in error.message
    missing = types_pb2.Policy()
    missing.CopyFrom(updated)
    missing.id = "nope"
    error = await expect_error(client.admin.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(policy=missing), metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND
    stored = (await client.admin.GetPolicy(admin_pb2.GetPolicyRequest(id="chat-models"),
                                           metadata=client.auth)).policy
    assert (stored.revision, list(stored.model_access.allow_models)) == (2, ["gpt-4o-mini"])


async def test_rotation_keeps_the_old_key_for_its_grace_period(client, db):
    await tenant(client)
    created = await client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
        app_id="chat", allowed_models=["gpt-4o-mini"]), metadata=client.auth)
    old = created.plaintext
    assert (await client.warden.Authorize(authorize_request(old, "r0"))).decision == \
        warden_pb2.DECISION_ALLOW
    rotated = await client.admin.RotateApiKey(admin_pb2.RotateApiKeyRequest(
        id=created.api_key.id, grace_period=duration_pb2.Duration(seconds=1)),
        metadata=client.auth)
    assert list(rotated.api_key.allowed_models) == ["gpt-4o-mini"]
    assert rotated.api_key.id != created.api_key.id
    for i, key in enumerate((old, rotated.plaintext)):
        reply = await client.warden.Authorize(authorize_request(key, f"r{i + 1}"))
        assert reply.decision == warden_pb2.DECISION_ALLOW
    await asyncio.sleep(1.2)
    error = await expect_error(client.warden.Authorize(authorize_request(old, "r3")))
    assert error.reason == "API_KEY_REVOKED"
    assert (await client.warden.Authorize(authorize_request(rotated.plaintext, "r4"))
            ).decision == warden_pb2.DECISION_ALLOW
    assert await db.fetchval("SELECT rotated_from FROM api_keys WHERE id = $1",
                             rotated.api_key.id) == created.api_key.id
    # A revoked key cannot be rotated back to life.
    error = await expect_error(client.admin.RotateApiKey(admin_pb2.RotateApiKeyRequest(
        id=created.api_key.id), metadata=client.auth))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    error = await expect_error(client.admin.RotateApiKey(admin_pb2.RotateApiKeyRequest(
        id=rotated.api_key.id, grace_period=duration_pb2.Duration(seconds=-1)),
        metadata=client.auth))
    assert "grace_period" in error.violations


async def test_explicit_subjects_only_on_the_subject_socket(db_url, tmp_path):
    """A trusted gateway names org, app and user on the Unix socket; the same request over TCP
    is refused, and a subject must name an app of its org."""
    from tests.conftest import Client, settings_for
    from warden.app import App

    socket = f"unix:{tmp_path}/subjects.sock"
    app = App(settings_for(db_url, str(tmp_path), subject_socket=socket))
    await app.start()
    try:
        assert os.stat(socket.removeprefix("unix:")).st_mode & 0o777 == 0o600
        async with grpc.aio.insecure_channel(app.target) as tcp, \
                grpc.aio.insecure_channel(socket) as unix:
            admin, trusted = Client(tcp), Client(unix)
            await _org_with_team_and_user(admin)
            await rate_limit(admin, USER, "alice", 1, "alice-rpm")
            subject = warden_pb2.Subject(org_id="acme", app_id="chat", user_id="alice")
            request = warden_pb2.AuthorizeRequest(request_id="s1", subject=subject,
                                                  model="gpt-4o-mini")
            reply = await trusted.warden.Authorize(request)
            assert reply.decision == warden_pb2.DECISION_ALLOW
            assert (reply.identity.app_id, reply.identity.user_id,
                    reply.identity.api_key_id) == ("chat", "alice", "")
            request.request_id = "s2"
            denied = await trusted.warden.Authorize(request)
            assert denied.reason == types_pb2.REASON_RATE_LIMITED  # alice's own limit
            usage = await trusted.warden.RecordUsage(warden_pb2.RecordUsageRequest(
                request_id="s1", subject=subject, cost_micros=5,
                outcome=warden_pb2.OUTCOME_COMPLETED))
            assert usage.cost_micros == 5
            audit = await trusted.warden.Audit(warden_pb2.AuditRequest(
                subject=subject, events=[warden_pb2.AuditEvent(action="llm.call")]))
            assert audit.accepted == 1

            request.request_id = "s3"
            error = await expect_error(admin.warden.Authorize(request))
            assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                  "PERMISSION_DENIED")
            other = warden_pb2.Subject(org_id="globex", app_id="chat")
            error = await expect_error(trusted.warden.Authorize(warden_pb2.AuthorizeRequest(
                request_id="s4", subject=other, model="m")))
            assert error.code == grpc.StatusCode.NOT_FOUND
            error = await expect_error(trusted.warden.Authorize(warden_pb2.AuthorizeRequest(
                request_id="s5", subject=warden_pb2.Subject(app_id="Bad App"),
                api_key="wk_x", model="m")))
            assert set(error.violations) == {"api_key", "subject.org_id", "subject.app_id"}
    finally:
        await app.stop()
