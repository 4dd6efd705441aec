"""The realistic tenant of bench/authorize.py, bench/latency.py, bench/decision_log.py and
bench/stages.py, its request and usage, the calls made with them, and the no-op server's
answers, which must stay the shape and size of Warden's.

Org `bench`, team `bench-team`, app `bench-app` and user `bench-user` (both in the team), a key
of that user for that app, a price for gpt-4o-mini, and six policies, none of which ever
denies during a bench:

- org model_access: allow gpt-4o-mini, gpt-4o and claude-3-5-*, deny provider unvetted,
  aliases chat -> gpt-4o-mini and smart -> gpt-4o (resolves the alias the bench asks for and
  checks every route target);
- team routing: gpt-4o-mini -> openai, then azure; max_tokens_cap 1024;
- app and user rate limits of 10^9 requests a minute, an app rate limit of 10^12 total tokens
  a minute, an org budget of 10^15 micros a month: four quota leases per call.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import grpc
from google.protobuf import timestamp_pb2
from load import Call, WrongAnswer, allowed, raw_call

from warden.engine.pricing import Price, cost_micros
from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2, warden_pb2_grpc

ORG_ID = "bench"
TEAM_ID = "bench-team"
APP_ID = "bench-app"
USER_ID = "bench-user"
ACCESS_POLICY_ID = "bench-org-models"
ROUTING_POLICY_ID = "bench-team-routing"
APP_LIMIT_ID = "bench-app-rpm"
USER_LIMIT_ID = "bench-user-rpm"
TOKEN_LIMIT_ID = "bench-app-tokens"
BUDGET_ID = "bench-org-budget"
AUDIT_POLICY_ID = "bench-decision-log"
RATE_LIMIT = 10**9  # requests a minute
TOKEN_LIMIT = 10**12  # total tokens a minute: the largest limit Warden accepts
BUDGET_MICROS = 10**15  # a month
# The caller asks for an alias; the org resolves it to MODEL and the team routes MODEL to
# PROVIDER, with FALLBACK_PROVIDER next.
MODEL_ALIAS = "chat"
MODEL = "gpt-4o-mini"
PROVIDER = "openai"
FALLBACK_PROVIDER = "azure"
MAX_OUTPUT_TOKENS = 256
MAX_TOKENS_CAP = 1024
# Empty provider: the price applies to the route and to its fallback alike.
PRICE = admin_pb2.ModelPrice(provider="", model=MODEL, input_micros_per_million=150_000,
                             output_micros_per_million=600_000,
                             cached_input_micros_per_million=75_000)
USAGE = types_pb2.Usage(input_tokens=180, output_tokens=120, cached_input_tokens=40)
EXPECTED_COST = cost_micros(Price(PRICE.input_micros_per_million,
                                  PRICE.output_micros_per_million,
                                  PRICE.cached_input_micros_per_million),
                            USAGE.input_tokens, USAGE.output_tokens, USAGE.cached_input_tokens)
# The lengths of the ids Warden generates: "key_" and 16 hex digits; 32 hex digits.
API_KEY_ID = "key_0123456789abcdef"
RESERVATION_ID = "0123456789abcdef" * 2
# A short multi-turn chat, so that request size and token estimation are realistic (~1 KB).
MESSAGES = (
    ("system", "You are a support assistant for an online bookshop. Answer briefly and politely, "
               "cite the order number when there is one, and never reveal internal notes."),
    ("user", "Hi, I ordered two paperbacks last Tuesday (order 48213-B) and the tracking page "
             "has said 'label created' ever since. Can you tell me where the parcel is?"),
    ("assistant", "I'm sorry for the wait. Order 48213-B was handed to the carrier on Thursday; "
                  "the label status sometimes lags by a day or two. Shall I open a trace?"),
    ("user", "Yes please, and if it is lost can you resend it by express instead of a refund? "
             "It is a birthday present for Saturday, so the refund would not really help me."),
)
# What Warden evaluates for the request, in the order of its answer: (policy, scope kind,
# scope id, type); the quotas among them with their metric and limit, in the answer's order.
RESULTS = (
    (ACCESS_POLICY_ID, types_pb2.SCOPE_KIND_ORG, ORG_ID, "model_access"),
    (ROUTING_POLICY_ID, types_pb2.SCOPE_KIND_TEAM, TEAM_ID, "routing"),
    (APP_LIMIT_ID, types_pb2.SCOPE_KIND_APP, APP_ID, "rate_limit"),
    (TOKEN_LIMIT_ID, types_pb2.SCOPE_KIND_APP, APP_ID, "rate_limit"),
    (BUDGET_ID, types_pb2.SCOPE_KIND_ORG, ORG_ID, "budget"),
    (USER_LIMIT_ID, types_pb2.SCOPE_KIND_USER, USER_ID, "rate_limit"),
)
LIMITS = {BUDGET_ID: (types_pb2.METRIC_COST_MICROS, BUDGET_MICROS),
          APP_LIMIT_ID: (types_pb2.METRIC_REQUESTS, RATE_LIMIT),
          TOKEN_LIMIT_ID: (types_pb2.METRIC_TOTAL_TOKENS, TOKEN_LIMIT),
          USER_LIMIT_ID: (types_pb2.METRIC_REQUESTS, RATE_LIMIT)}
ROUTE_NOTE = f"{MODEL_ALIAS!r} routed to {PROVIDER}/{MODEL}"


def _scope(kind: int, scope_id: str) -> types_pb2.Scope:
    return types_pb2.Scope(kind=kind, id=scope_id)


def policies() -> list[types_pb2.Policy]:
    def rate_limit(policy_id: str, kind: int, scope_id: str, metric: int, limit: int
                   ) -> types_pb2.Policy:
        return types_pb2.Policy(
            id=policy_id, name="never denies during a bench", scope=_scope(kind, scope_id),
            rate_limit=types_pb2.RateLimitConfig(metric=metric, window=types_pb2.WINDOW_MINUTE,
                                                 limit=limit))

    return [
        types_pb2.Policy(
            id=ACCESS_POLICY_ID, name="approved models",
            scope=_scope(types_pb2.SCOPE_KIND_ORG, ORG_ID),
            model_access=types_pb2.ModelAccessConfig(
                allow_models=[MODEL, "gpt-4o", "claude-3-5-*"], deny_providers=["unvetted"],
                aliases={MODEL_ALIAS: MODEL, "smart": "gpt-4o"})),
        types_pb2.Policy(
            id=ROUTING_POLICY_ID, name="team routing",
            scope=_scope(types_pb2.SCOPE_KIND_TEAM, TEAM_ID),
            routing=types_pb2.RoutingConfig(
                rules=[types_pb2.RouteRule(alias=MODEL, targets=[
                    types_pb2.RouteTarget(provider=PROVIDER, model=MODEL),
                    types_pb2.RouteTarget(provider=FALLBACK_PROVIDER, model=MODEL)])],
                max_tokens_cap=MAX_TOKENS_CAP)),
        rate_limit(APP_LIMIT_ID, types_pb2.SCOPE_KIND_APP, APP_ID, types_pb2.METRIC_REQUESTS,
                   RATE_LIMIT),
        rate_limit(USER_LIMIT_ID, types_pb2.SCOPE_KIND_USER, USER_ID,
                   types_pb2.METRIC_REQUESTS, RATE_LIMIT),
        rate_limit(TOKEN_LIMIT_ID, types_pb2.SCOPE_KIND_APP, APP_ID,
                   types_pb2.METRIC_TOTAL_TOKENS, TOKEN_LIMIT),
        types_pb2.Policy(
            id=BUDGET_ID, name="never denies during a bench",
            scope=_scope(types_pb2.SCOPE_KIND_ORG, ORG_ID),
            budget=types_pb2.BudgetConfig(period=types_pb2.PERIOD_MONTH,
                                          limit_micros=BUDGET_MICROS)),
    ]


async def create(target: str, auth: tuple[tuple[str, str], ...]) -> str:
    """The tenant, through Warden's Admin API; returns the key's plaintext."""
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.CreateOrg(admin_pb2.CreateOrgRequest(
            org=admin_pb2.Org(id=ORG_ID, display_name="Bench org")), metadata=auth)
        await admin.CreateTeam(admin_pb2.CreateTeamRequest(
            team=admin_pb2.Team(id=TEAM_ID, org_id=ORG_ID, display_name="Bench team")),
            metadata=auth)
        await admin.CreateApp(admin_pb2.CreateAppRequest(
            app=admin_pb2.App(id=APP_ID, org_id=ORG_ID, team_id=TEAM_ID,
                              display_name="Bench app")), metadata=auth)
        await admin.CreateUser(admin_pb2.CreateUserRequest(
            user=admin_pb2.User(id=USER_ID, org_id=ORG_ID, team_ids=[TEAM_ID],
                                display_name="Bench user")), metadata=auth)
        await admin.SetModelPrice(admin_pb2.SetModelPriceRequest(price=PRICE), metadata=auth)
        for policy in policies():
            await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=policy),
                                     metadata=auth)
        key = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
            app_id=APP_ID, user_id=USER_ID, display_name="bench"), metadata=auth)
    return key.plaintext


async def decision_log(target: str, auth: tuple[tuple[str, str], ...], allow_rate: float = 1.0,
                       deny_rate: float = 1.0) -> None:
    """Explain decisions at these rates: both 1 is the default (no audit policy: every
    decision explained), otherwise an org audit setting."""
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        try:
            await admin.DeletePolicy(admin_pb2.DeletePolicyRequest(id=AUDIT_POLICY_ID),
                                     metadata=auth)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if (allow_rate, deny_rate) != (1.0, 1.0):
            await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
                id=AUDIT_POLICY_ID, scope=_scope(types_pb2.SCOPE_KIND_ORG, ORG_ID),
                audit=types_pb2.AuditConfig(allow_sample_rate=allow_rate,
                                            deny_sample_rate=deny_rate))), metadata=auth)


def requests(api_key: str) -> Callable[[int], warden_pb2.AuthorizeRequest]:
    """Request n of a new run: request ids are unique within the org, across every run."""
    # No provider and no user_id: the team's routing picks the provider, and the key belongs
    # to a user (naming another user would be refused).
    template = warden_pb2.AuthorizeRequest(
        api_key=api_key, model=MODEL_ALIAS, max_output_tokens=MAX_OUTPUT_TOKENS,
        messages=[warden_pb2.ChatMessage(role=r, content=c) for r, c in MESSAGES])
    run_id = secrets.token_hex(6)

    def make(n: int) -> warden_pb2.AuthorizeRequest:
        request = warden_pb2.AuthorizeRequest()
        request.CopyFrom(template)
        request.request_id = f"bench-{run_id}-{n}"
        return request

    return make


def usage_request(request: warden_pb2.AuthorizeRequest, reply: warden_pb2.AuthorizeResponse
                  ) -> warden_pb2.RecordUsageRequest:
    """RecordUsage of an authorized request, priced by Warden (no cost_micros)."""
    return warden_pb2.RecordUsageRequest(
        request_id=request.request_id, api_key=request.api_key, usage=USAGE,
        outcome=warden_pb2.OUTCOME_COMPLETED, reservation_id=reply.reservation_id)


def check_recorded(recorded: warden_pb2.RecordUsageResponse) -> None:
    if recorded.cost_micros != EXPECTED_COST or recorded.duplicate:
        raise WrongAnswer("USAGE", f"cost_micros {recorded.cost_micros} (expected "
                                   f"{EXPECTED_COST}), duplicate {recorded.duplicate}")


def authorize_call(api_key: str) -> Call:
    """One Authorize of a new request; it must be allowed."""
    make = requests(api_key)

    async def call(stub: warden_pb2_grpc.WardenStub, n: int, spans: dict[str, float]) -> int:
        return allowed(await stub.Authorize(make(n), timeout=5.0)).ByteSize()

    return call


def pair_call(api_key: str) -> Call:
    """Authorize, then RecordUsage of the same request with its reservation: one operation."""
    make = requests(api_key)

    async def call(stub: warden_pb2_grpc.WardenStub, n: int, spans: dict[str, float]) -> int:
        request = make(n)
        reply = allowed(await stub.Authorize(request, timeout=5.0))
        recorded = await stub.RecordUsage(usage_request(request, reply), timeout=5.0)
        check_recorded(recorded)
        return reply.ByteSize() + recorded.ByteSize()

    return call


async def capture(target: str, api_key: str) -> dict[str, bytes]:
    """Warden's answers to one Authorize of the bench's request and to its RecordUsage, as the
    bytes Warden sent (for the replaying no-op)."""
    request = requests(api_key)(0)
    request.request_id += "-capture"
    async with grpc.aio.insecure_channel(target) as channel:
        answer = await raw_call(channel, "Authorize", request)
        reply = allowed(warden_pb2.AuthorizeResponse.FromString(answer))
        recorded = await raw_call(channel, "RecordUsage", usage_request(request, reply))
        check_recorded(warden_pb2.RecordUsageResponse.FromString(recorded))
    return {"Authorize": answer, "RecordUsage": recorded}


# --- the no-op server's answers --------------------------------------------------------------

def fixed_response() -> warden_pb2.AuthorizeResponse:
    """Warden's answer to the bench's request, result for result and limit for limit, with
    counts, times and ids of the same widths."""
    def result(policy_id: str, kind: int, scope_id: str, policy_type: str
               ) -> warden_pb2.PolicyResult:
        return warden_pb2.PolicyResult(
            policy_id=policy_id, scope=_scope(kind, scope_id), policy_type=policy_type,
            mode=types_pb2.POLICY_MODE_ENFORCE, allowed=True, reason=types_pb2.REASON_ALLOWED,
            message=ROUTE_NOTE if policy_type == "routing" else "")

    # The end of a window's half-second bucket near now, as the request and token limits
    # report it, and a whole second (the start of next month) for the budget.
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    bucket_end = timestamp_pb2.Timestamp(seconds=now.seconds, nanos=500_000_000)
    month_end = timestamp_pb2.Timestamp(seconds=now.seconds + 30 * 86400)
    limits = []
    for policy_id, kind, scope_id, _ in RESULTS:
        if policy_id in LIMITS:
            metric, limit = LIMITS[policy_id]
            limits.append(warden_pb2.LimitStatus(
                policy_id=policy_id, scope=_scope(kind, scope_id), metric=metric, limit=limit,
                remaining=limit - 1000,
                reset_time=month_end if policy_id == BUDGET_ID else bucket_end))
    return warden_pb2.AuthorizeResponse(
        decision=warden_pb2.DECISION_ALLOW, reason=types_pb2.REASON_ALLOWED,
        results=[result(*r) for r in RESULTS], limits=limits,
        route=warden_pb2.Route(provider=PROVIDER, model=MODEL,
                               max_output_tokens=MAX_OUTPUT_TOKENS,
                               fallbacks=[types_pb2.RouteTarget(provider=FALLBACK_PROVIDER,
                                                                model=MODEL)]),
        reservation_id=RESERVATION_ID,
        identity=warden_pb2.Identity(org_id=ORG_ID, app_id=APP_ID, user_id=USER_ID,
                                     api_key_id=API_KEY_ID))


def fixed_usage_response() -> warden_pb2.RecordUsageResponse:
    return warden_pb2.RecordUsageResponse(cost_micros=EXPECTED_COST, duplicate=False)


def answer_shape(reply: warden_pb2.AuthorizeResponse) -> tuple:
    """What must match between Warden's answer and the no-op's (not the times and counts)."""
    route = reply.route
    return (warden_pb2.Decision.Name(reply.decision),
            [(r.policy_id, r.policy_type, r.allowed, r.message) for r in reply.results],
            [(limit.policy_id, types_pb2.Metric.Name(limit.metric), limit.limit)
             for limit in reply.limits],
            (route.provider, route.model, route.max_output_tokens,
             [(t.provider, t.model) for t in route.fallbacks]),
            (reply.identity.org_id, reply.identity.app_id, reply.identity.user_id),
            len(reply.reservation_id), len(reply.identity.api_key_id))


def check_like_noop(answers: dict[str, bytes]) -> None:
    """The ratio compares like with like only if Warden answers what the no-op answers."""
    warden, noop = warden_pb2.AuthorizeResponse.FromString(answers["Authorize"]), \
        fixed_response()
    if answer_shape(warden) != answer_shape(noop):
        raise WrongAnswer("SHAPE", f"Warden's answer differs from the no-op's; update "
                                   f"bench/tenant.py:\nwarden: {answer_shape(warden)}\n"
                                   f"noop:   {answer_shape(noop)}")
    # A reset time on a whole second is 6 bytes shorter: Warden's answer varies that much.
    if abs(warden.ByteSize() - noop.ByteSize()) > 6 * len(noop.limits):
        raise WrongAnswer("SHAPE", f"Warden answers {warden.ByteSize()} B, the no-op "
                                   f"{noop.ByteSize()} B; update bench/tenant.py")
