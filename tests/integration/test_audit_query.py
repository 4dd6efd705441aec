"""Reading the audit trail back through Admin: ListAuditEvents (each filter, keyset pages that
hold while events arrive, validated page tokens) and GetRequestStory (decision, reservation,
settlement and events of one request id). Events and decisions go in through the data plane and
the journal, which the tests flush before reading."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from tests.conftest import Client, settings_for
from tests.helpers import authorize_request, expect_error, new_key, rate_limit, tenant
from warden.app import App
from warden.v1 import admin_pb2, types_pb2, warden_pb2

ALLOW, DENY = warden_pb2.DECISION_ALLOW, warden_pb2.DECISION_DENY


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


@dataclass(frozen=True)
class Event:
    id: str
    at: datetime
    org: str = "acme"
    app: str = "chat"
    action: str = "llm.call"
    user: str = ""
    model: str = ""
    request_id: str = ""
    attributes: dict = field(default_factory=dict, hash=False, compare=False)

    def proto(self) -> warden_pb2.AuditEvent:
        attributes = struct_pb2.Struct()
        attributes.update(self.attributes)
        return warden_pb2.AuditEvent(event_id=self.id, time=ts(self.at), action=self.action,
                                     user_id=self.user, model=self.model,
                                     request_id=self.request_id, attributes=attributes)


class Trail:
    """Sends events through Audit with one key per (org, app), remembers what it sent."""

    def __init__(self, client, warden) -> None:
        self.client, self.warden = client, warden
        self.keys: dict[tuple[str, str], str] = {}
        self.sent: list[Event] = []

    async def tenant(self, org: str, apps: tuple[str, ...]) -> None:
        self.keys[(org, apps[0])] = await tenant(self.client, org, apps[0])
        # Only the events a test sends: decision explanations are test_audit_policy.py's.
        await self.client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(
            policy=types_pb2.Policy(
                scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id=org),
                audit=types_pb2.AuditConfig(allow_sample_rate=0, deny_sample_rate=0))),
            metadata=self.client.auth)
        for app in apps[1:]:
            await self.client.admin.CreateApp(admin_pb2.CreateAppRequest(
                app=admin_pb2.App(id=app, org_id=org)), metadata=self.client.auth)
            self.keys[(org, app)] = await new_key(self.client, app)

    async def send(self, events: list[Event]) -> None:
        for (org, app), group in itertools.groupby(sorted(events, key=lambda e: (e.org, e.app)),
                                                  key=lambda e: (e.org, e.app)):
            await self.client.warden.Audit(warden_pb2.AuditRequest(
                api_key=self.keys[(org, app)], events=[e.proto() for e in group]))
        self.sent += events
        await self.warden.components.flusher.flush()

    async def list(self, **fields) -> admin_pb2.ListAuditEventsResponse:
        fields.setdefault("org_id", "acme")
        return await self.client.admin.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(**fields), metadata=self.client.auth)

    async def ids(self, **fields) -> list[str]:
        """Every event id of the listing, through all pages."""
        ids, token = [], ""
        while True:
            reply = await self.list(page_token=token, **fields)
            ids += [e.event.event_id for e in reply.events]
            if not (token := reply.next_page_token):
                return ids

    def expected(self, keep) -> list[str]:
        """Ids of the sent acme events that `keep` accepts, in the listing's order."""
        return [e.id for e in sorted(self.sent, key=lambda e: (e.at, e.id))
                if e.org == "acme" and keep(e)]


def _base() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


async def test_each_filter_narrows_the_listing(client, warden):
    trail, base = Trail(client, warden), _base()
    await trail.tenant("acme", ("chat", "search"))
    await trail.tenant("other", ("bot",))
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "search", 1)
    chat, search = trail.keys[("acme", "chat")], trail.keys[("acme", "search")]
    assert (await client.warden.Authorize(authorize_request(chat, "r-ok"))).decision == ALLOW
    assert (await client.warden.Authorize(authorize_request(search, "r-s1"))).decision == ALLOW
    assert (await client.warden.Authorize(authorize_request(search, "r-no"))).decision == DENY
    # The other org uses the same request ids and values: it must never show up.
    await client.warden.Authorize(authorize_request(trail.keys[("other", "bot")], "r-no"))
    events = [
        Event(f"e{i:02d}", base + timedelta(minutes=i), app=app, action=action, user=user,
              model=model, request_id=rid, attributes={"i": i})
        for i, (app, action, user, model, rid) in enumerate(itertools.product(
            ("chat", "search"), ("llm.call", "tool.call"), ("", "alice", "bob"),
            ("gpt-4o-mini", "claude"), ("", "r-ok", "r-no", "r-s1")))]
    others = [Event(f"x{i}", e.at, org="other", app="bot", action=e.action, user=e.user,
                    model=e.model, request_id=e.request_id) for i, e in enumerate(events)]
    await trail.send(events + others)

    assert await trail.ids() == trail.expected(lambda e: True)
    assert len(await trail.ids()) == len(events) == 96
    decision_of = {"r-ok": "allow", "r-s1": "allow", "r-no": "deny"}
    cases = [
        ({"app_id": "search"}, lambda e: e.app == "search"),
        ({"user_id": "alice"}, lambda e: e.user == "alice"),
        ({"action": "tool.call"}, lambda e: e.action == "tool.call"),
        ({"model": "claude"}, lambda e: e.model == "claude"),
        ({"request_id": "r-ok"}, lambda e: e.request_id == "r-ok"),
        ({"decision": ALLOW}, lambda e: decision_of.get(e.request_id) == "allow"),
        ({"decision": DENY}, lambda e: decision_of.get(e.request_id) == "deny"),
        # [start, end): the event exactly at start is in, the one exactly at end is out.
        ({"start_time": ts(base + timedelta(minutes=10)),
          "end_time": ts(base + timedelta(minutes=20))},
         lambda e: base + timedelta(minutes=10) <= e.at < base + timedelta(minutes=20)),
        ({"start_time": ts(base + timedelta(minutes=90))},
         lambda e: e.at >= base + timedelta(minutes=90)),
        ({"end_time": ts(base + timedelta(minutes=3))},
         lambda e: e.at < base + timedelta(minutes=3)),
        ({"app_id": "chat", "user_id": "bob", "action": "llm.call", "model": "gpt-4o-mini",
          "decision": ALLOW},
         lambda e: (e.app, e.user, e.action, e.model) == ("chat", "bob", "llm.call",
                                                          "gpt-4o-mini")
         and e.request_id in ("r-ok", "r-s1")),
        ({"user_id": "nobody"}, lambda e: False),
    ]
    for filters, keep in cases:
        expected = trail.expected(keep)
        assert await trail.ids(page_size=5, **filters) == expected, filters
        assert expected or filters == {"user_id": "nobody"}, filters

    [stored] = (await trail.list(request_id="r-s1", user_id="alice", model="claude",
                                 action="tool.call", app_id="search")).events
    sent = next(e for e in events if e.id == stored.event.event_id)
    assert (stored.org_id, stored.app_id) == ("acme", "search")
    assert stored.event == sent.proto()
    assert stored.receive_time.ToDatetime(UTC) > sent.at


async def test_pages_hold_while_events_arrive(client, warden):
    """Every event there at the start comes exactly once, in order, however many arrive between
    pages; an arrival after the last event returned comes too, one before it does not."""
    trail, base = Trail(client, warden), _base()
    await trail.tenant("acme", ("chat",))
    # Three events per second, so that page boundaries fall between events of equal time.
    first = [Event(f"a{i:03d}", base + timedelta(seconds=i // 3)) for i in range(120)]
    await trail.send(first)
    seen, token, page, arrived_after, arrived_before = [], "", 0, [], []
    while True:
        reply = await trail.list(page_size=7 + page % 3, page_token=token)
        seen += [(e.event.time.ToDatetime(UTC), e.event.event_id) for e in reply.events]
        if not (token := reply.next_page_token):
            break
        page += 1
        last_at = seen[-1][0]
        before = Event(f"b{page:03d}", last_at - timedelta(milliseconds=1))
        tie = Event(f"{seen[-1][1]}-0", last_at)  # same time, id sorts just after the last
        after = Event(f"c{page:03d}", last_at + timedelta(milliseconds=500))
        await trail.send([before, tie, after])
        arrived_before.append(before.id)
        arrived_after += [tie.id, after.id]
    ids = [i for _, i in seen]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert seen == sorted(seen)
    assert {e.id for e in first} <= set(ids), "an event present from the start was skipped"
    assert set(arrived_after) <= set(ids)
    assert not set(arrived_before) & set(ids)
    assert page > 15


async def test_bad_listing_requests_name_the_field(client, warden):
    trail = Trail(client, warden)
    await trail.tenant("acme", ("chat",))
    await trail.tenant("other", ("bot",))
    base = _base()
    await trail.send([Event(f"e{i}", base + timedelta(seconds=i)) for i in range(5)] +
                     [Event("t0", base, action="tool.call")])
    token = (await trail.list(page_size=2)).next_page_token
    assert token
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    # The token's own bytes, with the cursor moved back by one event: its MAC no longer fits.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    version, micros, last_id = json.loads(raw[16:])
    assert last_id == "t0"
    forged = base64.urlsafe_b64encode(raw[:16] + json.dumps([version, micros, "e0"]).encode())
    forged = forged.decode().rstrip("=")
    bad_time = timestamp_pb2.Timestamp(seconds=1, nanos=-5)
    cases = [
        ({"org_id": ""}, {"org_id"}),
        ({"org_id": "Not An Id"}, {"org_id"}),
        ({"app_id": "Chat!"}, {"app_id"}),
        ({"model": "m" * 201, "action": "a" * 201, "user_id": "u" * 201,
          "request_id": "r" * 201}, {"model", "action", "user_id", "request_id"}),
        ({"decision": 7}, {"decision"}),
        ({"start_time": ts(base), "end_time": ts(base)}, {"end_time"}),
        ({"start_time": ts(base), "end_time": ts(base - timedelta(seconds=1))}, {"end_time"}),
        ({"start_time": bad_time}, {"start_time"}),
        ({"page_size": -1}, {"page_size"}),
        ({"page_size": 1001}, {"page_size"}),
        ({"page_token": "garbage"}, {"page_token"}),
        ({"page_token": "é"}, {"page_token"}),
        ({"page_token": tampered}, {"page_token"}),
        ({"page_token": forged}, {"page_token"}),
        # A real token, but of another query: other filters or another org.
        ({"page_token": token, "action": "tool.call"}, {"page_token"}),
        ({"page_token": token, "org_id": "other"}, {"page_token"}),
        ({"page_token": token, "start_time": ts(base)}, {"page_token"}),
        # Every problem at once.
        ({"org_id": "", "page_size": 5000, "page_token": "x", "decision": -1},
         {"org_id", "page_size", "page_token", "decision"}),
    ]
    for fields, bad in cases:
        request = admin_pb2.ListAuditEventsRequest(**{"org_id": "acme", **fields})
        error = await expect_error(client.admin.ListAuditEvents(request, metadata=client.auth))
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "INVALID_ARGUMENT"), fields
        assert set(error.violations) == bad, fields
    assert "next_page_token" in error.violations["page_token"]

    error = await expect_error(trail.list(org_id="nope"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert "nope" in error.message
    # An app filter is not checked against the directory: a deleted app's events stay listed.
    assert (await trail.list(app_id="gone")).events == []


async def test_a_token_survives_another_page_size_and_another_sidecar(client, warden, db_url,
                                                                     tmp_path):
    trail, base = Trail(client, warden), _base()
    await trail.tenant("acme", ("chat",))
    await trail.send([Event(f"e{i}", base + timedelta(seconds=i)) for i in range(6)])
    token = (await trail.list(page_size=2)).next_page_token
    reply = await trail.list(page_size=3, page_token=token)
    assert [e.event.event_id for e in reply.events] == ["e2", "e3", "e4"]
    # Another sidecar of the same database (same key pepper) takes the token.
    other = App(settings_for(db_url, str(tmp_path / "b")))
    await other.start()
    try:
        async with grpc.aio.insecure_channel(other.target) as channel:
            reply = await Client(channel).admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(
                org_id="acme", page_size=10, page_token=token), metadata=client.auth)
    finally:
        await other.stop()
    assert [e.event.event_id for e in reply.events] == ["e2", "e3", "e4", "e5"]
    assert reply.next_page_token == ""


async def _story(client, request_id: str, org_id: str = "acme"):
    return await client.admin.GetRequestStory(admin_pb2.GetRequestStoryRequest(
        org_id=org_id, request_id=request_id), metadata=client.auth)


async def test_the_story_of_an_allowed_and_settled_request(client, warden):
    trail, base = Trail(client, warden), _base()
    await trail.tenant("acme", ("chat",))
    key = trail.keys[("acme", "chat")]
    await client.admin.SetModelPrice(admin_pb2.SetModelPriceRequest(price=admin_pb2.ModelPrice(
        provider="openai", model="gpt-4o-mini", input_micros_per_million=150_000,
        output_micros_per_million=600_000)), metadata=client.auth)
    decided = await client.warden.Authorize(authorize_request(
        key, "req-7", provider="openai", input_tokens=1200, max_output_tokens=400,
        user_id="alice"))
    assert decided.decision == ALLOW and decided.reservation_id
    settled = await client.warden.RecordUsage(warden_pb2.RecordUsageRequest(
        request_id="req-7", api_key=key, usage=types_pb2.Usage(input_tokens=1200,
                                                               output_tokens=300),
        outcome=warden_pb2.OUTCOME_COMPLETED, latency=duration_pb2.Duration(seconds=2)))
    await trail.send([Event("late", base + timedelta(minutes=2), request_id="req-7",
                            action="llm.response", attributes={"status": 200}),
                      Event("early", base + timedelta(minutes=1), request_id="req-7"),
                      Event("unrelated", base + timedelta(minutes=1), request_id="req-8")])

    story = await _story(client, "req-7")
    # The log keeps the end user the app named even when the org has no such user (Authorize's
    # identity then has none: no user scope applied).
    assert (decided.identity.user_id, story.identity.user_id) == ("", "alice")
    assert (story.identity.org_id, story.identity.app_id, story.identity.api_key_id) == \
        ("acme", "chat", decided.identity.api_key_id)
    assert decided.identity.api_key_id
    assert (story.request.request_id, story.request.input_tokens) == ("req-7", 1200)
    d = story.decision
    assert (d.decision, d.reason, d.reservation_id, d.identity) == \
        (ALLOW, types_pb2.REASON_ALLOWED, decided.reservation_id, story.identity)
    # The reservation: what the call was allowed to spend, as Authorize routed it.
    assert (d.route.provider, d.route.model, d.route.max_output_tokens) == \
        (decided.route.provider, decided.route.model, decided.route.max_output_tokens) == \
        ("openai", "gpt-4o-mini", 400)
    u = story.usage
    assert (u.request_id, u.reservation_id, u.model, u.provider, u.outcome) == \
        ("req-7", decided.reservation_id, "gpt-4o-mini", "openai", warden_pb2.OUTCOME_COMPLETED)
    assert (u.usage.input_tokens, u.usage.output_tokens, u.cost_micros) == \
        (1200, 300, settled.cost_micros)
    assert settled.cost_micros == 360
    assert u.latency.ToTimedelta() == timedelta(seconds=2)
    assert [e.event.event_id for e in story.events] == ["early", "late"]
    assert story.events[1].event.attributes["status"] == 200
    assert story.events[1].app_id == "chat"


async def test_the_story_of_a_denied_request_and_of_events_alone(client, warden):
    trail, base = Trail(client, warden), _base()
    await trail.tenant("acme", ("chat",))
    await trail.tenant("other", ("bot",))
    key = trail.keys[("acme", "chat")]
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1)
    await client.warden.Authorize(authorize_request(key, "first"))
    denied = await client.warden.Authorize(authorize_request(
        key, "second", model="gpt-4o", max_output_tokens=50))
    assert denied.decision == DENY
    await trail.send([Event("only", base, request_id="no-decision"),
                      Event("x", base, org="other", app="bot", request_id="second")])

    story = await _story(client, "second")
    assert (story.decision.decision, story.decision.reason) == \
        (DENY, types_pb2.REASON_RATE_LIMITED)
    assert not story.decision.HasField("route") and not story.decision.reservation_id
    assert (story.request.model, story.request.max_output_tokens) == ("gpt-4o", 50)
    assert not story.HasField("usage")
    assert list(story.events) == []  # the other org's event of the same id is not in it

    story = await _story(client, "no-decision")
    assert not story.HasField("decision") and not story.HasField("identity")
    assert [e.event.event_id for e in story.events] == ["only"]

    for request_id, org_id in (("never", "acme"), ("first", "other")):
        error = await expect_error(_story(client, request_id, org_id))
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
        assert request_id in error.message
    error = await expect_error(_story(client, "first", "nope"))
    assert error.code == grpc.StatusCode.NOT_FOUND and "org 'nope'" in error.message
    for fields, bad in (({"org_id": "", "request_id": ""}, {"org_id", "request_id"}),
                        ({"org_id": "acme", "request_id": "r" * 201}, {"request_id"})):
        error = await expect_error(client.admin.GetRequestStory(
            admin_pb2.GetRequestStoryRequest(**fields), metadata=client.auth))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error.violations) == bad


async def test_an_expired_reservation_reads_as_its_reserved_amount(client, warden, db):
    """A reservation nobody settled is stored at its reserved amount with outcome 'expired',
    which RecordUsageRequest cannot name: outcome unspecified."""
    key = await tenant(client)
    decided = await client.warden.Authorize(authorize_request(key, "r1", input_tokens=10,
                                                              max_output_tokens=20))
    await warden.components.flusher.flush()
    await db.execute("UPDATE requests SET expire_time = now() - interval '1 second'")
    await db.fetchval("SELECT warden_expire(10)")  # unless the sidecar's own run came first
    story = await _story(client, "r1")
    assert story.usage.outcome == warden_pb2.OUTCOME_UNSPECIFIED
    assert (story.usage.usage.input_tokens, story.usage.usage.output_tokens) == (10, 20)
    assert story.usage.reservation_id == decided.reservation_id
    assert not story.usage.HasField("latency")


async def test_both_need_the_admin_token(client, warden):
    key = await tenant(client)
    calls = [(client.admin.ListAuditEvents, admin_pb2.ListAuditEventsRequest(org_id="acme")),
             (client.admin.GetRequestStory,
              admin_pb2.GetRequestStoryRequest(org_id="acme", request_id="r1"))]
    for method, request in calls:
        for metadata, reason in (((), "ADMIN_TOKEN_MISSING"),
                                 ((("authorization", "Bearer wrong"),), "ADMIN_TOKEN_INVALID"),
                                 ((("authorization", f"Bearer {key}"),), "ADMIN_TOKEN_INVALID")):
            error = await expect_error(method(request, metadata=metadata))
            assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
