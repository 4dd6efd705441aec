"""The control plane servicer. Each handler: validate -> convert -> store -> convert."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, timedelta
from typing import Any

import grpc

from warden.api import audit_query, convert, reporting
from warden.api.apply import handle_apply
from warden.api.errors import fill_unimplemented, rpc
from warden.api.policies import policy_row, validate_policy
from warden.api.validate import Violations
from warden.components import Components
from warden.errors import not_found
from warden.keys import new_key
from warden.v1 import admin_pb2, admin_pb2_grpc

DEFAULT_PAGE = 100
MAX_ROTATION_GRACE = timedelta(days=30)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _page(rows: Sequence[Mapping[str, Any]], size: int,
          token: Callable[[Mapping[str, Any]], str] = lambda last: last["id"]
          ) -> tuple[Sequence[Mapping[str, Any]], str]:
    """Rows were fetched with limit size + 1; the extra one only says there is a next page,
    whose token the page's last row gives."""
    if len(rows) > size:
        return rows[:size], token(rows[size - 1])
    return rows, ""


def _page_size(request: Any) -> int:
    return request.page_size or DEFAULT_PAGE


async def _list_children(request: Any, parent: str,
                         fetch: Callable[[str, str, int], Awaitable[Sequence[Mapping[str, Any]]]],
                         to_proto: Callable[[Mapping[str, Any]], Any]) -> tuple[list[Any], str]:
    """One page of the children of `request.<parent>` (an org's teams, an app's keys ...)."""
    v = Violations()
    v.id(getattr(request, parent), parent)
    v.page_size(request.page_size)
    v.done()
    size = _page_size(request)
    rows, token = _page(await fetch(getattr(request, parent), request.page_token, size + 1), size)
    return [to_proto(r) for r in rows], token


def _flushes_cache(handler):
    """After a write that cached entries depend on, this sidecar drops its cache at once, not
    a few milliseconds later when its own change notification arrives: a client that writes and
    then calls Authorize here must see its write. Other sidecars rely on the notification."""

    @functools.wraps(handler)
    async def wrapper(self: AdminService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        finally:
            self._c.cache.invalidate_all("admin_write")

    return wrapper


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, components: Components) -> None:
        self._c = components

    @rpc
    async def CreateOrg(self, request: admin_pb2.CreateOrgRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.CreateOrgResponse:
        org, v = request.org, Violations()
        v.id(org.id, "org.id", required=False)
        v.org_settings(org, "org")
        v.done()
        row = await self._c.directory.create_org({
            "id": org.id or _new_id("org"), "display_name": org.display_name,
            "time_zone": org.time_zone or "UTC", "currency": org.currency or "USD"})
        return admin_pb2.CreateOrgResponse(org=convert.org_to_proto(row))

    @rpc
    async def GetOrg(self, request: admin_pb2.GetOrgRequest,
                     context: grpc.aio.ServicerContext) -> admin_pb2.GetOrgResponse:
        v = Violations()
        v.id(request.id, "id")
        v.done()
        row = await self._c.directory.get_org(request.id)
        if row is None:
            raise not_found(f"org {request.id!r}")
        return admin_pb2.GetOrgResponse(org=convert.org_to_proto(row))

    @rpc
    async def ListOrgs(self, request: admin_pb2.ListOrgsRequest,
                       context: grpc.aio.ServicerContext) -> admin_pb2.ListOrgsResponse:
        v = Violations()
        v.page_size(request.page_size)
        v.done()
        size = _page_size(request)
        rows, token = _page(await self._c.directory.list_orgs(request.page_token, size + 1), size)
        return admin_pb2.ListOrgsResponse(orgs=[convert.org_to_proto(r) for r in rows],
                                          next_page_token=token)

    @rpc
    async def CreateTeam(self, request: admin_pb2.CreateTeamRequest,
                         context: grpc.aio.ServicerContext) -> admin_pb2.CreateTeamResponse:
        team, v = request.team, Violations()
        v.org_member(team, "team")
        v.done()
        row = await self._c.directory.create_team({
            "id": team.id or _new_id("team"), "org_id": team.org_id,
            "display_name": team.display_name})
        return admin_pb2.CreateTeamResponse(team=convert.team_to_proto(row))

    @rpc
    async def ListTeams(self, request: admin_pb2.ListTeamsRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.ListTeamsResponse:
        items, token = await _list_children(request, "org_id", self._c.directory.list_teams,
                                            convert.team_to_proto)
        return admin_pb2.ListTeamsResponse(teams=items, next_page_token=token)

    @_flushes_cache
    @rpc
    async def CreateUser(self, request: admin_pb2.CreateUserRequest,
                         context: grpc.aio.ServicerContext) -> admin_pb2.CreateUserResponse:
        user, v = request.user, Violations()
        v.org_member(user, "user")
        for i, team_id in enumerate(user.team_ids):
            v.id(team_id, f"user.team_ids[{i}]")
        v.check(len(set(user.team_ids)) == len(user.team_ids), "user.team_ids",
                "must not name a team twice")
        v.done()
        row = await self._c.directory.create_user({
            "id": user.id or _new_id("user"), "org_id": user.org_id,
            "display_name": user.display_name, "team_ids": list(user.team_ids)})
        return admin_pb2.CreateUserResponse(user=convert.user_to_proto(row))

    @rpc
    async def ListUsers(self, request: admin_pb2.ListUsersRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.ListUsersResponse:
        items, token = await _list_children(request, "org_id", self._c.directory.list_users,
                                            convert.user_to_proto)
        return admin_pb2.ListUsersResponse(users=items, next_page_token=token)

    @rpc
    async def CreateApp(self, request: admin_pb2.CreateAppRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.CreateAppResponse:
        app, v = request.app, Violations()
        v.org_member(app, "app")
        v.id(app.team_id, "app.team_id", required=False)
        v.done()
        row = await self._c.directory.create_app({
            "id": app.id or _new_id("app"), "org_id": app.org_id,
            "display_name": app.display_name, "team_id": app.team_id or None})
        return admin_pb2.CreateAppResponse(app=convert.app_to_proto(row))

    @rpc
    async def ListApps(self, request: admin_pb2.ListAppsRequest,
                       context: grpc.aio.ServicerContext) -> admin_pb2.ListAppsResponse:
        items, token = await _list_children(request, "org_id", self._c.directory.list_apps,
                                            convert.app_to_proto)
        return admin_pb2.ListAppsResponse(apps=items, next_page_token=token)

    @rpc
    async def CreateApiKey(self, request: admin_pb2.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.CreateApiKeyResponse:
        v = Violations()
        v.id(request.app_id, "app_id")
        v.id(request.user_id, "user_id", required=False)
        v.text(request.display_name, "display_name")
        for i, model in enumerate(request.allowed_models):
            if v.required(model, f"allowed_models[{i}]"):
                v.text(model, f"allowed_models[{i}]")
        v.done()
        plaintext, prefix, digest = new_key(self._c.key_pepper)
        row = await self._c.directory.create_api_key({
            "id": _new_id("key"), "app_id": request.app_id, "user_id": request.user_id or None,
            "display_name": request.display_name, "prefix": prefix, "hash": digest,
            "allowed_models": list(request.allowed_models),
            "expire_time": (request.expire_time.ToDatetime(UTC)
                            if request.HasField("expire_time") else None)})
        return admin_pb2.CreateApiKeyResponse(api_key=convert.api_key_to_proto(row),
                                              plaintext=plaintext)

    @rpc
    async def ListApiKeys(self, request: admin_pb2.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> admin_pb2.ListApiKeysResponse:
        items, token = await _list_children(request, "app_id", self._c.directory.list_api_keys,
                                            convert.api_key_to_proto)
        return admin_pb2.ListApiKeysResponse(api_keys=items, next_page_token=token)

    @_flushes_cache
    @rpc
    async def RevokeApiKey(self, request: admin_pb2.RevokeApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.RevokeApiKeyResponse:
        v = Violations()
        v.id(request.id, "id")
        v.done()
        row = await self._c.directory.revoke_api_key(request.id)
        if row is None:
            raise not_found(f"API key {request.id!r}")
        return admin_pb2.RevokeApiKeyResponse(api_key=convert.api_key_to_proto(row))

    @_flushes_cache
    @rpc
    async def RotateApiKey(self, request: admin_pb2.RotateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.RotateApiKeyResponse:
        v = Violations()
        v.id(request.id, "id")
        grace = request.grace_period.ToTimedelta()
        v.check(timedelta(0) <= grace <= MAX_ROTATION_GRACE, "grace_period",
                "must be between 0 and 30 days")
        v.done()
        plaintext, prefix, digest = new_key(self._c.key_pepper)
        row = await self._c.directory.rotate_api_key(
            request.id, {"id": _new_id("key"), "prefix": prefix, "hash": digest}, grace)
        return admin_pb2.RotateApiKeyResponse(api_key=convert.api_key_to_proto(row),
                                              plaintext=plaintext)

    @_flushes_cache
    @rpc
    async def CreatePolicy(self, request: admin_pb2.CreatePolicyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.CreatePolicyResponse:
        validate_policy(request.policy)
        row = await self._c.policies.create_policy(
            {"id": request.policy.id or _new_id("pol"), **policy_row(request.policy)})
        return admin_pb2.CreatePolicyResponse(policy=convert.policy_to_proto(row))

    @_flushes_cache
    @rpc
    async def UpdatePolicy(self, request: admin_pb2.UpdatePolicyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.UpdatePolicyResponse:
        """Replaces every setting of the policy; scope and type are fixed at creation."""
        validate_policy(request.policy, require_id=True)
        row = await self._c.policies.update_policy(
            {"id": request.policy.id, **policy_row(request.policy)}, request.policy.revision)
        return admin_pb2.UpdatePolicyResponse(policy=convert.policy_to_proto(row))

    @rpc
    async def GetPolicy(self, request: admin_pb2.GetPolicyRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.GetPolicyResponse:
        v = Violations()
        v.id(request.id, "id")
        v.done()
        row = await self._c.policies.get_policy(request.id)
        if row is None:
            raise not_found(f"policy {request.id!r}")
        return admin_pb2.GetPolicyResponse(policy=convert.policy_to_proto(row))

    @_flushes_cache
    @rpc
    async def DeletePolicy(self, request: admin_pb2.DeletePolicyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.DeletePolicyResponse:
        v = Violations()
        v.id(request.id, "id")
        v.done()
        if not await self._c.policies.delete_policy(request.id):
            raise not_found(f"policy {request.id!r}")
        return admin_pb2.DeletePolicyResponse()

    @rpc
    async def ListPolicies(self, request: admin_pb2.ListPoliciesRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.ListPoliciesResponse:
        v = Violations()
        v.page_size(request.page_size)
        scope = None
        if request.HasField("scope") and request.scope.kind:
            v.check(request.scope.kind in convert.SCOPE_NAMES, "scope.kind", "unknown kind")
            v.id(request.scope.id, "scope.id")
            scope = (convert.SCOPE_NAMES.get(request.scope.kind, ""), request.scope.id)
        v.done()
        size = _page_size(request)
        rows, token = _page(await self._c.policies.list_policies(
            scope, request.page_token, size + 1), size)
        return admin_pb2.ListPoliciesResponse(
            policies=[convert.policy_to_proto(r) for r in rows], next_page_token=token)

    @rpc
    async def SetModelPrice(self, request: admin_pb2.SetModelPriceRequest,
                            context: grpc.aio.ServicerContext) -> admin_pb2.SetModelPriceResponse:
        price, v = request.price, Violations()
        if v.required(price.model, "price.model"):
            v.text(price.model, "price.model")
        v.text(price.provider, "price.provider")
        for name in ("input_micros_per_million", "output_micros_per_million",
                     "cached_input_micros_per_million"):
            v.check(0 <= getattr(price, name) <= 10**12, f"price.{name}",
                    "must be between 0 and 10^12")
        v.done()
        row = await self._c.prices.set_price(
            {f.name: getattr(price, f.name) for f in admin_pb2.ModelPrice.DESCRIPTOR.fields})
        return admin_pb2.SetModelPriceResponse(price=convert.price_to_proto(row))

    @rpc
    async def ListModelPrices(
        self, request: admin_pb2.ListModelPricesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListModelPricesResponse:
        rows = await self._c.prices.list_prices()
        return admin_pb2.ListModelPricesResponse(prices=[convert.price_to_proto(r) for r in rows])

    @_flushes_cache
    @rpc
    async def SetProviderSwitch(
        self, request: admin_pb2.SetProviderSwitchRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetProviderSwitchResponse:
        switch, v = request.switch, Violations()
        if v.required(switch.provider, "switch.provider"):
            v.text(switch.provider, "switch.provider")
        v.text(switch.model, "switch.model")
        v.id(switch.org_id, "switch.org_id", required=False)
        v.text(switch.reason, "switch.reason")
        v.check(switch.enabled or bool(switch.reason), "switch.reason",
                "is required when switching off (it is shown to every denied caller)")
        v.done()
        row = await self._c.directory.set_provider_switch({
            "provider": switch.provider, "model": switch.model, "org_id": switch.org_id,
            "enabled": switch.enabled, "reason": switch.reason})
        return admin_pb2.SetProviderSwitchResponse(switch=convert.switch_to_proto(row))

    @rpc
    async def ListProviderSwitches(
        self, request: admin_pb2.ListProviderSwitchesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListProviderSwitchesResponse:
        v = Violations()
        v.id(request.org_id, "org_id", required=False)
        v.done()
        rows = await self._c.directory.list_provider_switches(request.org_id)
        return admin_pb2.ListProviderSwitchesResponse(
            switches=[convert.switch_to_proto(r) for r in rows])

    async def _org_of(self, kind: str, scope_id: str, org_id: str = "") -> Mapping[str, Any]:
        """The org of a scope (which must be `org_id` when given), or NOT_FOUND."""
        org = await self._c.reporting.scope_org(kind, scope_id)
        if org is None or org_id not in ("", org["id"]):
            where = f" in org {org_id!r}" if org_id and kind != "org" else ""
            raise not_found(f"{kind} {scope_id!r}{where}")
        return org

    @rpc
    async def GetUsage(self, request: admin_pb2.GetUsageRequest,
                       context: grpc.aio.ServicerContext) -> admin_pb2.GetUsageResponse:
        store, v = self._c.reporting, Violations()
        scope = reporting.scope(v, request, required=True)
        start, end = reporting.time_range(v, request, self._c.clock())
        v.done()
        assert scope is not None
        org = await self._org_of(*scope)
        totals = await store.usage(org["id"], scope, start, end)
        return reporting.usage_to_proto(totals, await store.quotas(scope))

    @rpc
    async def GetBudgetSummary(
        self, request: admin_pb2.GetBudgetSummaryRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetBudgetSummaryResponse:
        store, v = self._c.reporting, Violations()
        v.id(request.org_id, "org_id")
        scope = reporting.scope(v, request, required=False)
        v.done()
        org = await self._org_of("org", request.org_id)
        if scope is not None:
            await self._org_of(*scope, org_id=request.org_id)
        rows = await store.budgets(request.org_id, scope)
        return admin_pb2.GetBudgetSummaryResponse(
            budgets=[reporting.budget_to_proto(r) for r in rows], currency=org["currency"],
            time_zone=org["time_zone"])

    @rpc
    async def ListTopSpenders(
        self, request: admin_pb2.ListTopSpendersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTopSpendersResponse:
        store, v = self._c.reporting, Violations()
        v.id(request.org_id, "org_id")
        start, end = reporting.time_range(v, request, self._c.clock())
        v.check(request.group_by in reporting.GROUP_BY, "group_by",
                "must be one of " + ", ".join(admin_pb2.SpendGroupBy.Name(g)
                                              for g in reporting.GROUP_BY))
        limit = reporting.spenders_limit(v, request.limit)
        v.done()
        await self._org_of("org", request.org_id)
        rows = await store.top_spenders(request.org_id, reporting.GROUP_BY[request.group_by],
                                        start, end, limit)
        return admin_pb2.ListTopSpendersResponse(
            spenders=[reporting.spender_to_proto(r) for r in rows])

    @rpc
    async def GetRequestMetrics(
        self, request: admin_pb2.GetRequestMetricsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetRequestMetricsResponse:
        store, v = self._c.reporting, Violations()
        v.id(request.org_id, "org_id")
        v.id(request.app_id, "app_id", required=False)
        reporting.model_filter(v, request.model)
        start, end = reporting.time_range(v, request, self._c.clock())
        v.done()
        await self._org_of("org", request.org_id)
        if request.app_id:
            await self._org_of("app", request.app_id, org_id=request.org_id)
        row = await store.request_metrics(request.org_id, request.app_id, request.model,
                                          start, end)
        return reporting.metrics_to_proto(row)

    @rpc
    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListAuditEventsResponse:
        v = Violations()
        v.id(request.org_id, "org_id")
        where = audit_query.audit_filter(v, request)
        v.page_size(request.page_size)
        after = audit_query.decode_page_token(v, self._c.key_pepper, request)
        v.done()
        await self._org_of("org", request.org_id)
        size = _page_size(request)
        rows, token = _page(
            await self._c.audit_query.list_events(request.org_id, where, after, size + 1), size,
            lambda last: audit_query.encode_page_token(self._c.key_pepper, request, last))
        return admin_pb2.ListAuditEventsResponse(
            events=[audit_query.event_to_proto(r) for r in rows], next_page_token=token)

    @rpc
    async def GetRequestStory(
        self, request: admin_pb2.GetRequestStoryRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetRequestStoryResponse:
        v = Violations()
        v.id(request.org_id, "org_id")
        if v.required(request.request_id, "request_id"):
            v.text(request.request_id, "request_id")
        v.done()
        await self._org_of("org", request.org_id)
        decision, events = await self._c.audit_query.request_story(
            request.org_id, request.request_id, audit_query.MAX_STORY_EVENTS)
        if decision is None and not events:
            raise not_found(f"request {request.request_id!r} in org {request.org_id!r}")
        return audit_query.story_to_proto(decision, events)

    @_flushes_cache
    @rpc
    async def Apply(self, request: admin_pb2.ApplyRequest,
                    context: grpc.aio.ServicerContext) -> admin_pb2.ApplyResponse:
        return await handle_apply(self._c, request)


fill_unimplemented(AdminService, admin_pb2.DESCRIPTOR.services_by_name["Admin"])
