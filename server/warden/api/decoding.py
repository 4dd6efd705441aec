"""Undecodable request bytes become INVALID_ARGUMENT naming the message type, instead of grpc's
UNKNOWN with a traceback in the log: the deserializer returns a Malformed marker, which the
`rpc` wrapper (and StreamAudit, per message) turns into a WardenError.

The wrapping is done once, when a servicer's handlers are registered (`add_servicer`), not by
an interceptor: grpc.aio runs interceptors on every call, which costs the data plane."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from warden.errors import invalid

Handler = Any  # grpc.RpcMethodHandler: a namedtuple with _replace


@dataclass(frozen=True)
class Malformed:
    message_type: str
    error: str

    def raise_error(self, field: str = "request") -> None:
        raise invalid([(field, f"is not a valid {self.message_type}: {self.error}")])


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    message_type = deserialize.__self__.DESCRIPTOR.full_name  # type: ignore[attr-defined]

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as exc:
            return Malformed(message_type, str(exc))

    return parse


class _Capture:
    """Stands in for the server while a generated add_*Servicer_to_server names its handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: Mapping[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]
                                       ) -> None:
        self.service, self.handlers = service, handlers


def add_servicer(server: grpc.aio.Server, add_to_server: Callable[[Any, Any], None],
                 servicer: Any, wrap: Callable[[str, Handler], Handler] | None = None) -> None:
    """Register `servicer` with tolerant deserializers, each handler passed through `wrap`
    (given the method's full path) if one is given."""
    capture = _Capture()
    add_to_server(servicer, capture)
    handlers = {}
    for name, handler in capture.handlers.items():
        handler = handler._replace(request_deserializer=tolerant(handler.request_deserializer))
        handlers[name] = wrap(f"/{capture.service}/{name}", handler) if wrap else handler
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(capture.service, handlers),))
    server.add_registered_method_handlers(capture.service, handlers)
