"""Errors of the Warden client, read from the gRPC rich error model (google.rpc.Status in the
`grpc-status-details-bin` trailer): ErrorInfo gives `reason`, BadRequest `violations`,
RetryInfo `retry_after`. A status without details still maps by its code."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from warden_client._decision import Decision


class WardenError(Exception):
    """A call Warden did not answer as asked. `code` is the gRPC status code, `reason` the
    stable reason of ErrorInfo (e.g. "API_KEY_REVOKED", "" when the server sent none)."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
                 reason: str = "", violations: dict[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.violations = violations or {}
        self.retry_after = retry_after


class WardenInvalidArgument(WardenError):
    """The request was refused: `violations` maps each bad field to what is wrong with it."""


class WardenUnauthenticated(WardenError):
    """The API key (or subject) was refused; `reason` says why (API_KEY_INVALID, _REVOKED,
    _EXPIRED)."""


class WardenPermissionDenied(WardenError):
    """The caller may not act for the identity it named."""


class WardenUnavailable(WardenError):
    """Warden could not be reached (or its database, for what needs it), after the retries
    of UNAVAILABLE. `retry_after` is the server's hint, when it gave one."""


class WardenDeadlineExceeded(WardenUnavailable):
    """No answer within the call's deadline."""


class WardenDenied(WardenError):
    """An LLM call the policies denied (raised by guards; `authorize` returns the Decision).
    `decision` holds every policy's result; `retry_after` is when it may succeed."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"denied by Warden: {decision.reason}"
                         + (f" ({decision.message})" if decision.message else ""),
                         grpc.StatusCode.OK, decision.reason, retry_after=decision.retry_after)
        self.decision = decision


_BY_CODE: dict[grpc.StatusCode, type[WardenError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: WardenInvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: WardenUnauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: WardenPermissionDenied,
    grpc.StatusCode.UNAVAILABLE: WardenUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: WardenDeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError) -> WardenError:
    """The WardenError of a failed call, with every detail the server attached."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    message = (error.details() if callable(getattr(error, "details", None)) else "") or str(code)
    reason, violations, retry = "", {}, None
    metadata = error.trailing_metadata() if callable(
        getattr(error, "trailing_metadata", None)) else None
    raw = dict(metadata or ()).get("grpc-status-details-bin")
    if isinstance(raw, bytes):
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a garbled trailer is as good as none
            status = status_pb2.Status()
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = {v.field: v.description for v in bad.field_violations}
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info_ = error_details_pb2.RetryInfo()
                detail.Unpack(info_)
                retry = info_.retry_delay.ToTimedelta().total_seconds()
    return _BY_CODE.get(code, WardenError)(message, code, reason, violations, retry)
