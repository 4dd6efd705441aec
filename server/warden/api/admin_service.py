"""The control plane servicer. Each handler: validate -> convert -> store -> convert."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import grpc

from warden.api import convert
from warden.api.errors import fill_unimplemented, rpc
from warden.api.validate import Violations
from warden.components import Components
from warden.errors import WardenError, not_found, unimplemented
from warden.keys import new_key
from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2

DEFAULT_PAGE = 100


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _page(rows: Sequence[Mapping[str, Any]], size: int) -> tuple[Sequence[Mapping[str, Any]], str]:
    """Rows were fetched with limit size + 1; the extra one only says there is a next page."""
    if len(rows) > size:
        return rows[:size], rows[size - 1]["id"]
    return rows, ""


def _page_size(request: Any) -> int:
    return request.page_size or DEFAULT_PAGE


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, components: Components) -> None:
        self._c = components

    @rpc
    async def CreateOrg(self, request: admin_pb2.CreateOrgRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.CreateOrgResponse:
        org, v = request.org, Violations()
        v.id(org.id, "org.id", required=False)
        v.text(org.display_name, "org.display_name")
        v.check(org.time_zone in ("", "UTC"), "org.time_zone",
                "only UTC is supported until calendar budgets land")
        v.check(org.currency == "" or (len(org.currency) == 3 and org.currency.isupper()),
                "org.currency", "must be an ISO 4217 code such as USD")
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
    async def CreateApp(self, request: admin_pb2.CreateAppRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.CreateAppResponse:
        app, v = request.app, Violations()
        v.id(app.id, "app.id", required=False)
        v.id(app.org_id, "app.org_id")
        v.text(app.display_name, "app.display_name")
        v.done()
        if app.team_id:
            raise unimplemented("assigning apps to teams")
        row = await self._c.directory.create_app({
            "id": app.id or _new_id("app"), "org_id": app.org_id,
            "display_name": app.display_name})
        return admin_pb2.CreateAppResponse(app=convert.app_to_proto(row))

    @rpc
    async def ListApps(self, request: admin_pb2.ListAppsRequest,
                       context: grpc.aio.ServicerContext) -> admin_pb2.ListAppsResponse:
        v = Violations()
        v.id(request.org_id, "org_id")
        v.page_size(request.page_size)
        v.done()
        size = _page_size(request)
        rows, token = _page(await self._c.directory.list_apps(
            request.org_id, request.page_token, size + 1), size)
        return admin_pb2.ListAppsResponse(apps=[convert.app_to_proto(r) for r in rows],
                                          next_page_token=token)

    @rpc
    async def CreateApiKey(self, request: admin_pb2.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.CreateApiKeyResponse:
        v = Violations()
        v.id(request.app_id, "app_id")
        v.text(request.display_name, "display_name")
        for i, model in enumerate(request.allowed_models):
            if v.required(model, f"allowed_models[{i}]"):
                v.text(model, f"allowed_models[{i}]")
        v.done()
        if request.user_id:
            raise unimplemented("keys for users")
        plaintext, prefix, digest = new_key(self._c.key_pepper)
        row = await self._c.directory.create_api_key({
            "id": _new_id("key"), "app_id": request.app_id,
            "display_name": request.display_name, "prefix": prefix, "hash": digest,
            "allowed_models": list(request.allowed_models),
            "expire_time": (request.expire_time.ToDatetime(UTC)
                            if request.HasField("expire_time") else None)})
        return admin_pb2.CreateApiKeyResponse(api_key=convert.api_key_to_proto(row),
                                              plaintext=plaintext)

    @rpc
    async def ListApiKeys(self, request: admin_pb2.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> admin_pb2.ListApiKeysResponse:
        v = Violations()
        v.id(request.app_id, "app_id")
        v.page_size(request.page_size)
        v.done()
        size = _page_size(request)
        rows, token = _page(await self._c.directory.list_api_keys(
            request.app_id, request.page_token, size + 1), size)
        return admin_pb2.ListApiKeysResponse(
            api_keys=[convert.api_key_to_proto(r) for r in rows], next_page_token=token)

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

    @rpc
    async def CreatePolicy(self, request: admin_pb2.CreatePolicyRequest,
                           context: grpc.aio.ServicerContext) -> admin_pb2.CreatePolicyResponse:
        policy = request.policy
        _validate_policy(policy)
        kind, config = convert.policy_config_json(policy)
        row = await self._c.policies.create_policy({
            "id": policy.id or _new_id("pol"),
            "scope_kind": convert.SCOPE_NAMES[policy.scope.kind], "scope_id": policy.scope.id,
            "name": policy.name, "policy_type": kind,
            "mode": "dry_run" if policy.mode == types_pb2.POLICY_MODE_DRY_RUN else "enforce",
            "priority": policy.priority, "locked": policy.locked,
            "failure_mode": "fail_closed", "config": config})
        return admin_pb2.CreatePolicyResponse(policy=convert.policy_to_proto(row))

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


_IMPLEMENTED_SCOPES = (types_pb2.SCOPE_KIND_ORG, types_pb2.SCOPE_KIND_APP,
                       types_pb2.SCOPE_KIND_API_KEY)


def _validate_policy(policy: types_pb2.Policy) -> None:
    """Refuse, with every problem named, a policy the engine would not enforce exactly as given."""
    v = Violations()
    v.id(policy.id, "policy.id", required=False)
    v.text(policy.name, "policy.name")
    v.check(policy.scope.kind in convert.SCOPE_NAMES, "policy.scope.kind", "is required")
    v.id(policy.scope.id, "policy.scope.id")
    v.check(policy.priority >= 0, "policy.priority", "must be >= 0")
    kind = policy.WhichOneof("config")
    v.check(kind is not None, "policy.config", "one of the config fields is required")
    if kind == "rate_limit":
        limit = policy.rate_limit
        v.check(limit.metric != types_pb2.METRIC_UNSPECIFIED, "policy.rate_limit.metric",
                "is required")
        v.check(limit.window != types_pb2.WINDOW_UNSPECIFIED, "policy.rate_limit.window",
                "is required")
        v.check(0 < limit.limit <= 10**12, "policy.rate_limit.limit",
                "must be between 1 and 10^12")
    v.done()
    if policy.scope.kind not in _IMPLEMENTED_SCOPES:
        raise unimplemented("policies at team and user scope")
    if kind != "rate_limit":
        raise unimplemented(f"{kind} policies")
    if policy.rate_limit.metric != types_pb2.METRIC_REQUESTS:
        raise unimplemented("token rate limits")
    if policy.rate_limit.HasField("selector") and (policy.rate_limit.selector.models
                                                   or policy.rate_limit.selector.providers):
        raise unimplemented("rate limit selectors")
    if policy.failure_mode == types_pb2.FAILURE_MODE_FAIL_OPEN:
        raise WardenError("UNIMPLEMENTED", "NOT_IMPLEMENTED",
                          "fail_open is not implemented yet: every policy fails closed")


fill_unimplemented(AdminService, admin_pb2.DESCRIPTOR.services_by_name["Admin"])
