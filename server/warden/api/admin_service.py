"""The control plane servicer. Each handler: validate -> convert -> store -> convert."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, timedelta
from typing import Any

import grpc

from warden.api import convert
from warden.api.admin_circuits import CircuitHandlers
from warden.api.admin_reports import ReportHandlers
from warden.api.apply import handle_apply
from warden.api.errors import fill_unimplemented, rpc
from warden.api.paging import page as _page
from warden.api.paging import page_size as _page_size
from warden.api.policies import policy_row, validate_policy
from warden.api.validate import Violations
from warden.components import Components
from warden.errors import not_found
from warden.keys import new_key
from warden.v1 import admin_pb2, admin_pb2_grpc

MAX_ROTATION_GRACE = timedelta(days=30)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


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


class AdminService(ReportHandlers, CircuitHandlers, admin_pb2_grpc.AdminServicer):
    def __init__(self, components: Components) -> None:
        self._c = components

    @rpc
    async def CreateOrg(self, request: admin_pb2.CreateOrgRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.CreateOrgResponse:
        org, v = request.org, Violations()
        v.id(org.id, "org.id", required=False)
        v.org_settings(org, "org")
        v.done()
        row = await self._c.stores.directory.create_org({
            "id": org.id or _new_id("org"), "display_name": org.display_name,
            "time_zone": org.time_zone or "UTC", "currency": org.currency or "USD"})
        return admin_pb2.CreateOrgResponse(org=convert.org_to_proto(row))

    @rpc
    async def GetOrg(self, request: admin_pb2.GetOrgRequest,
                     context: grpc.aio.ServicerContext) -> admin_pb2.GetOrgResponse:
        v = Violations()
        v.id(request.id, "id")
        v.done()
        row = await self._c.stores.directory.get_org(request.id)
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
        rows, token = _page(
            await self._c.stores.directory.list_orgs(request.page_token, size + 1), size)
        return admin_pb2.ListOrgsResponse(orgs=[convert.org_to_proto(r) for r in rows],
                                          next_page_token=token)

    @rpc
    async def CreateTeam(self, request: admin_pb2.CreateTeamRequest,
                         context: grpc.aio.ServicerContext) -> admin_pb2.CreateTeamResponse:
        team, v = request.team, Violations()
        v.org_member(team, "team")
        v.done()
        row = await self._c.stores.directory.create_team({
            "id": team.id or _new_id("team"), "org_id": team.org_id,
            "display_name": team.display_name})
        return admin_pb2.CreateTeamResponse(team=convert.team_to_proto(row))

    @rpc
    async def ListTeams(self, request: admin_pb2.ListTeamsRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.ListTeamsResponse:
        items, token = await _list_children(request, "org_id", self._c.stores.directory.list_teams,
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
        row = await self._c.stores.directory.create_user({
            "id": user.id or _new_id("user"), "org_id": user.org_id,
            "display_name": user.display_name, "team_ids": list(user.team_ids)})
        return admin_pb2.CreateUserResponse(user=convert.user_to_proto(row))

    @rpc
    async def ListUsers(self, request: admin_pb2.ListUsersRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.ListUsersResponse:
        items, token = await _list_children(request, "org_id", self._c.stores.directory.list_users,
                                            convert.user_to_proto)
        return admin_pb2.ListUsersResponse(users=items, next_page_token=token)

    @_flushes_cache
    @rpc
    async def CreateApp(self, request: admin_pb2.CreateAppRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.CreateAppResponse:
        app, v = request.app, Violations()
        v.org_member(app, "app")
        v.id(app.team_id, "app.team_id", required=False)
        v.principals(app.principals, "app.principals")
        v.done()
        row = await self._c.stores.directory.create_app({
            "id": app.id or _new_id("app"), "org_id": app.org_id,
            "display_name": app.display_name, "team_id": app.team_id or None,
            "principals": sorted(app.principals)})
        return admin_pb2.CreateAppResponse(app=convert.app_to_proto(row))

    @rpc
    async def ListApps(self, request: admin_pb2.ListAppsRequest,
                       context: grpc.aio.ServicerContext) -> admin_pb2.ListAppsResponse:
        items, token = await _list_children(request, "org_id", self._c.stores.directory.list_apps,
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
        row = await self._c.stores.directory.create_api_key({
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
        items, token = await _list_children(
            request, "app_id", self._c.stores.directory.list_api_keys, convert.api_key_to_proto)
        return admin_pb2.ListApiKeysResponse(api_keys=items, next_page_token=token)

    @_flushes_cache
    @rpc
    async def RevokeApiKey(self, request: admin_pb2.RevokeApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.RevokeApiKeyResponse:
        v = Violations()
        v.id(request.id, "id")
        v.done()
        row = await self._c.stores.directory.revoke_api_key(request.id)
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
        row = await self._c.stores.directory.rotate_api_key(
            request.id, {"id": _new_id("key"), "prefix": prefix, "hash": digest}, grace)
        return admin_pb2.RotateApiKeyResponse(api_key=convert.api_key_to_proto(row),
                                              plaintext=plaintext)

    @_flushes_cache
    @rpc
    async def CreatePolicy(self, request: admin_pb2.CreatePolicyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.CreatePolicyResponse:
        validate_policy(request.policy)
        row = await self._c.stores.policies.create_policy(
            {"id": request.policy.id or _new_id("pol"), **policy_row(request.policy)})
        return admin_pb2.CreatePolicyResponse(policy=convert.policy_to_proto(row))

    @_flushes_cache
    @rpc
    async def UpdatePolicy(self, request: admin_pb2.UpdatePolicyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.UpdatePolicyResponse:
        """Replaces every setting of the policy; scope and type are fixed at creation."""
        validate_policy(request.policy, require_id=True)
        row = await self._c.stores.policies.update_policy(
            {"id": request.policy.id, **policy_row(request.policy)}, request.policy.revision)
        return admin_pb2.UpdatePolicyResponse(policy=convert.policy_to_proto(row))

    @rpc
    async def GetPolicy(self, request: admin_pb2.GetPolicyRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.GetPolicyResponse:
        v = Violations()
        v.id(request.id, "id")
        v.done()
        row = await self._c.stores.policies.get_policy(request.id)
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
        if not await self._c.stores.policies.delete_policy(request.id):
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
        rows, token = _page(await self._c.stores.policies.list_policies(
            scope, request.page_token, size + 1), size)
        return admin_pb2.ListPoliciesResponse(
            policies=[convert.policy_to_proto(r) for r in rows], next_page_token=token)

    @_flushes_cache
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
        row = await self._c.stores.prices.set_price(
            {f.name: getattr(price, f.name) for f in admin_pb2.ModelPrice.DESCRIPTOR.fields})
        return admin_pb2.SetModelPriceResponse(price=convert.price_to_proto(row))

    @rpc
    async def ListModelPrices(
        self, request: admin_pb2.ListModelPricesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListModelPricesResponse:
        rows = await self._c.stores.prices.list_prices()
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
        row = await self._c.stores.directory.set_provider_switch({
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
        rows = await self._c.stores.directory.list_provider_switches(request.org_id)
        return admin_pb2.ListProviderSwitchesResponse(
            switches=[convert.switch_to_proto(r) for r in rows])

    @_flushes_cache
    @rpc
    async def Apply(self, request: admin_pb2.ApplyRequest,
                    context: grpc.aio.ServicerContext) -> admin_pb2.ApplyResponse:
        return await handle_apply(self._c, request)


fill_unimplemented(AdminService, admin_pb2.DESCRIPTOR.services_by_name["Admin"])
