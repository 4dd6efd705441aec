"""Admin is closed by default: every /warden.v1.Admin/ call needs `authorization: Bearer <token>`,
checked before the request is deserialized, or a verified client certificate named in
WARDEN_TLS_ADMIN_CLIENTS. Each refusal is recorded in admin_refusals."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from warden import metrics
from warden.api.errors import abort
from warden.errors import WardenError
from warden.store.base import AuditSink
from warden.tls import peer_names

log = logging.getLogger("warden.admin")
ADMIN_PREFIX = "/warden.v1.Admin/"


class AdminAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, audit: AuditSink,
                 admin_clients: frozenset[str] = frozenset()) -> None:
        self._expected = f"Bearer {token}".encode()
        self._audit = audit
        self._admin_clients = admin_clients

    def _refusal(self, metadata: tuple[Any, ...]) -> WardenError | None:
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return WardenError("UNAUTHENTICATED", "ADMIN_TOKEN_MISSING",
                               "the Admin service needs 'authorization: Bearer <admin token>'")
        if len(values) > 1 or not hmac.compare_digest(str(values[0]).encode(), self._expected):
            return WardenError("UNAUTHENTICATED", "ADMIN_TOKEN_INVALID", "invalid admin token")
        return None

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        if not details.method.startswith(ADMIN_PREFIX):
            return await continuation(details)
        start = time.perf_counter()
        error = self._refusal(tuple(details.invocation_metadata or ()))
        if error is None:
            return await continuation(details)
        method = details.method.removeprefix(ADMIN_PREFIX)
        # The certificate is known only to the handler's context, so the check moves there.
        handler = await continuation(details) if self._admin_clients else None

        async def refuse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            if handler is not None and self._admin_clients & peer_names(context):
                return await handler.unary_unary(handler.request_deserializer(raw), context)
            log.warning("admin call refused", extra={"method": method, "reason": error.reason})
            try:
                await self._audit.admin_refused(method, context.peer() or "", error.reason)
            except Exception:  # noqa: BLE001 - the refusal stands even if it cannot be recorded
                log.exception("could not record an admin refusal")
            metrics.RPC_DURATION.labels(method, error.code).observe(time.perf_counter() - start)
            await abort(context, error)

        # Admin's RPCs are all unary; a request is decoded only once its caller is accepted.
        return grpc.unary_unary_rpc_method_handler(
            refuse, response_serializer=handler and handler.response_serializer)
