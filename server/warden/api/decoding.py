"""Undecodable request bytes become INVALID_ARGUMENT naming the message type, instead of grpc's
UNKNOWN with a traceback in the log: the deserializer returns a Malformed marker, which the
`rpc` wrapper (and StreamAudit, per message) turns into a WardenError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from warden.errors import invalid


@dataclass(frozen=True)
class Malformed:
    message_type: str
    error: str

    def raise_error(self, field: str = "request") -> None:
        raise invalid([(field, f"is not a valid {self.message_type}: {self.error}")])


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    message_type = deserialize.__self__.DESCRIPTOR.full_name  # type: ignore[attr-defined]

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as exc:
            return Malformed(message_type, str(exc))

    return parse


class DecodeErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._handlers: dict[str, Any] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = self._handlers.get(details.method)
        if handler is None:
            handler = await continuation(details)
            if handler is None or handler.request_deserializer is None:
                return handler
            handler = handler._replace(
                request_deserializer=_tolerant(handler.request_deserializer))
            self._handlers[details.method] = handler
        return handler
