"""ReportingStore: the numbers behind GetUsage, GetBudgetSummary, ListTopSpenders and
GetRequestMetrics (docs/reporting.md). A request belongs to a range [start, end) by the time it
was authorized and brings its settled usage with it; a team's requests are its apps' and its
users', each counted once; a quota's `used` is what enforcement itself counts."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.contract.rows import api_key, budget, directory, model_access, org, rate_limit
from tests.contract.rows import app as app_row


@pytest.fixture
async def tenant(directory_store):
    """rows.directory plus key k1 on chat, and org kiwi, whose budgets run on Auckland time."""
    await directory(directory_store)
    await directory_store.create_api_key(api_key("k1", "chat"))
    await directory_store.create_org(org("kiwi", time_zone="Pacific/Auckland", currency="NZD"))


@pytest.fixture
async def t0(seed) -> datetime:
    """A time well inside the past day, whole to the second."""
    return (await seed.now() - timedelta(hours=3)).replace(microsecond=0)


@pytest.mark.parametrize("kind, scope_id, expected", [
    ("org", "acme", ("acme", "UTC", "USD")), ("org", "kiwi", ("kiwi", "Pacific/Auckland", "NZD")),
    ("team", "g-eng", ("globex", "UTC", "USD")), ("app", "chat", ("acme", "UTC", "USD")),
    ("user", "gus", ("globex", "UTC", "USD")), ("api_key", "k1", ("acme", "UTC", "USD"))])
async def test_scope_org_is_the_org_a_scope_belongs_to(reporting_store, tenant, kind, scope_id,
                                                       expected):
    """Reports are in the org's time zone and currency, whatever scope they are asked for."""
    row = await reporting_store.scope_org(kind, scope_id)
    assert (row["id"], row["time_zone"], row["currency"]) == expected
    assert await reporting_store.scope_org(kind, "nope") is None


async def test_usage_counts_the_scopes_decisions_in_a_half_open_range(reporting_store, seed,
                                                                      tenant, t0):
    end = t0 + timedelta(hours=1)
    for rid, at, app in (("at-start", t0, "chat"), ("inside", t0 + timedelta(minutes=30), "chat"),
                         ("at-end", end, "chat"), ("before", t0 - timedelta(microseconds=1),
                                                   "chat"),
                         ("other-app", t0, "batch")):
        await seed.log_request("acme", rid, at, app_id=app)
        await seed.settle("acme", rid, 10, 5, 100, cached_input_tokens=2)
    await seed.log_request("acme", "denied", t0, app_id="chat", decision="deny",
                           reason="RATE_LIMITED")
    await seed.log_request("acme", "unsettled", t0, app_id="chat")
    await seed.log_request("globex", "foreign", t0, app_id="chat")  # another org, same app id
    row = await reporting_store.usage("acme", ("app", "chat"), t0, end)
    assert {k: row[k] for k in ("requests", "allowed", "denied", "input_tokens", "output_tokens",
                                "cached_input_tokens", "cost_micros")} == {
        "requests": 4, "allowed": 3, "denied": 1, "input_tokens": 20, "output_tokens": 10,
        "cached_input_tokens": 4, "cost_micros": 200}
    empty = await reporting_store.usage("acme", ("app", "chat"), end + timedelta(hours=1),
                                        end + timedelta(hours=2))
    assert (empty["requests"], empty["cost_micros"]) == (0, 0)


async def test_usage_of_each_scope_kind(reporting_store, seed, tenant, t0):
    """chat is in team eng and ann is in eng and ops: her call on chat counts once for eng."""
    calls = (("r1", "chat", "", "k1", 1), ("r2", "batch", "ann", "k2", 10),
             ("r3", "chat", "ann", "k2", 100), ("r4", "batch", "bob", "k3", 1000))
    for rid, app, user_id, key, cost in calls:
        await seed.log_request("acme", rid, t0, app_id=app, user_id=user_id, api_key_id=key)
        await seed.settle("acme", rid, 1, 1, cost)
    end = t0 + timedelta(seconds=1)

    async def cost(kind: str, scope_id: str) -> tuple[int, int]:
        row = await reporting_store.usage("acme", (kind, scope_id), t0, end)
        return row["requests"], row["cost_micros"]

    assert await cost("org", "acme") == (4, 1111)
    assert await cost("team", "eng") == (3, 111)
    assert await cost("team", "ops") == (2, 110)
    assert await cost("app", "batch") == (2, 1010)
    assert await cost("user", "ann") == (2, 110)
    assert await cost("api_key", "k2") == (2, 110)
    assert await cost("team", "nope") == (0, 0)


async def test_quotas_are_the_counters_of_exactly_the_scope(reporting_store, policy_store, seed,
                                                            tenant):
    """Only rate limits and budgets have counters; `used` counts the grants inside the window,
    as enforcement does, and not the ones that slid out of it."""
    await policy_store.create_policy(rate_limit("p-rpm", "app", "chat", limit=50))
    await policy_store.create_policy(budget("p-budget", "app", "chat", 10_000))
    await policy_store.create_policy(model_access("p-models", "app", "chat"))
    await policy_store.create_policy(rate_limit("p-batch", "app", "batch"))
    await policy_store.create_policy(rate_limit("p-team", "team", "eng"))
    now = await seed.now()
    await seed.grant("p-rpm", now - timedelta(seconds=20), 7)
    await seed.grant("p-rpm", now - timedelta(minutes=3), 40)
    await seed.grant("p-batch", now - timedelta(seconds=20), 9)
    month = now.astimezone(ZoneInfo("UTC")).replace(day=1, hour=0, minute=0, second=0,
                                                     microsecond=0)
    await seed.grant("p-budget", month, 1234)
    rows = await reporting_store.quotas(("app", "chat"))
    after = await seed.now()
    assert [(r["id"], r["used"]) for r in rows] == [("p-budget", 1234), ("p-rpm", 7)]
    budget_row, rpm = rows
    assert budget_row["window_start"] == month
    assert budget_row["window_end"] == budget_row["reset_time"] > now
    # The window's current bucket is the one of the query, which ran between now and after
    # (half-second buckets: the query may fall in the bucket after now's).
    assert rpm["window_start"] <= after and now < rpm["window_end"] <= rpm["reset_time"]
    assert await reporting_store.quotas(("user", "ann")) == []


async def test_budgets_spend_in_the_period_of_the_orgs_time_zone(reporting_store, policy_store,
                                                                 directory_store, seed, tenant):
    """A month in Auckland starts on the 1st at midnight there, not in UTC; calls before it are
    last month's. Settled calls are `spent`, unsettled allowed ones `reserved`, denied ones
    nothing, each per (model, provider)."""
    await directory_store.create_app(app_row("k-app", "kiwi"))
    await directory_store.create_app(app_row("k-other", "kiwi"))
    await policy_store.create_policy(budget("b-app", "app", "k-app", 50_000))
    await policy_store.create_policy(budget("b-idle", "org", "kiwi", 1))
    now = await seed.now()
    start = now.astimezone(ZoneInfo("Pacific/Auckland")).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    inside = start + timedelta(seconds=1)
    calls = (("settled", inside, "gpt-4o", "openai", "allow", 300),
             ("settled2", inside, "gpt-4o", "openai", "allow", 20),
             ("open", inside, "gpt-4o", "openai", "allow", None),
             ("azure", inside, "gpt-4o", "azure", "allow", 5),
             ("denied", inside, "gpt-4o", "openai", "deny", None),
             ("last-month", start - timedelta(seconds=1), "gpt-4o", "openai", "allow", 7000))
    for rid, at, model, provider, decision, cost in calls:
        await seed.log_request("kiwi", rid, at, app_id="k-app", model=model, provider=provider,
                               decision=decision, reserved_cost_micros=40)
        if cost is not None:
            await seed.settle("kiwi", rid, 1, 1, cost)
    await seed.log_request("kiwi", "elsewhere", inside, app_id="k-other", reserved_cost_micros=9)
    rows = {r["id"]: r for r in await reporting_store.budgets("kiwi", None)}
    assert list(rows) == ["b-app", "b-idle"]
    assert rows["b-app"]["window_start"] == start
    assert sorted(rows["b-app"]["spend"]) == [("gpt-4o", "azure", 5, 0),
                                              ("gpt-4o", "openai", 320, 40)]
    assert sorted(rows["b-idle"]["spend"]) == [("gpt-4o", "azure", 5, 0),
                                               ("gpt-4o", "openai", 320, 49)]
    only = await reporting_store.budgets("kiwi", ("app", "k-app"))
    assert [r["id"] for r in only] == ["b-app"]
    assert await reporting_store.budgets("acme", None) == []


async def test_top_spenders_rank_by_cost_then_key(reporting_store, seed, tenant, t0):
    for rid, app, cost in (("r1", "chat", 300), ("r2", "chat", 200), ("r3", "batch", 500),
                           ("r4", "g-app", 500), ("r5", "zeta", 0)):
        await seed.log_request("acme", rid, t0, app_id=app)
        await seed.settle("acme", rid, 2, 1, cost)
    await seed.log_request("acme", "late", t0 + timedelta(hours=1), app_id="zeta")
    await seed.settle("acme", "late", 1, 1, 10**6)
    await seed.log_request("globex", "g", t0, app_id="chat")
    await seed.settle("globex", "g", 1, 1, 10**6)
    end = t0 + timedelta(minutes=1)
    rows = await reporting_store.top_spenders("acme", "app", t0, end, 10)
    assert [tuple(r[k] for k in ("key", "requests", "input_tokens", "output_tokens",
                                 "cost_micros")) for r in rows] == [
        ("batch", 1, 2, 1, 500), ("chat", 2, 4, 2, 500), ("g-app", 1, 2, 1, 500),
        ("zeta", 1, 2, 1, 0)]
    assert [r["key"] for r in await reporting_store.top_spenders("acme", "app", t0, end, 2)] \
        == ["batch", "chat"]


async def test_top_spenders_by_team_count_a_call_once_per_team(reporting_store, seed, tenant,
                                                               t0):
    """ann (eng, ops) calling through chat (eng) is one call for eng and one for ops."""
    for rid, app, user_id, cost in (("r1", "chat", "ann", 100), ("r2", "batch", "bob", 50),
                                    ("r3", "batch", "ann", 1)):
        await seed.log_request("acme", rid, t0, app_id=app, user_id=user_id)
        await seed.settle("acme", rid, 1, 1, cost)
    rows = await reporting_store.top_spenders("acme", "team", t0, t0 + timedelta(seconds=1), 10)
    assert [(r["key"], r["requests"], r["cost_micros"]) for r in rows] == [
        ("eng", 2, 101), ("ops", 2, 101)]


async def test_request_metrics_count_outcomes_tokens_latency_and_deny_reasons(reporting_store,
                                                                             seed, tenant, t0):
    for i, (latency, outcome) in enumerate(((10, "completed"), (20, "completed"),
                                            (30, "failed"), (40, "cancelled"))):
        await seed.log_request("acme", f"r{i}", t0, app_id="chat")
        await seed.settle("acme", f"r{i}", 100, 10, 1000, cached_input_tokens=1, outcome=outcome,
                          latency_ms=latency)
    await seed.log_request("acme", "exp", t0, app_id="chat", model="o3")
    await seed.settle("acme", "exp", 5, 500, 77, outcome="expired")
    await seed.log_request("acme", "open", t0, app_id="chat")
    for i, reason in enumerate(("RATE_LIMITED", "MODEL_NOT_ALLOWED", "RATE_LIMITED",
                                "BUDGET_EXCEEDED")):
        await seed.log_request("acme", f"d{i}", t0, app_id="chat", decision="deny", reason=reason)
    await seed.log_request("acme", "other", t0, app_id="batch")
    await seed.settle("acme", "other", 1, 1, 1, latency_ms=5000)
    end = t0 + timedelta(seconds=1)
    row = await reporting_store.request_metrics("acme", "chat", "", t0, end)
    assert {k: row[k] for k in ("requests", "allowed", "denied", "completed", "failed",
                                "cancelled", "expired", "input_tokens", "output_tokens",
                                "cached_input_tokens", "cost_micros", "latency_count")} == {
        "requests": 10, "allowed": 6, "denied": 4, "completed": 2, "failed": 1, "cancelled": 1,
        "expired": 1, "input_tokens": 405, "output_tokens": 540, "cached_input_tokens": 4,
        "cost_micros": 4077, "latency_count": 4}
    assert list(row["latency_ms"]) == pytest.approx([25.0, 37.0, 39.7])
    assert [list(r) for r in row["deny_reasons"]] == [
        ["RATE_LIMITED", 2], ["BUDGET_EXCEEDED", 1], ["MODEL_NOT_ALLOWED", 1]]
    whole = await reporting_store.request_metrics("acme", "", "", t0, end)
    assert (whole["requests"], whole["latency_count"]) == (11, 5)
    model = await reporting_store.request_metrics("acme", "", "o3", t0, end)
    assert (model["requests"], model["expired"], model["cost_micros"]) == (1, 1, 77)


async def test_request_metrics_without_latencies_have_no_percentiles(reporting_store, seed,
                                                                    tenant, t0):
    await seed.log_request("acme", "r1", t0, app_id="chat")
    await seed.settle("acme", "r1", 1, 1, 1)
    row = await reporting_store.request_metrics("acme", "", "", t0, t0 + timedelta(seconds=1))
    assert (row["requests"], row["latency_count"], row["latency_ms"]) == (1, 0, None)
    empty = await reporting_store.request_metrics("acme", "", "", t0 - timedelta(hours=1), t0)
    assert (empty["requests"], empty["latency_ms"], list(empty["deny_reasons"])) == (0, None, [])
