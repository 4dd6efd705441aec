"""The Admin RPCs that read: usage reports, budget summaries, top spenders, request metrics,
the audit trail and a request's story. Mixed into AdminService."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from warden.api import audit_query, reporting
from warden.api.errors import rpc
from warden.api.paging import page, page_size
from warden.api.validate import Violations
from warden.components import Components
from warden.errors import not_found
from warden.v1 import admin_pb2


class ReportHandlers:
    _c: Components

    async def _org_of(self, kind: str, scope_id: str, org_id: str = "") -> Mapping[str, Any]:
        """The org of a scope (which must be `org_id` when given), or NOT_FOUND."""
        org = await self._c.stores.reporting.scope_org(kind, scope_id)
        if org is None or org_id not in ("", org["id"]):
            where = f" in org {org_id!r}" if org_id and kind != "org" else ""
            raise not_found(f"{kind} {scope_id!r}{where}")
        return org

    @rpc
    async def GetUsage(self, request: admin_pb2.GetUsageRequest,
                       context: grpc.aio.ServicerContext) -> admin_pb2.GetUsageResponse:
        store, v = self._c.stores.reporting, Violations()
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
        store, v = self._c.stores.reporting, Violations()
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
        store, v = self._c.stores.reporting, Violations()
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
        store, v = self._c.stores.reporting, Violations()
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
        size = page_size(request)
        rows, token = page(
            await self._c.stores.audit_query.list_events(request.org_id, where, after,
                                                         size + 1), size,
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
        decision, events = await self._c.stores.audit_query.request_story(
            request.org_id, request.request_id, audit_query.MAX_STORY_EVENTS)
        if decision is None and not events:
            raise not_found(f"request {request.request_id!r} in org {request.org_id!r}")
        return audit_query.story_to_proto(decision, events)
