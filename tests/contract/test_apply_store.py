"""ApplyStore: `warden apply` converges the orgs a file declares to exactly what it declares, in
one transaction, and says what it changed in the order it changed it (docs/policies-as-code.md).
A plan from a dry run must be the apply's own changes and leave no trace; a refused apply, for
any reason, must change nothing; two applies take turns."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from tests.contract.rows import api_key, app, budget, org, rate_limit, refused, team, user
from warden.store.base import Change, Declared

ACME = Declared(
    orgs=[org("acme", display_name="Acme")],
    teams=[team("eng", "acme"), team("ops", "acme")],
    apps=[app("chat", "acme", team_id="eng"), app("batch", "acme")],
    users=[user("ann", "acme", ("eng", "ops")), user("bob", "acme")],
    policies=[rate_limit("p-chat", "app", "chat"), rate_limit("p-org", "org", "acme")],
)


async def _state(backend) -> dict[str, Any]:
    """Everything an apply could touch, as the other stores read it."""
    d = backend.directory
    orgs = [dict(r) for r in await d.list_orgs("", 1000)]
    state: dict[str, Any] = {"orgs": orgs, "policies": [
        dict(r) for r in await backend.policies.list_policies(None, "", 1000)]}
    for o in orgs:
        for kind, list_page in (("teams", d.list_teams), ("apps", d.list_apps),
                                ("users", d.list_users)):
            state[f"{o['id']}/{kind}"] = [
                {**r, "team_ids": list(r["team_ids"])} if kind == "users" else dict(r)
                for r in await list_page(o["id"], "", 1000)]
    return state


@pytest.fixture
async def globex(directory_store):
    """An org no test declares, made through the directory: applies must leave it alone."""
    await directory_store.create_org(org("globex"))
    await directory_store.create_team(team("g-eng", "globex"))
    await directory_store.create_app(app("g-app", "globex", team_id="g-eng"))
    await directory_store.create_api_key(api_key("g-key", "g-app"))


async def test_a_first_apply_creates_everything_parents_first(apply_store, backend, globex):
    changes = await apply_store.apply(ACME, dry_run=False)
    assert changes == [Change("org", "acme", "create"), Change("team", "eng", "create"),
                       Change("team", "ops", "create"), Change("user", "ann", "create"),
                       Change("user", "bob", "create"), Change("app", "chat", "create"),
                       Change("app", "batch", "create"), Change("policy", "p-chat", "create"),
                       Change("policy", "p-org", "create")]
    state = await _state(backend)
    assert [(u["id"], u["team_ids"]) for u in state["acme/users"]] == [
        ("ann", ["eng", "ops"]), ("bob", [])]
    assert [(a["id"], a["team_id"]) for a in state["acme/apps"]] == [
        ("batch", None), ("chat", "eng")]
    assert [(p["id"], p["org_id"], p["revision"]) for p in state["policies"]] == [
        ("p-chat", "acme", 1), ("p-org", "acme", 1)]


async def test_applying_the_same_declaration_again_changes_nothing(apply_store, backend):
    await apply_store.apply(ACME, dry_run=False)
    before = await _state(backend)
    assert await apply_store.apply(ACME, dry_run=False) == []
    assert await _state(backend) == before


async def test_an_update_names_the_fields_that_differ_alphabetically(apply_store, backend):
    await apply_store.apply(ACME, dry_run=False)
    changed = replace(
        ACME, orgs=[org("acme", display_name="ACME Corp", time_zone="Asia/Tokyo")],
        apps=[app("chat", "acme", team_id="eng"), app("batch", "acme", team_id="ops")],
        users=[user("ann", "acme", ("eng",)), user("bob", "acme", ("ops",))],
        policies=[rate_limit("p-chat", "app", "chat", limit=99, priority=2),
                  rate_limit("p-org", "org", "acme")])
    assert await apply_store.apply(changed, dry_run=False) == [
        Change("org", "acme", "update", ("display_name", "time_zone")),
        Change("user", "ann", "update", ("team_ids",)),
        Change("user", "bob", "update", ("team_ids",)),
        Change("app", "batch", "update", ("team_id",)),
        Change("policy", "p-chat", "update", ("config", "priority"))]
    state = await _state(backend)
    assert state["orgs"][0]["time_zone"] == "Asia/Tokyo"
    assert [(u["id"], u["team_ids"]) for u in state["acme/users"]] == [
        ("ann", ["eng"]), ("bob", ["ops"])]
    assert [(p["id"], p["revision"]) for p in state["policies"]] == [("p-chat", 2), ("p-org", 1)]


async def test_memberships_are_a_set_whatever_order_they_are_declared_in(apply_store):
    """Applying the same declaration twice must report nothing the second time."""
    declared = replace(ACME, users=[user("ann", "acme", ("ops", "eng")), user("bob", "acme")])
    await apply_store.apply(declared, dry_run=False)
    assert await apply_store.apply(declared, dry_run=False) == []


async def test_what_a_declared_org_stops_declaring_is_deleted_children_first(
        apply_store, backend, globex):
    await apply_store.apply(ACME, dry_run=False)
    others = await _state(backend)
    kept = replace(ACME, teams=[team("eng", "acme")], apps=[app("chat", "acme", team_id="eng")],
                   users=[user("bob", "acme")], policies=[rate_limit("p-chat", "app", "chat")])
    assert await apply_store.apply(kept, dry_run=False) == [
        Change("policy", "p-org", "delete"), Change("app", "batch", "delete"),
        Change("user", "ann", "delete"), Change("team", "ops", "delete")]
    state = await _state(backend)
    assert [t["id"] for t in state["acme/teams"]] == ["eng"]
    assert [p["id"] for p in state["policies"]] == ["p-chat"]
    for kind in ("teams", "apps", "users"):
        assert state[f"globex/{kind}"] == others[f"globex/{kind}"]


async def test_a_policy_that_changes_scope_or_type_is_deleted_and_created_again(apply_store,
                                                                               backend):
    """Its quota counters belong to the old scope and type, so it must start afresh."""
    await apply_store.apply(ACME, dry_run=False)
    moved = replace(ACME, policies=[rate_limit("p-chat", "app", "batch"),
                                    budget("p-org", "org", "acme", 1000)])
    assert await apply_store.apply(moved, dry_run=False) == [
        Change("policy", "p-chat", "delete"), Change("policy", "p-chat", "create"),
        Change("policy", "p-org", "delete"), Change("policy", "p-org", "create")]
    assert [(p["id"], p["scope_id"], p["policy_type"]) for p in
            (await _state(backend))["policies"]] == [("p-chat", "batch", "rate_limit"),
                                                     ("p-org", "acme", "budget")]


async def test_a_policy_follows_its_scope_into_another_declared_org(apply_store, backend):
    await apply_store.apply(ACME, dry_run=False)
    both = replace(ACME, orgs=[*ACME.orgs, org("initech")],
                   apps=[*ACME.apps, app("i-app", "initech")],
                   policies=[rate_limit("p-chat", "app", "i-app"), *ACME.policies[1:]])
    changes = await apply_store.apply(both, dry_run=False)
    assert Change("policy", "p-chat", "create") in changes
    policy = await backend.policies.get_policy("p-chat")
    assert (policy["org_id"], policy["scope_id"]) == ("initech", "i-app")


async def test_a_dry_run_reports_the_real_changes_and_changes_nothing(apply_store, backend,
                                                                      globex):
    await apply_store.apply(ACME, dry_run=False)
    changed = replace(ACME, orgs=[org("acme", currency="EUR")], teams=[team("eng", "acme")],
                      apps=[app("chat", "acme", team_id="eng"), app("new", "acme")],
                      users=[user("ann", "acme", ("eng",))],
                      policies=[rate_limit("p-chat", "app", "chat", limit=1)])
    before = await _state(backend)
    plan = await apply_store.apply(changed, dry_run=True)
    assert await _state(backend) == before
    assert plan == await apply_store.apply(changed, dry_run=False)
    assert {c.action for c in plan} == {"create", "update", "delete"}


REFUSALS = {
    # An id another, undeclared org uses: an apply must never take over another org's rows.
    "foreign id": ("ALREADY_EXISTS", lambda d: replace(d, apps=[*d.apps, app("g-app", "acme")])),
    "moved team": ("FAILED_PRECONDITION", lambda d: replace(
        d, orgs=[*d.orgs, org("initech")], teams=[team("eng", "initech"), team("ops", "acme")],
        apps=[app("chat", "acme"), app("batch", "acme")],
        users=[user("ann", "acme", ("ops",)), user("bob", "acme")])),
    "app with keys": ("FAILED_PRECONDITION", lambda d: replace(d, apps=d.apps[:1])),
    "user with requests": ("FAILED_PRECONDITION", lambda d: replace(d, users=d.users[1:])),
    "team with apps": ("FAILED_PRECONDITION", lambda d: replace(d, teams=d.teams[1:])),
    "unknown key scope": ("NOT_FOUND", lambda d: replace(
        d, policies=[*d.policies, rate_limit("p-key", "api_key", "nope")])),
    "foreign key scope": ("INVALID_ARGUMENT", lambda d: replace(
        d, policies=[*d.policies, rate_limit("p-key", "api_key", "g-key")])),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry_run"])
async def test_a_refused_apply_changes_nothing(apply_store, backend, seed, globex, refusal,
                                               dry_run):
    """Each declaration also renames the org and adds a team ahead of what is refused: none of
    it may stay. A dry run refuses just as the apply would."""
    await apply_store.apply(ACME, dry_run=False)
    await backend.directory.create_api_key(api_key("batch-key", "batch"))
    await backend.directory.revoke_api_key("batch-key")  # revoked keys still count
    await seed.log_request("acme", "r1", await seed.now(), app_id="chat", user_id="ann")
    code, make = REFUSALS[refusal]
    declared = make(replace(ACME, orgs=[{**ACME.orgs[0], "display_name": "Renamed"}],
                            teams=[*ACME.teams, team("zz-new", "acme")]))
    before = await _state(backend)
    await refused(apply_store.apply(declared, dry_run=dry_run), code)
    assert await _state(backend) == before


async def test_a_refused_deletion_names_everything_it_blocks(apply_store, backend):
    """One run of `warden apply` shows every row in the way, not the first one only."""
    await apply_store.apply(ACME, dry_run=False)
    await backend.directory.create_api_key(api_key("k1", "chat"))
    await backend.directory.create_api_key(api_key("k2", "batch", user_id="bob"))
    error = await refused(apply_store.apply(replace(ACME, apps=[], users=[], policies=[]),
                                            dry_run=False), "FAILED_PRECONDITION")
    for name in ("'chat'", "'batch'", "'bob'"):
        assert name in error.message, error.message


async def test_concurrent_applies_take_turns(apply_store, backend):
    """Two CI jobs applying the same file at once: the second sees what the first committed
    and has nothing left to do, instead of failing on the first one's rows."""
    first, second = await asyncio.gather(apply_store.apply(ACME, dry_run=False),
                                         apply_store.apply(ACME, dry_run=False))
    assert sorted([len(first), len(second)]) == [0, 9]
    assert len((await _state(backend))["policies"]) == 2
