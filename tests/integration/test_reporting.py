"""Admin reporting against rows written straight into Postgres: GetUsage, GetBudgetSummary,
ListTopSpenders, GetRequestMetrics, and the retention of quota buckets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.helpers import expect_error, rate_limit
from warden.store.reporting import prune_quota_buckets
from warden.v1 import admin_pb2, types_pb2

APP = types_pb2.SCOPE_KIND_APP


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def now(db) -> datetime:
    return await db.fetchval("SELECT now()")


async def org(client, db, org_id: str = "acme", time_zone: str = "UTC",
              apps: tuple[str, ...] = ("chat",)) -> None:
    await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(
        id=org_id, time_zone=time_zone)), metadata=client.auth)
    for app in apps:
        await client.admin.CreateApp(admin_pb2.CreateAppRequest(
            app=admin_pb2.App(id=app, org_id=org_id)), metadata=client.auth)


async def request(db, request_id: str, at: datetime, *, org_id: str = "acme", app: str = "chat",
                  key: str = "k1", user: str = "", model: str = "gpt-4o-mini",
                  provider: str = "openai", decision: str = "allow", reason: str = "ALLOWED",
                  input_tokens: int = 0, reserved_cost: int = 0) -> None:
    await db.execute(
        "INSERT INTO requests (org_id, request_id, app_id, api_key_id, user_id, model, provider,"
        " decision, reason, input_tokens, max_output_tokens, create_time, reserved_cost_micros)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 100, $11, $12)",
        org_id, request_id, app, key, user, model, provider, decision, reason, input_tokens, at,
        reserved_cost)


async def usage(db, request_id: str, input_tokens: int, output_tokens: int, cost: int, *,
                org_id: str = "acme", cached: int = 0, outcome: str = "completed",
                latency_ms: int | None = None) -> None:
    row = await db.fetchrow("SELECT model, provider, create_time FROM requests"
                            " WHERE org_id = $1 AND request_id = $2", org_id, request_id)
    await db.execute(
        "INSERT INTO usage (org_id, request_id, input_tokens, output_tokens, cached_input_tokens,"
        " cost_micros, cost_source, model, provider, outcome, latency_ms, record_time)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'reported', $7, $8, $9, $10, $11)",
        org_id, request_id, input_tokens, output_tokens, cached, cost, row["model"],
        row["provider"], outcome, latency_ms, row["create_time"] + timedelta(seconds=1))
    await db.execute("UPDATE requests SET settle_time = $3 WHERE org_id = $1 AND request_id = $2",
                     org_id, request_id, row["create_time"] + timedelta(seconds=1))


async def policy(db, policy_id: str, kind: str, scope_id: str, policy_type: str, config: dict,
                 org_id: str = "acme", mode: str = "enforce", name: str = "") -> None:
    """Budgets and token rate limits cannot be created through Admin yet."""
    await db.execute(
        "INSERT INTO policies (id, org_id, scope_kind, scope_id, name, policy_type, mode,"
        " failure_mode, config) VALUES ($1, $2, $3, $4, $5, $6, $7, 'fail_closed', $8::jsonb)",
        policy_id, org_id, kind, scope_id, name, policy_type, mode, json.dumps(config))


def budget(period: str, limit: int, threshold: int = 0, models: tuple[str, ...] = (),
           providers: tuple[str, ...] = ()) -> dict:
    config = {"period": period, "limit_micros": str(limit)}
    if threshold:
        config["alert_threshold_percent"] = threshold
    if models or providers:
        config["selector"] = {k: list(v) for k, v in (("models", models),
                                                       ("providers", providers)) if v}
    return config


async def grant(db, policy_id: str, amount: int) -> None:
    """What sidecars' leases would have written: `amount` handed out in the policy's current
    window (half a window ago) or calendar period (in its bucket at the period's start)."""
    await db.execute("""
        INSERT INTO quota_buckets (policy_id, bucket_start, granted)
        SELECT p.id, CASE p.policy_type
            WHEN 'budget' THEN date_trunc(lower(substr(p.config ->> 'period', 8)), now(),
                                          o.time_zone)
            ELSE now() - CASE p.config ->> 'window' WHEN 'WINDOW_MINUTE' THEN interval '30 s'
                WHEN 'WINDOW_HOUR' THEN interval '30 min' ELSE interval '12 h' END END, $2
        FROM policies p JOIN orgs o ON o.id = p.org_id WHERE p.id = $1""", policy_id, amount)


def scope(kind: int, scope_id: str) -> types_pb2.Scope:
    return types_pb2.Scope(kind=kind, id=scope_id)


# GetUsage


async def test_usage_counts_the_scope_in_range_and_every_quota_of_exactly_that_scope(client, db):
    await org(client, db, apps=("chat", "other"))
    t = await now(db)
    await request(db, "a1", t - timedelta(hours=1), input_tokens=7)
    await usage(db, "a1", 100, 20, 500, cached=5)
    await request(db, "a2", t - timedelta(hours=2))
    await usage(db, "a2", 50, 10, 250)
    await request(db, "a3", t - timedelta(hours=3), decision="deny", reason="RATE_LIMITED")
    await request(db, "a4", t - timedelta(minutes=30))  # allowed, no usage yet
    await request(db, "old", t - timedelta(hours=25))  # before the default day
    await usage(db, "old", 1000, 1000, 9999)
    await request(db, "o1", t - timedelta(hours=1), app="other")
    await usage(db, "o1", 1, 1, 1)

    await rate_limit(client, APP, "chat", 10, policy_id="chat-rpm")
    await rate_limit(client, types_pb2.SCOPE_KIND_ORG, "acme", 10, policy_id="org-rpm")
    await policy(db, "chat-tokens", "app", "chat", "rate_limit",
                 {"metric": "METRIC_INPUT_TOKENS", "window": "WINDOW_HOUR", "limit": "1000"})
    await policy(db, "chat-budget", "app", "chat", "budget", budget("PERIOD_MONTH", 5000))
    await policy(db, "chat-access", "app", "chat", "model_access", {"allow_models": ["gpt-*"]})
    await grant(db, "chat-rpm", 3)
    await grant(db, "chat-tokens", 250)
    await grant(db, "chat-budget", 1200)
    await grant(db, "org-rpm", 9)

    reply = await client.admin.GetUsage(admin_pb2.GetUsageRequest(scope=scope(APP, "chat")),
                                        metadata=client.auth)
    assert (reply.requests, reply.allowed, reply.denied) == (4, 3, 1)
    assert (reply.usage.input_tokens, reply.usage.output_tokens,
            reply.usage.cached_input_tokens, reply.cost_micros) == (150, 30, 5, 750)
    assert [(s.policy_id, s.metric, s.limit, s.remaining) for s in reply.limits] == [
        ("chat-budget", types_pb2.METRIC_COST_MICROS, 5000, 3800),
        ("chat-rpm", types_pb2.METRIC_REQUESTS, 10, 7),
        ("chat-tokens", types_pb2.METRIC_INPUT_TOKENS, 1000, 750)]
    assert [(u.policy_id, u.used) for u in reply.limit_usage] == [
        ("chat-budget", 1200), ("chat-rpm", 3), ("chat-tokens", 250)]
    assert all(s.scope == scope(APP, "chat") for s in reply.limits)
    rpm_reset = reply.limits[1].reset_time.ToDatetime(UTC)
    assert t < rpm_reset <= t + timedelta(seconds=65)
    month_start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    assert reply.limits[0].reset_time.ToDatetime(UTC) == month_end

    # An explicit range reaches the old request and nothing after its end.
    reply = await client.admin.GetUsage(admin_pb2.GetUsageRequest(
        scope=scope(APP, "chat"), start_time=ts(t - timedelta(hours=26)),
        end_time=ts(t - timedelta(hours=1, seconds=30))), metadata=client.auth)
    assert (reply.requests, reply.allowed, reply.cost_micros) == (3, 2, 9999 + 250)

    whole = await client.admin.GetUsage(admin_pb2.GetUsageRequest(
        scope=scope(types_pb2.SCOPE_KIND_ORG, "acme")), metadata=client.auth)
    assert (whole.requests, whole.cost_micros) == (5, 751)
    assert [(s.policy_id, s.remaining) for s in whole.limits] == [("org-rpm", 1)]


async def test_usage_of_a_team_user_and_key(client, db):
    await org(client, db, apps=())
    await client.admin.CreateTeam(admin_pb2.CreateTeamRequest(
        team=admin_pb2.Team(id="t1", org_id="acme")), metadata=client.auth)
    await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="chat", org_id="acme", team_id="t1")), metadata=client.auth)
    await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="other", org_id="acme")), metadata=client.auth)
    for user, teams in (("u-in", ["t1"]), ("u-out", [])):
        await client.admin.CreateUser(admin_pb2.CreateUserRequest(
            user=admin_pb2.User(id=user, org_id="acme", team_ids=teams)), metadata=client.auth)
    key = (await client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id="other"),
                                           metadata=client.auth)).api_key.id
    t = await now(db) - timedelta(minutes=5)
    for rid, app, user, k, cost in (("r1", "chat", "", "k1", 1), ("r2", "other", "u-in", key, 10),
                                    ("r3", "other", "u-out", key, 100),
                                    ("r4", "chat", "u-out", "k1", 1000),
                                    ("r5", "other", "", "k2", 10000)):
        await request(db, rid, t, app=app, user=user, key=k)
        await usage(db, rid, 1, 1, cost)

    async def cost(kind: int, scope_id: str) -> int:
        reply = await client.admin.GetUsage(admin_pb2.GetUsageRequest(
            scope=scope(kind, scope_id)), metadata=client.auth)
        return reply.cost_micros

    assert await cost(types_pb2.SCOPE_KIND_TEAM, "t1") == 1 + 10 + 1000
    assert await cost(types_pb2.SCOPE_KIND_USER, "u-out") == 100 + 1000
    assert await cost(types_pb2.SCOPE_KIND_API_KEY, key) == 10 + 100
    assert await cost(APP, "other") == 10 + 100 + 10000


async def test_usage_refuses_bad_ranges_and_unknown_scopes(client, db):
    await org(client, db)
    t = await now(db)
    cases = [
        (admin_pb2.GetUsageRequest(), {"scope"}),
        (admin_pb2.GetUsageRequest(scope=types_pb2.Scope(id="chat")), {"scope.kind"}),
        (admin_pb2.GetUsageRequest(scope=scope(APP, "Not An Id")), {"scope.id"}),
        (admin_pb2.GetUsageRequest(scope=scope(APP, "chat"), start_time=ts(t),
                                   end_time=ts(t)), {"end_time"}),
        (admin_pb2.GetUsageRequest(scope=scope(APP, "chat"), start_time=ts(t + timedelta(days=2))),
         {"end_time"}),
        (admin_pb2.GetUsageRequest(scope=scope(APP, "chat"),
                                   start_time=ts(t - timedelta(days=367)), end_time=ts(t)),
         {"end_time"}),
        (admin_pb2.GetUsageRequest(scope=scope(APP, "chat"),
                                   start_time=timestamp_pb2.Timestamp(seconds=10**12)),
         {"start_time"}),
    ]
    descriptions = []
    for req, fields in cases:
        error = await expect_error(client.admin.GetUsage(req, metadata=client.auth))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, req
        assert set(error.violations) == fields, req
        descriptions += error.violations.values()
    assert "must be at most 366 days after start_time" in descriptions
    ok = await client.admin.GetUsage(admin_pb2.GetUsageRequest(
        scope=scope(APP, "chat"), start_time=ts(t - timedelta(days=366)), end_time=ts(t)),
        metadata=client.auth)
    assert ok.requests == 0 and list(ok.limits) == []
    for kind, scope_id in ((APP, "nope"), (types_pb2.SCOPE_KIND_ORG, "nope"),
                           (types_pb2.SCOPE_KIND_TEAM, "nope"),
                           (types_pb2.SCOPE_KIND_API_KEY, "nope")):
        error = await expect_error(client.admin.GetUsage(admin_pb2.GetUsageRequest(
            scope=scope(kind, scope_id)), metadata=client.auth))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


# GetBudgetSummary


async def test_budget_summary_in_the_org_time_zone(client, db):
    zone = ZoneInfo("America/New_York")
    await org(client, db, time_zone="America/New_York", apps=("chat", "other"))
    t = await now(db)
    local = t.astimezone(zone)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = day_start + timedelta(days=1)  # wall-clock arithmetic: the next midnight
    month_start = day_start.replace(day=1)
    await policy(db, "b-day", "app", "chat", "budget",
                 budget("PERIOD_DAY", 1000, threshold=50, models=("gpt-4o*",)), name="daily")
    await policy(db, "b-month", "org", "acme", "budget", budget("PERIOD_MONTH", 100_000, 90),
                 mode="dry_run")
    await policy(db, "rpm", "app", "chat", "rate_limit",
                 {"metric": "METRIC_REQUESTS", "window": "WINDOW_MINUTE", "limit": "5"})
    await grant(db, "b-day", 900)

    just_in, just_out = day_start + timedelta(minutes=1), day_start - timedelta(minutes=1)
    await request(db, "in1", just_in, model="gpt-4o-mini")
    await usage(db, "in1", 10, 10, 400)
    await request(db, "in2", just_in, model="gpt-4o", reserved_cost=150)  # unsettled
    await request(db, "in3", just_in, model="claude-3", provider="anthropic", reserved_cost=70)
    await usage(db, "in3", 1, 1, 80)  # not the daily budget's model
    await request(db, "in4", just_in, model="gpt-4o", decision="deny", reason="BUDGET_EXHAUSTED",
                  reserved_cost=999)  # denied: neither spent nor reserved
    await request(db, "other", just_in, app="other", model="gpt-4o")
    await usage(db, "other", 1, 1, 3000)  # another app: only the org's budget
    await request(db, "yesterday", just_out, model="gpt-4o-mini")
    await usage(db, "yesterday", 1, 1, 5000)

    reply = await client.admin.GetBudgetSummary(
        admin_pb2.GetBudgetSummaryRequest(org_id="acme"), metadata=client.auth)
    assert (reply.currency, reply.time_zone) == ("USD", "America/New_York")
    day, month = reply.budgets
    assert (day.policy_id, day.name, day.mode, day.period, day.scope) == (
        "b-day", "daily", types_pb2.POLICY_MODE_ENFORCE, types_pb2.PERIOD_DAY, scope(APP, "chat"))
    assert day.period_start.ToDatetime(UTC) == day_start
    assert day.period_end.ToDatetime(UTC) == day_end
    assert (day.limit_micros, day.spent_micros, day.reserved_micros, day.used_micros,
            day.remaining_micros) == (1000, 400, 150, 900, 100)
    assert day.percent_used == pytest.approx(90.0)
    assert day.percent_spent == pytest.approx(40.0)
    assert (day.alert_threshold_percent, day.alert_threshold_crossed) == (50, False)

    assert (month.policy_id, month.mode, month.period) == (
        "b-month", types_pb2.POLICY_MODE_DRY_RUN, types_pb2.PERIOD_MONTH)
    assert month.period_start.ToDatetime(UTC) == month_start
    spent = 400 + 80 + 3000 + (5000 if just_out >= month_start else 0)
    assert (month.spent_micros, month.reserved_micros, month.used_micros,
            month.remaining_micros) == (spent, 150, 0, 100_000)
    assert month.alert_threshold_crossed is False

    await usage(db, "in2", 1, 1, 120)  # settled: spent, no longer reserved; 52 % crosses 50
    scoped = await client.admin.GetBudgetSummary(admin_pb2.GetBudgetSummaryRequest(
        org_id="acme", scope=scope(APP, "chat")), metadata=client.auth)
    [day] = scoped.budgets
    assert (day.policy_id, day.spent_micros, day.reserved_micros) == ("b-day", 520, 0)
    assert day.alert_threshold_crossed is True
    none = await client.admin.GetBudgetSummary(admin_pb2.GetBudgetSummaryRequest(
        org_id="acme", scope=scope(APP, "other")), metadata=client.auth)
    assert list(none.budgets) == []


async def test_budget_summary_selector_patterns_are_the_engines(client, db):
    await org(client, db)
    await policy(db, "b", "org", "acme", "budget",
                 budget("PERIOD_MONTH", 10**6, providers=("open?i",), models=("gpt_4*",)))
    t = await now(db)
    for rid, model, provider, cost in (("r1", "gpt_4o", "openai", 1), ("r2", "gpt%4o", "openai", 2),
                                       ("r3", "gpt_4", "azure", 4), ("r4", "gptx4o", "openai", 8)):
        await request(db, rid, t, model=model, provider=provider)
        await usage(db, rid, 1, 1, cost)
    reply = await client.admin.GetBudgetSummary(
        admin_pb2.GetBudgetSummaryRequest(org_id="acme"), metadata=client.auth)
    assert reply.budgets[0].spent_micros == 1


async def test_budget_summary_errors(client, db):
    await org(client, db)
    await org(client, db, org_id="globex", apps=("g-app",))
    error = await expect_error(client.admin.GetBudgetSummary(
        admin_pb2.GetBudgetSummaryRequest(org_id="", scope=types_pb2.Scope(
            kind=99, id="x")), metadata=client.auth))
    assert set(error.violations) == {"org_id", "scope.kind"}
    for req in (admin_pb2.GetBudgetSummaryRequest(org_id="nope"),
                admin_pb2.GetBudgetSummaryRequest(org_id="acme", scope=scope(APP, "g-app"))):
        error = await expect_error(client.admin.GetBudgetSummary(req, metadata=client.auth))
        assert error.code == grpc.StatusCode.NOT_FOUND, req


# ListTopSpenders


async def test_top_spenders_order_limit_and_groupings(client, db):
    await org(client, db, apps=("a", "b", "c", "d"))
    await client.admin.CreateTeam(admin_pb2.CreateTeamRequest(
        team=admin_pb2.Team(id="t1", org_id="acme")), metadata=client.auth)
    await client.admin.CreateUser(admin_pb2.CreateUserRequest(
        user=admin_pb2.User(id="u1", org_id="acme", team_ids=["t1"])), metadata=client.auth)
    await db.execute("UPDATE apps SET team_id = 't1' WHERE id = 'a'")
    t = await now(db) - timedelta(hours=1)
    rows = (("r1", "a", "u1", "m1", 10, 5, 300), ("r2", "a", "", "m2", 20, 5, 200),
            ("r3", "b", "u1", "m1", 1, 1, 500), ("r4", "c", "", "m2", 3, 3, 500),
            ("r5", "d", "", "m1", 0, 0, 0))
    for rid, app, user, model, inp, out, cost in rows:
        await request(db, rid, t, app=app, user=user, model=model)
        await usage(db, rid, inp, out, cost)
    await request(db, "deny", t, app="d", decision="deny", reason="RATE_LIMITED")
    await request(db, "late", t + timedelta(days=2), app="d")
    await usage(db, "late", 1, 1, 10**6)

    async def top(group_by: int, limit: int = 0) -> list[tuple]:
        reply = await client.admin.ListTopSpenders(admin_pb2.ListTopSpendersRequest(
            org_id="acme", group_by=group_by, limit=limit), metadata=client.auth)
        return [(s.key, s.requests, s.input_tokens, s.output_tokens, s.cost_micros)
                for s in reply.spenders]

    assert await top(admin_pb2.SPEND_GROUP_BY_APP) == [
        ("a", 2, 30, 10, 500), ("b", 1, 1, 1, 500), ("c", 1, 3, 3, 500), ("d", 2, 0, 0, 0)]
    assert await top(admin_pb2.SPEND_GROUP_BY_APP, limit=2) == [
        ("a", 2, 30, 10, 500), ("b", 1, 1, 1, 500)]
    assert await top(admin_pb2.SPEND_GROUP_BY_USER) == [
        ("u1", 2, 11, 6, 800), ("", 4, 23, 8, 700)]
    assert [r[0] for r in await top(admin_pb2.SPEND_GROUP_BY_MODEL)] == ["m1", "m2", "gpt-4o-mini"]
    assert await top(admin_pb2.SPEND_GROUP_BY_PROVIDER) == [("openai", 6, 34, 14, 1500)]
    assert await top(admin_pb2.SPEND_GROUP_BY_API_KEY) == [("k1", 6, 34, 14, 1500)]
    # r1 counts once although both its app and its user are in t1.
    assert await top(admin_pb2.SPEND_GROUP_BY_TEAM) == [("t1", 3, 31, 11, 1000)]

    wide = await client.admin.ListTopSpenders(admin_pb2.ListTopSpendersRequest(
        org_id="acme", group_by=admin_pb2.SPEND_GROUP_BY_APP, start_time=ts(t),
        end_time=ts(t + timedelta(days=3))), metadata=client.auth)
    assert wide.spenders[0].key == "d" and wide.spenders[0].cost_micros == 10**6


async def test_top_spenders_refuses_bad_input(client, db):
    await org(client, db)
    for req, fields in (
        (admin_pb2.ListTopSpendersRequest(org_id="acme"), {"group_by"}),
        (admin_pb2.ListTopSpendersRequest(org_id="acme", group_by=42), {"group_by"}),
        (admin_pb2.ListTopSpendersRequest(org_id="acme", group_by=admin_pb2.SPEND_GROUP_BY_APP,
                                          limit=1001), {"limit"}),
        (admin_pb2.ListTopSpendersRequest(group_by=admin_pb2.SPEND_GROUP_BY_APP, limit=-1),
         {"org_id", "limit"}),
    ):
        error = await expect_error(client.admin.ListTopSpenders(req, metadata=client.auth))
        assert (error.code, set(error.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, fields)
    error = await expect_error(client.admin.ListTopSpenders(admin_pb2.ListTopSpendersRequest(
        org_id="nope", group_by=admin_pb2.SPEND_GROUP_BY_APP), metadata=client.auth))
    assert error.code == grpc.StatusCode.NOT_FOUND
    reply = await client.admin.ListTopSpenders(admin_pb2.ListTopSpendersRequest(
        org_id="acme", group_by=admin_pb2.SPEND_GROUP_BY_APP, limit=1000), metadata=client.auth)
    assert list(reply.spenders) == []


# GetRequestMetrics


async def test_request_metrics_counts_outcomes_tokens_and_latency_percentiles(client, db):
    await org(client, db, apps=("chat", "other"))
    await org(client, db, org_id="globex", apps=("g-app",))
    t = await now(db) - timedelta(minutes=10)
    for i, (latency, outcome) in enumerate(((10, "completed"), (20, "completed"),
                                            (30, "failed"), (40, "cancelled"))):
        await request(db, f"r{i}", t)
        await usage(db, f"r{i}", 100, 10, 1000, cached=1, outcome=outcome, latency_ms=latency)
    await request(db, "exp", t, model="gpt-4o")
    await usage(db, "exp", 5, 500, 77, outcome="expired")  # settled at its reservation
    await request(db, "open", t)
    for i, reason in enumerate(("RATE_LIMITED", "MODEL_NOT_ALLOWED", "RATE_LIMITED")):
        await request(db, f"d{i}", t, decision="deny", reason=reason)
    await request(db, "o", t, app="other")
    await usage(db, "o", 1, 1, 1, latency_ms=1000)
    await request(db, "g", t, org_id="globex", app="g-app")

    reply = await client.admin.GetRequestMetrics(admin_pb2.GetRequestMetricsRequest(
        org_id="acme", app_id="chat"), metadata=client.auth)
    assert (reply.requests, reply.allowed, reply.denied) == (9, 6, 3)
    assert (reply.completed, reply.failed, reply.cancelled, reply.expired) == (2, 1, 1, 1)
    assert (reply.usage.input_tokens, reply.usage.output_tokens,
            reply.usage.cached_input_tokens, reply.cost_micros) == (405, 540, 4, 4077)
    assert reply.latency.count == 4
    assert (reply.latency.p50_ms, reply.latency.p90_ms, reply.latency.p99_ms) == \
        pytest.approx((25.0, 37.0, 39.7))
    assert [(r.reason, r.count) for r in reply.deny_reasons] == [
        (types_pb2.REASON_RATE_LIMITED, 2), (types_pb2.REASON_MODEL_NOT_ALLOWED, 1)]

    whole = await client.admin.GetRequestMetrics(admin_pb2.GetRequestMetricsRequest(
        org_id="acme"), metadata=client.auth)
    assert (whole.requests, whole.latency.count) == (10, 5)
    model = await client.admin.GetRequestMetrics(admin_pb2.GetRequestMetricsRequest(
        org_id="acme", model="gpt-4o"), metadata=client.auth)
    assert (model.requests, model.expired, model.cost_micros) == (1, 1, 77)
    assert not model.HasField("latency")
    empty = await client.admin.GetRequestMetrics(admin_pb2.GetRequestMetricsRequest(
        org_id="acme", end_time=ts(t)), metadata=client.auth)
    assert (empty.requests, list(empty.deny_reasons)) == (0, [])
    assert not empty.HasField("latency")


async def test_request_metrics_refuses_bad_input(client, db):
    await org(client, db)
    await org(client, db, org_id="globex", apps=("g-app",))
    error = await expect_error(client.admin.GetRequestMetrics(admin_pb2.GetRequestMetricsRequest(
        org_id="ACME", app_id="bad app", model="m" * 201), metadata=client.auth))
    assert set(error.violations) == {"org_id", "app_id", "model"}
    for req in (admin_pb2.GetRequestMetricsRequest(org_id="nope"),
                admin_pb2.GetRequestMetricsRequest(org_id="acme", app_id="g-app"),
                admin_pb2.GetRequestMetricsRequest(org_id="acme", app_id="nope")):
        error = await expect_error(client.admin.GetRequestMetrics(req, metadata=client.auth))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"), req


# Retention


async def test_prune_deletes_only_buckets_no_window_or_period_counts(client, db):
    await org(client, db, time_zone="America/New_York")
    await org(client, db, org_id="utc-org", apps=())
    await policy(db, "rpm", "app", "chat", "rate_limit",
                 {"metric": "METRIC_REQUESTS", "window": "WINDOW_MINUTE", "limit": "5"})
    await policy(db, "rpd", "app", "chat", "rate_limit",
                 {"metric": "METRIC_REQUESTS", "window": "WINDOW_DAY", "limit": "5"})
    await policy(db, "daily", "app", "chat", "budget", budget("PERIOD_DAY", 10))
    await policy(db, "monthly", "org", "utc-org", "budget", budget("PERIOD_MONTH", 10),
                 org_id="utc-org")
    t = await now(db)
    today = t.astimezone(ZoneInfo("America/New_York")).replace(hour=0, minute=0, second=0,
                                                               microsecond=0)
    yesterday = today - timedelta(days=1)
    this_month = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    buckets = {
        ("rpm", t - timedelta(seconds=30)): "kept",  # in the window
        ("rpm", t - timedelta(minutes=1, seconds=30)): "pruned at 0",
        ("rpm", t - timedelta(days=3)): "pruned at 2 days",
        ("rpd", t - timedelta(hours=23)): "kept",
        ("rpd", t - timedelta(hours=25)): "pruned at 0",
        ("daily", today): "kept",
        ("daily", yesterday): "pruned at 0",
        ("monthly", this_month): "kept",
        ("monthly", last_month): "pruned at 2 days",
    }
    for (policy_id, start), _ in buckets.items():
        await db.execute("INSERT INTO quota_buckets (policy_id, bucket_start, granted)"
                         " VALUES ($1, $2, 1)", policy_id, start)

    async def left() -> set[tuple[str, datetime]]:
        return {(r["policy_id"], r["bucket_start"])
                for r in await db.fetch("SELECT policy_id, bucket_start FROM quota_buckets")}

    assert await prune_quota_buckets(db, timedelta(days=2)) == 2
    assert await left() == {k for k, v in buckets.items() if v != "pruned at 2 days"}
    assert await prune_quota_buckets(db, timedelta(0)) == 3
    assert await left() == {k for k, v in buckets.items() if v == "kept"}
    assert await prune_quota_buckets(db, timedelta(0)) == 0
