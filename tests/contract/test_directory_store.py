"""DirectoryStore: orgs, teams, apps, users, API keys and provider switches as the Admin API
relies on them. Duplicates are ALREADY_EXISTS and unknown or foreign parents NOT_FOUND (the API
turns both into their status without checking first); lists are in id order with an exclusive
`after` (the page token is the last id of the previous page); rotation copies a key and only
ever shortens the old key's life."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tests.contract.rows import api_key, app, directory, new_key, org, refused, switch, team, user


async def test_a_created_org_reads_back_with_its_settings(directory_store):
    created = await directory_store.create_org(
        org("acme", display_name="Acme", time_zone="Europe/Paris", currency="EUR"))
    stored = await directory_store.get_org("acme")
    for row in (created, stored):
        assert (row["id"], row["display_name"], row["time_zone"], row["currency"]) == \
            ("acme", "Acme", "Europe/Paris", "EUR")
    assert stored["create_time"] is not None
    assert await directory_store.get_org("nope") is None


@pytest.mark.parametrize("kind", ["org", "team", "app", "user", "api_key id", "api_key prefix"])
async def test_creating_what_exists_is_already_exists(directory_store, kind):
    """Ids are global: a team id taken in one org is taken in every org."""
    await directory(directory_store)
    await directory_store.create_api_key(api_key("k1", "chat", prefix="aaaa"))
    duplicate = {
        "org": lambda: directory_store.create_org(org("acme")),
        "team": lambda: directory_store.create_team(team("eng", "globex")),
        "app": lambda: directory_store.create_app(app("chat", "globex")),
        "user": lambda: directory_store.create_user(user("ann", "globex")),
        "api_key id": lambda: directory_store.create_api_key(api_key("k1", "batch")),
        "api_key prefix": lambda: directory_store.create_api_key(
            api_key("k2", "batch", prefix="aaaa")),
    }[kind]
    error = await refused(duplicate(), "ALREADY_EXISTS")
    assert error.reason == "ALREADY_EXISTS"


@pytest.mark.parametrize("kind", [
    "team of unknown org", "app of unknown org", "app of unknown team", "user of unknown org",
    "user in unknown team", "key of unknown app", "key of unknown user",
    "switch of unknown org"])
async def test_naming_a_missing_parent_is_not_found(directory_store, kind):
    await directory(directory_store)
    create = {
        "team of unknown org": lambda: directory_store.create_team(team("t", "nope")),
        "app of unknown org": lambda: directory_store.create_app(app("a", "nope")),
        "app of unknown team": lambda: directory_store.create_app(
            app("a", "acme", team_id="nope")),
        "user of unknown org": lambda: directory_store.create_user(user("u", "nope")),
        "user in unknown team": lambda: directory_store.create_user(
            user("u", "acme", ("eng", "nope"))),
        "key of unknown app": lambda: directory_store.create_api_key(api_key("k", "nope")),
        "key of unknown user": lambda: directory_store.create_api_key(
            api_key("k", "chat", user_id="nope")),
        "switch of unknown org": lambda: directory_store.set_provider_switch(
            switch("openai", org_id="nope")),
    }[kind]
    await refused(create(), "NOT_FOUND")


@pytest.mark.parametrize("kind", ["app in a foreign team", "user in a foreign team",
                                  "key for a foreign user"])
async def test_naming_a_parent_of_another_org_is_not_found(directory_store, kind):
    """A row may only point into its own org: anything else would let one tenant's key act
    for another tenant's user or count against another tenant's team."""
    await directory(directory_store)
    create = {
        "app in a foreign team": lambda: directory_store.create_app(
            app("a", "acme", team_id="g-eng")),
        "user in a foreign team": lambda: directory_store.create_user(
            user("u", "acme", ("g-eng",))),
        "key for a foreign user": lambda: directory_store.create_api_key(
            api_key("k", "chat", user_id="gus")),
    }[kind]
    await refused(create(), "NOT_FOUND")


async def test_a_refused_user_is_not_created_at_all(directory_store):
    """A user and its memberships are one write: a refused membership must not leave the user
    behind, or the caller's retry with the right teams would find its id taken."""
    await directory(directory_store)
    await refused(directory_store.create_user(user("cat", "acme", ("eng", "g-eng"))), "NOT_FOUND")
    assert "cat" not in [u["id"] for u in await directory_store.list_users("acme", "", 100)]
    created = await directory_store.create_user(user("cat", "acme", ("eng",)))
    assert list(created["team_ids"]) == ["eng"]


async def test_users_carry_their_team_ids_sorted(directory_store):
    await directory(directory_store)
    created = await directory_store.create_user(user("cat", "acme", ("ops", "eng")))
    assert list(created["team_ids"]) == ["eng", "ops"]
    listed = {u["id"]: list(u["team_ids"]) for u in await directory_store.list_users("acme", "",
                                                                                      100)}
    assert listed == {"ann": ["eng", "ops"], "bob": [], "cat": ["eng", "ops"]}


async def _walk(list_page, parent: str | None, limit: int) -> list[str]:
    """Every id of a listing, page by page, each page starting after the last id seen."""
    ids: list[str] = []
    while True:
        args = (parent,) if parent is not None else ()
        page = [r["id"] for r in await list_page(*args, ids[-1] if ids else "", limit)]
        assert len(page) <= limit
        ids += page
        if len(page) < limit:
            return ids
        assert len(ids) <= 100, f"the walk does not end: {ids[:20]}..."


@pytest.mark.parametrize("kind", ["orgs", "teams", "apps", "users", "api_keys"])
async def test_lists_are_in_id_order_and_page_after_an_exclusive_id(directory_store, kind):
    await directory_store.create_org(org("acme"))
    await directory_store.create_org(org("globex"))
    await directory_store.create_app(app("chat", "acme"))
    await directory_store.create_app(app("g-app", "globex"))
    ids = [f"{kind[0]}{n:02d}" for n in range(7)]
    create, list_page, parent, other = {
        "orgs": (lambda i: directory_store.create_org(org(i)), directory_store.list_orgs, None,
                 None),
        "teams": (lambda i: directory_store.create_team(team(i, "acme")),
                  directory_store.list_teams, "acme",
                  lambda: directory_store.create_team(team("t-other", "globex"))),
        "apps": (lambda i: directory_store.create_app(app(i, "acme")), directory_store.list_apps,
                 "acme", lambda: directory_store.create_app(app("a-other", "globex"))),
        "users": (lambda i: directory_store.create_user(user(i, "acme")),
                  directory_store.list_users, "acme",
                  lambda: directory_store.create_user(user("u-other", "globex"))),
        "api_keys": (lambda i: directory_store.create_api_key(api_key(i, "chat")),
                     directory_store.list_api_keys, "chat",
                     lambda: directory_store.create_api_key(api_key("k-other", "g-app"))),
    }[kind]
    for i in random.Random(7).sample(ids, len(ids)):
        await create(i)
    if other is not None:
        await other()
    expected = sorted(ids + {"orgs": ["acme", "globex"], "apps": ["chat"]}.get(kind, []))
    assert await _walk(list_page, parent, 3) == expected
    assert await _walk(list_page, parent, 100) == expected
    after = expected[2]
    args = (parent,) if parent is not None else ()
    assert [r["id"] for r in await list_page(*args, after, 2)] == expected[3:5]


async def test_revoking_keeps_the_first_revoke_time(directory_store, seed):
    """Revoking again must not move the time a key died: the audit trail refers to it."""
    await directory(directory_store)
    await directory_store.create_api_key(api_key("k1", "chat"))
    first = await directory_store.revoke_api_key("k1")
    assert first is not None and first["id"] == "k1"
    assert first["revoke_time"] <= await seed.now()
    again = await directory_store.revoke_api_key("k1")
    assert again["revoke_time"] == first["revoke_time"]
    assert await directory_store.revoke_api_key("nope") is None


async def test_revoking_a_key_in_its_rotation_grace_ends_it_now(directory_store, seed):
    """The way to stop a leaked key at once is to revoke it (docs/policies-as-code.md), also
    after it was rotated with a grace period."""
    await directory(directory_store)
    await directory_store.create_api_key(api_key("k1", "chat"))
    await directory_store.rotate_api_key("k1", new_key("k2"), timedelta(days=7))
    revoked = await directory_store.revoke_api_key("k1")
    assert revoked["revoke_time"] <= await seed.now()


async def test_rotation_copies_the_key_and_ends_the_old_one_after_the_grace(directory_store,
                                                                            seed):
    await directory(directory_store)
    expiry = await seed.now() + timedelta(days=30)
    await directory_store.create_api_key(api_key(
        "old", "chat", user_id="ann", allowed_models=("gpt-4o", "o3"), expire_time=expiry,
        display_name="ci"))
    grace = timedelta(hours=1)
    before = await seed.now()
    rotated = await directory_store.rotate_api_key("old", new_key("new"), grace)
    after = await seed.now()
    assert (rotated["id"], rotated["prefix"], rotated["rotated_from"]) == ("new", "p-new", "old")
    assert (rotated["org_id"], rotated["app_id"], rotated["user_id"], rotated["display_name"],
            list(rotated["allowed_models"]), rotated["expire_time"]) == \
        ("acme", "chat", "ann", "ci", ["gpt-4o", "o3"], expiry)
    assert rotated["revoke_time"] is None
    keys = {k["id"]: k for k in await directory_store.list_api_keys("chat", "", 10)}
    assert before + grace <= keys["old"]["revoke_time"] <= after + grace
    assert keys["old"]["expire_time"] == expiry


async def test_rotation_never_lengthens_the_old_keys_life(directory_store, seed):
    """Rotating a key that is already in its grace period, with a longer grace, must not keep
    a leaked key alive longer; a shorter grace shortens it."""
    await directory(directory_store)
    await directory_store.create_api_key(api_key("k1", "chat"))
    await directory_store.rotate_api_key("k1", new_key("k2"), timedelta(hours=1))
    ends = (await directory_store.list_api_keys("chat", "", 10))[0]["revoke_time"]
    await directory_store.rotate_api_key("k1", new_key("k3"), timedelta(days=7))
    assert (await directory_store.list_api_keys("chat", "", 10))[0]["revoke_time"] == ends
    before = await seed.now()
    await directory_store.rotate_api_key("k1", new_key("k4"), timedelta(0))
    now_ends = (await directory_store.list_api_keys("chat", "", 10))[0]["revoke_time"]
    assert before <= now_ends <= await seed.now()


async def test_rotation_refuses_unknown_revoked_and_expired_keys(directory_store, seed):
    await directory(directory_store)
    await directory_store.create_api_key(api_key("revoked", "chat"))
    await directory_store.revoke_api_key("revoked")
    await directory_store.create_api_key(
        api_key("expired", "chat", expire_time=await seed.now() - timedelta(seconds=1)))
    await refused(directory_store.rotate_api_key("nope", new_key("n1"), timedelta(0)),
                  "NOT_FOUND")
    for key_id in ("revoked", "expired"):
        await refused(directory_store.rotate_api_key(key_id, new_key(f"n-{key_id}"),
                                                     timedelta(hours=1)), "FAILED_PRECONDITION")
    keys = await directory_store.list_api_keys("chat", "", 10)
    assert [k["id"] for k in keys] == ["expired", "revoked"]
    assert [k["revoke_time"] is None for k in keys] == [True, False]


async def test_rotating_to_a_taken_id_is_already_exists(directory_store):
    await directory(directory_store)
    await directory_store.create_api_key(api_key("k1", "chat"))
    await directory_store.create_api_key(api_key("k2", "chat"))
    await refused(directory_store.rotate_api_key("k1", new_key("k2"), timedelta(0)),
                  "ALREADY_EXISTS")


async def test_provider_switches_upsert_and_list_an_orgs_own_and_the_global_ones(
        directory_store):
    await directory(directory_store)
    await directory_store.set_provider_switch(switch("openai", "gpt-4o", reason="recalled"))
    await directory_store.set_provider_switch(switch("openai", org_id="acme", reason="unpaid"))
    await directory_store.set_provider_switch(switch("anthropic", org_id="globex"))
    again = await directory_store.set_provider_switch(
        switch("openai", org_id="acme", enabled=True, reason="paid"))
    assert (again["enabled"], again["reason"]) == (True, "paid")

    def keys(rows):
        return [(r["provider"], r["model"], r["org_id"], r["enabled"]) for r in rows]

    assert keys(await directory_store.list_provider_switches("acme")) == [
        ("openai", "", "acme", True), ("openai", "gpt-4o", "", False)]
    assert keys(await directory_store.list_provider_switches("")) == [
        ("anthropic", "", "globex", False), ("openai", "", "acme", True),
        ("openai", "gpt-4o", "", False)]
