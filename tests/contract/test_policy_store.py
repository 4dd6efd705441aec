"""PolicyStore: policies live under the org of their scope, updates replace every setting and
are conditional on the revision the caller read, and a policy never changes its scope or type
in place (its quota counters belong to it). Lists filter by exact scope and page by id."""

from __future__ import annotations

import pytest

from tests.contract.rows import api_key, directory, rate_limit, refused


@pytest.fixture
async def tenant(directory_store):
    await directory(directory_store)
    await directory_store.create_api_key(api_key("k1", "chat"))


SCOPES = [("org", "acme"), ("team", "eng"), ("app", "chat"), ("user", "ann"),
          ("api_key", "k1"), ("team", "g-eng")]


@pytest.mark.parametrize("scope", SCOPES, ids=[f"{k}:{i}" for k, i in SCOPES])
async def test_a_policy_belongs_to_the_org_of_its_scope(policy_store, tenant, scope):
    created = await policy_store.create_policy(rate_limit("p1", *scope, limit=5, name="five"))
    stored = await policy_store.get_policy("p1")
    for row in (created, stored):
        assert (row["id"], row["org_id"], row["scope_kind"], row["scope_id"]) == \
            ("p1", "globex" if scope[1] == "g-eng" else "acme", *scope)
        assert (row["name"], row["policy_type"], row["mode"], row["revision"]) == \
            ("five", "rate_limit", "enforce", 1)
        assert row["config"] == {"metric": "METRIC_REQUESTS", "window": "WINDOW_MINUTE",
                                 "limit": "5"}
    assert await policy_store.get_policy("nope") is None


@pytest.mark.parametrize("kind", ["org", "team", "app", "user", "api_key"])
async def test_a_policy_on_a_missing_scope_is_not_found(policy_store, tenant, kind):
    await refused(policy_store.create_policy(rate_limit("p1", kind, "nope")), "NOT_FOUND")
    assert await policy_store.get_policy("p1") is None


async def test_a_taken_policy_id_is_already_exists(policy_store, tenant):
    await policy_store.create_policy(rate_limit("p1", "app", "chat"))
    await refused(policy_store.create_policy(rate_limit("p1", "app", "batch")), "ALREADY_EXISTS")
    assert (await policy_store.get_policy("p1"))["scope_id"] == "chat"


async def test_an_update_replaces_every_setting_and_bumps_the_revision(policy_store, tenant):
    created = await policy_store.create_policy(rate_limit("p1", "app", "chat", limit=5))
    changed = rate_limit("p1", "app", "chat", limit=9, name="nine", mode="dry_run", priority=3,
                         locked=True, failure_mode="fail_closed")
    updated = await policy_store.update_policy(changed, 0)
    stored = await policy_store.get_policy("p1")
    for row in (updated, stored):
        assert {c: row[c] for c in changed} == changed
        assert row["revision"] == 2
        assert row["update_time"] >= created["update_time"]
        assert row["create_time"] == created["create_time"]


async def test_an_update_at_a_stale_revision_is_aborted_and_changes_nothing(policy_store,
                                                                           tenant):
    """Two admins editing the same policy: the second one, holding revision 1, must not
    silently overwrite the first one's change."""
    await policy_store.create_policy(rate_limit("p1", "app", "chat", limit=5))
    first = await policy_store.update_policy(rate_limit("p1", "app", "chat", limit=6), 1)
    assert first["revision"] == 2
    error = await refused(policy_store.update_policy(rate_limit("p1", "app", "chat", limit=7), 1),
                          "ABORTED")
    assert error.reason == "REVISION_MISMATCH"
    stored = await policy_store.get_policy("p1")
    assert (stored["revision"], stored["config"]["limit"]) == (2, "6")
    assert (await policy_store.update_policy(rate_limit("p1", "app", "chat", limit=7), 2)
            )["revision"] == 3


async def test_updating_a_missing_policy_is_not_found(policy_store, tenant):
    await refused(policy_store.update_policy(rate_limit("nope", "app", "chat"), 0), "NOT_FOUND")
    await refused(policy_store.update_policy(rate_limit("nope", "app", "chat"), 1), "NOT_FOUND")


@pytest.mark.parametrize("change", ["scope_kind", "scope_id", "policy_type"])
async def test_an_update_may_not_change_scope_or_type(policy_store, tenant, change):
    await policy_store.create_policy(rate_limit("p1", "app", "chat"))
    moved = {**rate_limit("p1", "app", "chat"),
             **{"scope_kind": {"scope_kind": "team", "scope_id": "chat"},
                "scope_id": {"scope_id": "batch"},
                "policy_type": {"policy_type": "budget"}}[change]}
    await refused(policy_store.update_policy(moved, 0), "FAILED_PRECONDITION")
    stored = await policy_store.get_policy("p1")
    assert (stored["scope_kind"], stored["scope_id"], stored["policy_type"], stored["revision"]) \
        == ("app", "chat", "rate_limit", 1)


async def test_delete_says_whether_there_was_a_policy(policy_store, tenant):
    await policy_store.create_policy(rate_limit("p1", "app", "chat"))
    await policy_store.create_policy(rate_limit("p2", "app", "chat"))
    assert await policy_store.delete_policy("p1") is True
    assert await policy_store.delete_policy("p1") is False
    assert await policy_store.get_policy("p1") is None
    assert await policy_store.get_policy("p2") is not None


async def test_lists_filter_by_exact_scope_and_page_by_id(policy_store, tenant):
    for policy_id, scope in (("p5", ("app", "chat")), ("p1", ("app", "chat")),
                             ("p3", ("app", "batch")), ("p2", ("org", "acme")),
                             ("p4", ("app", "chat")), ("p0", ("team", "g-eng"))):
        await policy_store.create_policy(rate_limit(policy_id, *scope))

    async def ids(scope, after="", limit=100):
        return [p["id"] for p in await policy_store.list_policies(scope, after, limit)]

    assert await ids(("app", "chat")) == ["p1", "p4", "p5"]
    assert await ids(("app", "chat"), after="p1", limit=1) == ["p4"]
    assert await ids(("app", "chat"), after="p5") == []
    assert await ids(("team", "chat")) == []
    assert await ids(None) == ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert await ids(None, after="p2", limit=2) == ["p3", "p4"]
