"""LookupStore: what every Authorize needs, in the shapes the cache and the engine consume. A key
record carries every team whose policies apply to its calls (its app's team and its user's
teams); an unknown user is None, not "no teams"; policies_for answers every scope asked for, so
the cache can remember "no policies here" too."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.contract.rows import (
    api_key,
    app,
    directory,
    model_access,
    price,
    rate_limit,
    refused,
    switch,
    team,
)
from warden.engine import PolicyRecord, ProviderSwitch
from warden.engine.model import RateLimit
from warden.engine.pricing import Price
from warden.keys import KeyRecord


@pytest.fixture
async def tenant(directory_store):
    await directory(directory_store)


async def test_a_key_record_has_what_authentication_and_scoping_need(
        lookup_store, directory_store, seed, tenant):
    expiry = await seed.now() + timedelta(days=1)
    created = await directory_store.create_api_key(api_key(
        "k1", "batch", prefix="0123456789ab", allowed_models=("gpt-4o", "o3"),
        expire_time=expiry))
    record = await lookup_store.find_api_key("0123456789ab")
    assert record == KeyRecord(id="k1", org_id="acme", app_id="batch", user_id="",
                               team_ids=(), hash=bytes(created["hash"]),
                               allowed_models=("gpt-4o", "o3"), expire_time=expiry,
                               revoke_time=None)
    assert await lookup_store.find_api_key("ffffffffffff") is None


async def test_a_keys_teams_are_its_apps_team_and_its_users_teams(lookup_store, directory_store,
                                                                  tenant):
    """chat is in eng; ann is in eng and ops: each team once, sorted."""
    await directory_store.create_api_key(api_key("app-key", "chat"))
    await directory_store.create_api_key(api_key("ann-key", "chat", user_id="ann"))
    await directory_store.create_api_key(api_key("bob-key", "batch", user_id="bob"))
    assert (await lookup_store.find_api_key("p-app-key")).team_ids == ("eng",)
    ann = await lookup_store.find_api_key("p-ann-key")
    assert (ann.user_id, ann.team_ids) == ("ann", ("eng", "ops"))
    assert (await lookup_store.find_api_key("p-bob-key")).team_ids == ()


async def test_a_revoked_key_is_still_found_with_its_revoke_time(lookup_store, directory_store,
                                                                 tenant):
    """Authentication tells a revoked key from an unknown one (API_KEY_REVOKED, not
    API_KEY_INVALID), and a key in its rotation grace still works: both need the record."""
    await directory_store.create_api_key(api_key("k1", "chat"))
    revoked = await directory_store.revoke_api_key("k1")
    record = await lookup_store.find_api_key("p-k1")
    assert record is not None and record.revoke_time == revoked["revoke_time"]
    assert record.id == "k1"


async def test_find_app_gives_its_org_and_team(lookup_store, tenant):
    assert await lookup_store.find_app("chat") == ("acme", "eng")
    assert await lookup_store.find_app("batch") == ("acme", "")
    assert await lookup_store.find_app("g-app") == ("globex", "g-eng")
    assert await lookup_store.find_app("nope") is None


async def test_find_principal_gives_the_app_and_one_principal_names_one_app(
        lookup_store, directory_store, tenant):
    created = await directory_store.create_app(app("mesh", "acme", principals=(
        "spiffe://td/ns/b/sa/mesh", "spiffe://td/ns/a/sa/mesh")))
    assert created["principals"] == ["spiffe://td/ns/a/sa/mesh", "spiffe://td/ns/b/sa/mesh"]
    assert await lookup_store.find_principal("spiffe://td/ns/b/sa/mesh") == "mesh"
    assert await lookup_store.find_principal("spiffe://td/ns/c/sa/mesh") is None
    error = await refused(directory_store.create_app(app(
        "thief", "globex", principals=("spiffe://td/ns/c/sa/x", "spiffe://td/ns/a/sa/mesh"))),
        "ALREADY_EXISTS")
    assert "spiffe://td/ns/a/sa/mesh" in error.message and "'mesh'" in error.message
    assert await lookup_store.find_principal("spiffe://td/ns/c/sa/x") is None  # all or nothing
    listed = await directory_store.list_apps("globex", "", 10)
    assert [a["id"] for a in listed] == ["g-app"]


async def test_user_teams_is_none_for_a_user_the_org_does_not_have(lookup_store, tenant):
    """A caller naming a user of another org must not borrow that user's teams."""
    assert await lookup_store.user_teams("acme", "ann") == ("eng", "ops")
    assert await lookup_store.user_teams("acme", "bob") == ()
    assert await lookup_store.user_teams("acme", "nope") is None
    assert await lookup_store.user_teams("acme", "gus") is None
    assert await lookup_store.user_teams("globex", "gus") == ("g-eng",)


async def test_policies_for_keys_every_scope_asked_for(lookup_store, policy_store,
                                                       directory_store, tenant):
    """A team and an app may share an id: their policies must not mix."""
    await directory_store.create_team(team("shared", "acme"))
    await directory_store.create_app(app("shared", "acme"))
    await policy_store.create_policy(rate_limit("p2", "app", "chat", limit=7, priority=4))
    await policy_store.create_policy(model_access("p1", "app", "chat"))
    await policy_store.create_policy(rate_limit("p3", "org", "acme", mode="dry_run"))
    await policy_store.create_policy(rate_limit("p4", "team", "shared"))
    await policy_store.create_policy(rate_limit("p5", "app", "shared"))
    await policy_store.create_policy(rate_limit("p6", "org", "globex"))
    scopes = [("org", "acme"), ("team", "eng"), ("app", "chat"), ("team", "shared"),
              ("app", "shared"), ("user", "ann")]
    found = await lookup_store.policies_for(scopes)
    assert {scope: [p.id for p in found[scope]] for scope in found} == {
        ("org", "acme"): ["p3"], ("team", "eng"): [], ("app", "chat"): ["p1", "p2"],
        ("team", "shared"): ["p4"], ("app", "shared"): ["p5"], ("user", "ann"): []}
    limit = found[("app", "chat")][1]
    assert isinstance(limit, PolicyRecord)
    assert (limit.scope_kind, limit.scope_id, limit.policy_type, limit.mode, limit.priority,
            limit.failure_mode) == ("app", "chat", "rate_limit", "enforce", 4, "fail_open")
    assert limit.rate_limit == RateLimit(metric="REQUESTS", window="MINUTE", limit=7,
                                         selector=limit.rate_limit.selector)
    assert found[("app", "chat")][0].model_access is not None
    assert not found[("org", "acme")][0].enforced
    assert await lookup_store.policies_for([]) == {}


async def test_provider_switches_are_only_the_disabled_ones(lookup_store, directory_store,
                                                           tenant):
    """Only a switched-off provider or model changes a decision; an enabled row is a no-op."""
    await directory_store.set_provider_switch(switch("openai", "gpt-4o", reason="recalled"))
    await directory_store.set_provider_switch(switch("anthropic", org_id="acme", reason="unpaid"))
    await directory_store.set_provider_switch(switch("google", enabled=True))
    await directory_store.set_provider_switch(switch("mistral", reason="off"))
    await directory_store.set_provider_switch(switch("mistral", enabled=True))
    assert sorted(await lookup_store.provider_switches(), key=lambda s: s.provider) == [
        ProviderSwitch("anthropic", "", "acme", False, "unpaid"),
        ProviderSwitch("openai", "gpt-4o", "", False, "recalled")]


async def test_prices_are_keyed_by_provider_and_model(lookup_store, price_store):
    await price_store.set_price(price("openai", "gpt-4o", 2_500_000, 10_000_000, 1_250_000))
    await price_store.set_price(price("azure", "gpt-4o", 3, 4, 1))
    await price_store.set_price(price("", "local-llm", 0, 0, 0))
    assert await lookup_store.prices() == {
        ("openai", "gpt-4o"): Price(2_500_000, 10_000_000, 1_250_000),
        ("azure", "gpt-4o"): Price(3, 4, 1),
        ("", "local-llm"): Price(0, 0, 0)}
