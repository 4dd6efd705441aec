"""Admin.Apply: declared orgs converge in one transaction; bad declarations change nothing."""

import asyncio
import copy
import json

import grpc
import pytest
from google.protobuf import json_format

from tests.helpers import authorize_request, expect_error, new_key
from warden.v1 import admin_pb2, types_pb2

TABLES = ("orgs", "teams", "apps", "users", "user_teams", "policies", "api_keys")

BASE = {
    "orgs": [{"id": "acme", "display_name": "Acme"}],
    "teams": [{"id": "platform", "org_id": "acme"},
              {"id": "support", "org_id": "acme", "display_name": "Support"}],
    "apps": [{"id": "bot", "org_id": "acme", "team_id": "support"},
             {"id": "search", "org_id": "acme", "team_id": "platform"}],
    "users": [{"id": "alice", "org_id": "acme", "team_ids": ["support"]},
              {"id": "bob", "org_id": "acme", "team_ids": ["platform", "support"]}],
    "policies": [
        {"id": "models", "scope": {"kind": "SCOPE_KIND_ORG", "id": "acme"},
         "mode": "POLICY_MODE_ENFORCE", "model_access": {"allow_providers": ["openai"]}},
        {"id": "routing", "scope": {"kind": "SCOPE_KIND_TEAM", "id": "support"},
         "routing": {"rules": [{"alias": "chat",
                                "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}]}},
        {"id": "bot-rpm", "name": "bot", "scope": {"kind": "SCOPE_KIND_APP", "id": "bot"},
         "rate_limit": {"metric": "METRIC_REQUESTS", "window": "WINDOW_MINUTE", "limit": 600}},
        {"id": "alice-rph", "scope": {"kind": "SCOPE_KIND_USER", "id": "alice"},
         "mode": "POLICY_MODE_DRY_RUN",
         "rate_limit": {"metric": "METRIC_REQUESTS", "window": "WINDOW_HOUR", "limit": 100}},
    ],
}


def base() -> dict:
    return copy.deepcopy(BASE)


def request(data: dict, dry_run: bool = False) -> admin_pb2.ApplyRequest:
    return json_format.ParseDict({**data, "dry_run": dry_run}, admin_pb2.ApplyRequest())


async def apply(client, data: dict, dry_run: bool = False) -> admin_pb2.ApplyResponse:
    return await client.admin.Apply(request(data, dry_run), metadata=client.auth)


def changes(reply: admin_pb2.ApplyResponse) -> list[tuple]:
    return [(c.kind, c.id, admin_pb2.ChangeAction.Name(c.action).removeprefix("CHANGE_ACTION_")
             .lower(), tuple(c.fields)) for c in reply.changes]


async def snapshot(db) -> dict[str, list]:
    return {t: [dict(r) for r in await db.fetch(f"SELECT * FROM {t} ORDER BY 1, 2, 3")]
            for t in TABLES}


FIRST_APPLY = [
    ("org", "acme", "create", ()),
    ("team", "platform", "create", ()), ("team", "support", "create", ()),
    ("user", "alice", "create", ()), ("user", "bob", "create", ()),
    ("app", "bot", "create", ()), ("app", "search", "create", ()),
    ("policy", "models", "create", ()), ("policy", "routing", "create", ()),
    ("policy", "bot-rpm", "create", ()), ("policy", "alice-rph", "create", ()),
]


async def test_first_apply_creates_everything(client, db):
    reply = await apply(client, base())
    assert reply.applied
    assert changes(reply) == FIRST_APPLY

    orgs = await client.admin.ListOrgs(admin_pb2.ListOrgsRequest(), metadata=client.auth)
    assert [(o.id, o.display_name, o.time_zone, o.currency) for o in orgs.orgs] == [
        ("acme", "Acme", "UTC", "USD")]
    apps = await client.admin.ListApps(admin_pb2.ListAppsRequest(org_id="acme"),
                                       metadata=client.auth)
    assert [(a.id, a.team_id) for a in apps.apps] == [("bot", "support"), ("search", "platform")]
    policies = await client.admin.ListPolicies(admin_pb2.ListPoliciesRequest(),
                                               metadata=client.auth)
    by_id = {p.id: p for p in policies.policies}
    assert sorted(by_id) == ["alice-rph", "bot-rpm", "models", "routing"]
    assert by_id["bot-rpm"].rate_limit.limit == 600 and by_id["bot-rpm"].revision == 1
    assert by_id["alice-rph"].mode == types_pb2.POLICY_MODE_DRY_RUN
    assert by_id["routing"].scope == types_pb2.Scope(kind=types_pb2.SCOPE_KIND_TEAM, id="support")

    assert await db.fetch("SELECT user_id, team_id FROM user_teams ORDER BY 1, 2") == [
        ("alice", "support"), ("bob", "platform"), ("bob", "support")]
    assert await db.fetchval("SELECT display_name FROM teams WHERE id = 'support'") == "Support"
    assert set(await db.fetchval("SELECT array_agg(DISTINCT org_id) FROM policies")) == {"acme"}


async def test_applying_the_same_file_again_changes_nothing(client, db):
    await apply(client, base())
    before = await snapshot(db)
    reply = await apply(client, base())
    assert reply.applied and changes(reply) == []
    assert await snapshot(db) == before


async def test_changed_file_updates_and_deletes(client, db):
    await apply(client, base())
    created = await db.fetchrow("SELECT * FROM policies WHERE id = 'bot-rpm'")
    data = base()
    data["orgs"][0]["display_name"] = "Acme Inc"
    data["apps"] = [a for a in data["apps"] if a["id"] != "search"]
    data["teams"] = [t for t in data["teams"] if t["id"] != "platform"]
    data["users"][1]["team_ids"] = ["support"]
    data["users"][0]["display_name"] = "Alice"
    rpm = data["policies"][2]
    rpm["rate_limit"]["limit"] = 300
    rpm["priority"] = 5
    # A new scope makes it another policy (its counters belonged to the old scope).
    data["policies"][3]["scope"] = {"kind": "SCOPE_KIND_USER", "id": "bob"}
    del data["policies"][0]

    reply = await apply(client, data)
    assert changes(reply) == [
        ("org", "acme", "update", ("display_name",)),
        ("user", "alice", "update", ("display_name",)),
        ("user", "bob", "update", ("team_ids",)),
        ("policy", "bot-rpm", "update", ("config", "priority")),
        ("policy", "alice-rph", "delete", ()), ("policy", "alice-rph", "create", ()),
        ("policy", "models", "delete", ()),
        ("app", "search", "delete", ()),
        ("team", "platform", "delete", ()),
    ]
    updated = await db.fetchrow("SELECT * FROM policies WHERE id = 'bot-rpm'")
    assert updated["revision"] == 2 and updated["update_time"] > created["update_time"]
    assert json.loads(updated["config"]) == {"metric": "METRIC_REQUESTS", "window": "WINDOW_MINUTE",
                                 "limit": "300"}
    assert await db.fetch("SELECT id, scope_id, revision FROM policies ORDER BY id") == [
        ("alice-rph", "bob", 1), ("bot-rpm", "bot", 2), ("routing", "support", 1)]
    assert await db.fetch("SELECT user_id, team_id FROM user_teams ORDER BY 1, 2") == [
        ("alice", "support"), ("bob", "support")]
    assert [r["id"] for r in await db.fetch("SELECT id FROM teams")] == ["support"]
    assert changes(await apply(client, data)) == []


async def test_dry_run_reports_the_real_changes_and_changes_nothing(client, db):
    empty = await snapshot(db)
    plan = await apply(client, base(), dry_run=True)
    assert not plan.applied and changes(plan) == FIRST_APPLY
    assert await snapshot(db) == empty

    await apply(client, base())
    before = await snapshot(db)
    data = base()
    data["policies"][2]["rate_limit"]["limit"] = 1
    data["users"].pop()
    plan = await apply(client, data, dry_run=True)
    assert await snapshot(db) == before
    real = await apply(client, data)
    assert changes(plan) == changes(real) == [("policy", "bot-rpm", "update", ("config",)),
                                              ("user", "bob", "delete", ())]


async def test_a_dry_run_reports_refusals_too(client, db):
    await apply(client, base())
    await new_key(client, "search")
    data = base()
    data["apps"].pop()
    error = await expect_error(client.admin.Apply(request(data, dry_run=True),
                                                  metadata=client.auth))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "app 'search'" in error.message


async def test_an_invalid_last_policy_changes_nothing(client, db):
    empty = await snapshot(db)
    data = base()
    data["policies"][-1]["rate_limit"]["limit"] = 0
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.violations) == ["policies[3].rate_limit.limit"]
    assert await snapshot(db) == empty


async def test_deleting_an_app_with_keys_or_a_user_with_requests_changes_nothing(client, db,
                                                                                 warden):
    await apply(client, base())
    key = await new_key(client, "search")
    await client.warden.Authorize(authorize_request(key, "r1", user_id="alice"))
    await warden.components.flusher.flush()
    before = await snapshot(db)
    data = base()
    data["orgs"][0]["display_name"] = "renamed, but not applied"
    data["apps"] = [a for a in data["apps"] if a["id"] != "search"]
    data["users"] = [u for u in data["users"] if u["id"] != "alice"]
    data["policies"] = [p for p in data["policies"] if p["id"] != "alice-rph"]
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "FAILED_PRECONDITION")
    assert "app 'search' has 1 API key" in error.message
    assert "user 'alice' has logged requests" in error.message
    assert "Keep them in the file" in error.message
    assert await snapshot(db) == before


async def test_ids_of_other_orgs_are_never_taken_over(client, db):
    await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id="other")),
                                 metadata=client.auth)
    await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="bot", org_id="other")), metadata=client.auth)
    before = await snapshot(db)
    error = await expect_error(client.admin.Apply(request(base()), metadata=client.auth))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert "app 'bot' already exists in org 'other'" in error.message
    assert await snapshot(db) == before


async def test_moving_a_team_to_another_org_is_refused(client, db):
    data = base()
    data["orgs"].append({"id": "globex"})
    await apply(client, data)
    before = await snapshot(db)
    data["teams"][0]["org_id"] = "globex"
    data["apps"][1]["team_id"] = "support"
    data["users"][1]["team_ids"] = ["support"]
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "team 'platform' belongs to org 'acme'" in error.message
    assert await snapshot(db) == before


async def test_api_key_scopes_name_existing_keys_of_declared_orgs(client, db):
    await apply(client, base())
    reply = await client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id="bot"),
                                            metadata=client.auth)
    key_policy = {"id": "key-rpm", "scope": {"kind": "SCOPE_KIND_API_KEY",
                                             "id": reply.api_key.id},
                  "rate_limit": {"metric": "METRIC_REQUESTS", "window": "WINDOW_MINUTE",
                                 "limit": 5}}
    data = base()
    data["policies"].append(key_policy)
    assert changes(await apply(client, data)) == [("policy", "key-rpm", "create", ())]
    assert await db.fetchval("SELECT org_id FROM policies WHERE id = 'key-rpm'") == "acme"

    data["policies"][-1]["scope"]["id"] = "key_missing"
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "API key 'key_missing'" in error.message and "policies[4]" in error.message

    # A key of an org the request does not own cannot carry one of its policies.
    await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id="other")),
                                 metadata=client.auth)
    await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="other-app", org_id="other")), metadata=client.auth)
    other = await client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id="other-app"),
                                            metadata=client.auth)
    data["policies"][-1]["scope"]["id"] = other.api_key.id
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "belongs to org 'other'" in error.violations["policies[4].scope.id"]


def _set(path: str, value):
    """A change to BASE: set the value at a dotted path (list indexes as numbers)."""
    def change(data: dict) -> None:
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return change


def _append(kind: str, item: dict):
    return lambda data: data[kind].append(item)


BAD = [
    (_append("teams", {"org_id": "acme"}), "teams[2].id"),
    (_set("policies.0.id", ""), "policies[0].id"),
    (_set("apps.1.id", "Not An Id"), "apps[1].id"),
    (_append("apps", {"id": "bot", "org_id": "acme"}), "apps[2].id"),
    (_append("policies", {**BASE["policies"][2]}), "policies[4].id"),
    (_append("teams", {"id": "globex-team", "org_id": "globex"}), "teams[2].org_id"),
    (_set("users.0.org_id", ""), "users[0].org_id"),
    (_set("users.1.team_ids", ["support", "nope"]), "users[1].team_ids[1]"),
    (_set("users.1.team_ids", ["support", "support"]), "users[1].team_ids[1]"),
    (_set("apps.1.team_id", "nope"), "apps[1].team_id"),
    (_set("policies.2.scope.id", "ghost"), "policies[2].scope.id"),
    (_set("policies.1.scope.id", "ghost-team"), "policies[1].scope.id"),
    (_set("policies.3.scope", {"kind": "SCOPE_KIND_UNSPECIFIED", "id": "alice"}),
     "policies[3].scope.kind"),
    (_set("policies.2.rate_limit.limit", 0), "policies[2].rate_limit.limit"),
    (_set("policies.1.routing.rules.0.targets", []), "policies[1].routing.rules[0].targets"),
    (_set("orgs.0.time_zone", "Mars/Olympus_Mons"), "orgs[0].time_zone"),
    (_set("orgs.0.currency", "dollars"), "orgs[0].currency"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
async def test_bad_declarations_name_the_field(client, db, change, field):
    data = base()
    change(data)
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    # The message lists each violation's field, repeats included.
    assert error.message == f"invalid request: {field}"
    assert list(error.violations) == [field]
    assert await db.fetchval("SELECT count(*) FROM orgs") == 0


async def test_a_team_of_another_declared_org_is_refused(client):
    data = base()
    data["orgs"].append({"id": "globex"})
    data["teams"].append({"id": "globex-team", "org_id": "globex"})
    data["apps"][0]["team_id"] = "globex-team"
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert list(error.violations) == ["apps[0].team_id"]
    assert "belongs to org 'globex', not 'acme'" in error.violations["apps[0].team_id"]


async def test_every_problem_is_reported_at_once(client):
    data = base()
    del data["orgs"]
    data["policies"][2]["rate_limit"]["limit"] = -1
    error = await expect_error(client.admin.Apply(request(data), metadata=client.auth))
    assert set(error.violations) == {
        "orgs", "teams[0].org_id", "teams[1].org_id", "apps[0].org_id", "apps[1].org_id",
        "users[0].org_id", "users[1].org_id", "policies[0].scope.id",
        "policies[2].rate_limit.limit"}


async def test_quota_policies_get_their_types_failure_mode_by_default(client):
    data = base()
    data["orgs"][0]["time_zone"] = "Europe/Paris"
    data["policies"].append({"id": "acme-budget", "scope": {"kind": "SCOPE_KIND_ORG",
                                                            "id": "acme"},
                             "budget": {"period": "PERIOD_MONTH", "limit_micros": 10**9}})
    await apply(client, data)
    listed = await client.admin.ListPolicies(admin_pb2.ListPoliciesRequest(),
                                             metadata=client.auth)
    modes = {p.id: p.failure_mode for p in listed.policies}
    assert modes["acme-budget"] == types_pb2.FAILURE_MODE_FAIL_CLOSED
    assert modes["bot-rpm"] == types_pb2.FAILURE_MODE_FAIL_OPEN


def _org_file(org: str, policies: int) -> dict:
    return {"orgs": [{"id": org}], "apps": [{"id": f"{org}-app", "org_id": org}],
            "policies": [{"id": f"{org}-p{i}", "scope": {"kind": "SCOPE_KIND_APP",
                                                         "id": f"{org}-app"},
                          "rate_limit": {"metric": "METRIC_REQUESTS",
                                         "window": "WINDOW_MINUTE", "limit": i + 1}}
                         for i in range(policies)]}


async def test_concurrent_applies_of_different_orgs_both_succeed(client, db):
    first, second = await asyncio.gather(apply(client, _org_file("acme", 30)),
                                         apply(client, _org_file("globex", 30)))
    assert len(first.changes) == len(second.changes) == 32
    assert await db.fetch("SELECT org_id, count(*) FROM policies GROUP BY 1 ORDER BY 1") == [
        ("acme", 30), ("globex", 30)]


async def test_concurrent_applies_of_one_org_run_one_after_the_other(client, db):
    small, large = _org_file("acme", 5), _org_file("acme", 40)
    for name, data in (("small", small), ("large", large)):
        for p in data["policies"]:
            p["name"] = name
    replies = await asyncio.gather(apply(client, small), apply(client, large))
    # Serialized: one saw an empty database and created everything, the other converged what
    # the first committed. Unserialized, both would try to create org 'acme' and one would fail.
    firsts = [r for r in replies if changes(r)[0] == ("org", "acme", "create", ())]
    assert len(firsts) == 1
    last = large if firsts[0] is replies[0] else small
    assert await db.fetch("SELECT id FROM policies ORDER BY id") == [
        (p["id"],) for p in sorted(last["policies"], key=lambda p: p["id"])]
    assert {r["name"] for r in await db.fetch("SELECT name FROM policies")} == {
        last["policies"][0]["name"]}
    assert changes(await apply(client, last)) == []
