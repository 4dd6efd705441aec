"""Undecodable request bytes become INVALID_ARGUMENT naming the message type, instead of grpc's
UNKNOWN with a traceback in the log: the deserializer returns a Malformed marker, which the
`rpc` wrapper (and StreamAudit, per message) turns into a WardenError.

So does a string field holding the NUL character, which Postgres text and jsonb cannot store:
accepted, it would fail every flush of the journal record holding it, and with it every record
after it. A request whose bytes hold no zero byte has no such string (the common case, one
`in` test); one that does is walked field by field. AuditEvent is not walked: its fields and
attributes are checked where StreamAudit converts them (`_append`, `convert.struct_json`),
which reads them anyway, while a walk would cost about 18 µs an event (attributes holding
numbers have zero bytes, so most audit messages would take it).

The wrapping is done once, when a servicer's handlers are registered (`add_servicer`), not by
an interceptor: grpc.aio runs interceptors on every call, which costs the data plane."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from warden.errors import invalid

Handler = Any  # grpc.RpcMethodHandler: a namedtuple with _replace


NUL = "must not contain the NUL character (U+0000)"
_CHECKED_ELSEWHERE = frozenset({"warden.v1.AuditEvent"})
_STRING, _MESSAGE = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE


@dataclass(frozen=True)
class Malformed:
    field: str  # inside the message; "" for the whole of it
    description: str

    def raise_error(self, at: str = "") -> None:
        """`at`: where the message is in the call ("messages[2]" of a stream)."""
        raise invalid([(".".join(p for p in (at, self.field) if p) or "request",
                        self.description)])


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    message_type = deserialize.__self__.DESCRIPTOR.full_name  # type: ignore[attr-defined]

    def parse(raw: bytes) -> Any:
        try:
            message = deserialize(raw)
        except DecodeError as exc:
            return Malformed("", f"is not a valid {message_type}: {exc}")
        if b"\x00" in raw:
            field = nul_field(message)
            if field is not None:
                return Malformed(field, NUL)
        return message

    return parse


def nul_field(message: Message, at: str = "") -> str | None:
    """The path of the first string in `message` (a field, an element, a map key or value)
    holding NUL, outside AuditEvents; None if there is none."""
    if message.DESCRIPTOR.full_name in _CHECKED_ELSEWHERE:
        return None
    for field, value in message.ListFields():
        if field.message_type is not None and \
                field.message_type.full_name in _CHECKED_ELSEWHERE:
            continue  # a message's hundreds of events: not one call each
        name = at + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key in value:
                path = f"{name}[{key!r}]"
                found = path if isinstance(key, str) and "\x00" in key else \
                    _nul_in(value_field, value[key], path)
                if found is not None:
                    return found
        elif field.is_repeated:
            for i, item in enumerate(value):
                found = _nul_in(field, item, f"{name}[{i}]")
                if found is not None:
                    return found
        else:
            found = _nul_in(field, value, name)
            if found is not None:
                return found
    return None


def _nul_in(field: FieldDescriptor, value: Any, path: str) -> str | None:
    if field.type == _STRING:
        return path if "\x00" in value else None
    if field.type == _MESSAGE:
        return nul_field(value, path + ".")
    return None


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
    (given the method's full path) if one is given. The methods a servicer names in
    RAW_RESPONSES answer with serialized bytes, sent as they are."""
    capture = _Capture()
    add_to_server(servicer, capture)
    raw = getattr(servicer, "RAW_RESPONSES", frozenset())
    handlers = {}
    for name, handler in capture.handlers.items():
        handler = handler._replace(request_deserializer=tolerant(handler.request_deserializer))
        if name in raw:
            handler = handler._replace(response_serializer=None)
        handlers[name] = wrap(f"/{capture.service}/{name}", handler) if wrap else handler
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(capture.service, handlers),))
    server.add_registered_method_handlers(capture.service, handlers)
