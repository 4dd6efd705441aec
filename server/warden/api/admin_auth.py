"""Admin is closed by default: every /warden.v1.Admin/ call needs `authorization: Bearer <token>`,
checked before the request is deserialized, or a verified client certificate named in
WARDEN_TLS_ADMIN_CLIENTS. Each refusal is recorded in admin_refusals."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

import grpc

from warden import metrics
from warden.api.errors import abort
from warden.errors import WardenError
from warden.store.base import AuditSink
from warden.tls import peer_names

log = logging.getLogger("warden.admin")
ADMIN_PREFIX = "/warden.v1.Admin/"


class AdminAuth:
    """Wraps each Admin handler (see decoding.add_servicer) so that it takes the raw request
    and decodes it only once the caller is accepted."""

    def __init__(self, token: str, audit: AuditSink,
                 admin_clients: frozenset[str] = frozenset()) -> None:
        self._expected = f"Bearer {token}".encode()
        self._audit = audit
        self._admin_clients = admin_clients

    def _refusal(self, context: grpc.aio.ServicerContext) -> WardenError | None:
        values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
        if not values:
            error = WardenError("UNAUTHENTICATED", "ADMIN_TOKEN_MISSING",
                                "the Admin service needs 'authorization: Bearer <admin token>'")
        elif len(values) > 1 or not hmac.compare_digest(str(values[0]).encode(),
                                                        self._expected):
            error = WardenError("UNAUTHENTICATED", "ADMIN_TOKEN_INVALID", "invalid admin token")
        else:
            return None
        # A certificate named in WARDEN_TLS_ADMIN_CLIENTS stands in for the token.
        return None if self._admin_clients and self._admin_clients & peer_names(context) else error

    def __call__(self, path: str, handler: Any) -> Any:
        method = path.removeprefix(ADMIN_PREFIX)
        decode, behaviour = handler.request_deserializer, handler.unary_unary

        async def guarded(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            error = self._refusal(context)
            if error is None:
                return await behaviour(decode(raw), context)
            log.warning("admin call refused", extra={"method": method, "reason": error.reason})
            try:
                await self._audit.admin_refused(method, context.peer() or "", error.reason)
            except Exception:  # noqa: BLE001 - the refusal stands even if it cannot be recorded
                log.exception("could not record an admin refusal")
            metrics.RPC_DURATION.labels(method, error.code).observe(time.perf_counter() - start)
            await abort(context, error)

        # Admin's RPCs are all unary.
        return grpc.unary_unary_rpc_method_handler(
            guarded, response_serializer=handler.response_serializer)
