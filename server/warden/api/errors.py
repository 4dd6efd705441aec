"""One wrapper gives every handler the same shape: time it, turn WardenError into a rich status,
a lost database into UNAVAILABLE, anything else into a generic INTERNAL (detail in the log)."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from warden import metrics
from warden.api.decoding import Malformed
from warden.errors import StoreUnavailable, WardenError, unimplemented

log = logging.getLogger("warden.api")

DOMAIN = "warden.v1"


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_details(error: WardenError) -> bytes:
    """The serialized google.rpc.Status for grpc-status-details-bin."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if error.violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in error.violations])))
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_seconds * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, error.code), message=error.message,
                               details=details)
    return status.SerializeToString()


async def abort(context: grpc.aio.ServicerContext, error: WardenError) -> None:
    await context.abort(getattr(grpc.StatusCode, error.code), error.message,
                        trailing_metadata=(("grpc-status-details-bin", status_details(error)),))


def translate(method: str, exc: Exception) -> WardenError:
    if isinstance(exc, WardenError):
        return exc
    if isinstance(exc, StoreUnavailable):
        log.warning("database unavailable", extra={"method": method, "error": repr(exc)})
        return WardenError("UNAVAILABLE", "DATABASE_UNAVAILABLE",
                           "the policy database is unavailable", retry_after_seconds=1.0)
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error", extra={"method": method, "incident": incident})
    return WardenError("INTERNAL", "INTERNAL", f"internal error (incident {incident})")


Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def rpc(handler: Handler) -> Handler:
    method = handler.__name__
    answered = metrics.RPC_DURATION.labels(method, "OK")  # bound once: every call's

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            if isinstance(request, Malformed):
                request.raise_error()
            answer = await handler(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error leaves as a status
            error = translate(method, exc)
            metrics.RPC_DURATION.labels(method, error.code).observe(time.perf_counter() - start)
            await abort(context, error)
        else:
            answered.observe(time.perf_counter() - start)
            return answer

    return wrapped


def fill_unimplemented(servicer_class: type, service: Any) -> type:
    """Give every RPC of `service` that `servicer_class` does not define a handler that answers
    UNIMPLEMENTED with ErrorInfo reason NOT_IMPLEMENTED (instead of grpc's bare default), and
    list them in `servicer_class.UNIMPLEMENTED`."""
    # Defined by the class or a mixin of it, not only by the generated base servicer.
    own = {n for c in servicer_class.__mro__ if not c.__module__.endswith("_pb2_grpc")
           for n in vars(c)}
    missing_names = [n for n in service.methods_by_name if n not in own]
    for name in missing_names:
        async def missing(self: Any, request: Any, context: Any, _name: str = name) -> Any:
            raise unimplemented(f"{service.name}.{_name}")
        missing.__name__ = name
        setattr(servicer_class, name, rpc(missing))
    servicer_class.UNIMPLEMENTED = tuple(sorted(missing_names))
    return servicer_class
