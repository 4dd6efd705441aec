"""What Authorize decided, read for an application: allowed or not, where and how to call,
and the answer itself for everything else."""

from __future__ import annotations

from dataclasses import dataclass, field

from warden_client.v1 import types_pb2, warden_pb2


def enum_name(enum, value: int, prefix: str) -> str:
    """The name of an enum value without its prefix; UNKNOWN_<n> for a value this client
    does not know (a newer server's)."""
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return f"UNKNOWN_{value}"


@dataclass(frozen=True)
class Decision:
    """`allowed` is true only for DECISION_ALLOW (an unknown decision value denies). `model`,
    `provider` and `max_output_tokens` are what the call must use; `messages`, when not None,
    what it must send instead of the original (PII redacted). `fail_open`: Warden could not
    be reached and the client was built with on_unavailable="fail_open"; nothing was
    reserved, and guards record no usage for it."""

    request_id: str
    allowed: bool
    reason: str
    model: str
    provider: str
    max_output_tokens: int
    reservation_id: str = ""
    retry_after: float | None = None
    messages: list[dict[str, str]] | None = None
    fail_open: bool = False
    response: warden_pb2.AuthorizeResponse = field(
        default_factory=warden_pb2.AuthorizeResponse, repr=False)

    @property
    def message(self) -> str:
        """The first denying policy's message (empty when allowed)."""
        return next((r.message for r in self.response.results if not r.allowed), "")

    @classmethod
    def of(cls, request: warden_pb2.AuthorizeRequest,
           response: warden_pb2.AuthorizeResponse) -> Decision:
        route = response.route
        return cls(
            request_id=request.request_id,
            allowed=response.decision == warden_pb2.DECISION_ALLOW,
            reason=enum_name(types_pb2.Reason, response.reason, "REASON_"),
            model=route.model or request.model, provider=route.provider or request.provider,
            max_output_tokens=route.max_output_tokens or request.max_output_tokens,
            reservation_id=response.reservation_id,
            retry_after=response.retry_after.ToTimedelta().total_seconds()
            if response.HasField("retry_after") else None,
            messages=[{"role": m.role, "content": m.content} for m in response.redacted_messages]
            if response.redacted_messages else None,
            response=response)

    @classmethod
    def failed_open(cls, request: warden_pb2.AuthorizeRequest) -> Decision:
        return cls(request.request_id, True, "FAIL_OPEN", request.model, request.provider,
                   request.max_output_tokens, fail_open=True)
