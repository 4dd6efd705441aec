"""Envoy's external processing (`envoy.service.ext_proc.v3.ExternalProcessor/Process`): one
stream per HTTP request, through which Warden decides the call as Check does, rewrites the body
that goes upstream, and settles the reservation from the answer it sees come back.

The exchange, as Envoy sends it with request headers SEND, request body BUFFERED, response
headers SEND and response body STREAMED (deploy/envoy/envoy.yaml):
- request headers: who calls (401 at once for no or a bad key);
- request body: the decision; a denial is an immediate response (401/403/429, OpenAI-style
  JSON), an allowed call goes upstream with its body rewritten (llm_body.rewritten) and the key
  headers removed;
- response headers: the rate-limit headers added; an HTTP error status settles as failed;
- response body: a JSON answer is read at its end for its usage; a server-sent event stream is
  metered chunk by chunk (llm_usage.StreamMeter) and, once it has passed as many output tokens as
  the reservation covers, ended with an error event and [DONE], then reset.
Settlement is Reservations.settle, RecordUsage's own: durable before the answer's last bytes go
on, once per request id, exact across sidecars. A request that ends before its answer (the
client gone, the upstream reset) without a stream to count keeps its reservation, which
settles at the amount reserved when it expires.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Mapping

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from envoy.type.v3 import http_status_pb2

from warden import metrics
from warden.api import llm_body, llm_http
from warden.api.decoding import Malformed
from warden.api.envoy_authz import header_options, metadata
from warden.api.errors import abort, translate
from warden.api.llm_http import HttpAnswer, LlmCall
from warden.api.llm_usage import StreamMeter, Used, cut_events, json_usage
from warden.api.mesh import Mesh, Refused
from warden.authorizer import Authorization
from warden.keys import KeyRecord

log = logging.getLogger("warden.envoy")

MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a JSON answer read for its usage, at most
_SETTLED = {how: metrics.MESH_SETTLEMENTS.labels(how)
            for how in ("reported", "counted", "cut", "failed", "not_stored")}


def _header_map(headers: base_pb2.HeaderMap) -> dict[str, str]:
    return {h.key.lower(): h.raw_value.decode("utf-8", "replace") or h.value
            for h in headers.headers}


# What ext_authz reports as source.principal, as Envoy's attributes: the peer certificate's
# first URI SAN, else its first DNS SAN, else its subject. The filter must ask for them
# (request_attributes); Envoy then sends them with the request headers, under the filter's name.
PRINCIPAL_ATTRIBUTES = ("connection.uri_san_peer_certificate",
                        "connection.dns_san_peer_certificate",
                        "connection.subject_peer_certificate")


def _principal(message: ep.ProcessingRequest) -> str:
    for attributes in message.attributes.values():
        for name in PRINCIPAL_ATTRIBUTES:
            value = attributes.fields.get(name)
            if value is not None and value.string_value:
                return value.string_value
    return ""


def _immediate(answer: HttpAnswer, reason: str) -> ep.ProcessingResponse:
    return ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=answer.status),
        headers=ep.HeaderMutation(set_headers=header_options(answer.headers, raw=True)),
        body=answer.body, details=f"warden_{reason.lower()}"))


_CONTINUE_HEADERS = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
_CONTINUE_BODY = ep.ProcessingResponse(response_body=ep.BodyResponse())


class _Exchange:
    """One HTTP request's way through the filter."""

    def __init__(self, mesh: Mesh, context: grpc.aio.ServicerContext) -> None:
        self.mesh, self.context = mesh, context
        self.headers: Mapping[str, str] = {}
        self.body = b""
        self.caller: KeyRecord | None = None
        self.call: LlmCall | None = None
        self.a: Authorization | None = None  # an allowed call's decision
        self.started = time.monotonic()
        self.status = 0
        self.meter: StreamMeter | None = None
        self.answer = bytearray()  # a JSON answer, for its usage
        self.cut = False
        self.settled = False

    async def handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        kind = message.WhichOneof("request")
        try:
            if kind == "request_headers":
                return await self._request_headers(message.request_headers,
                                                   _principal(message))
            if kind == "request_body":
                return await self._request_body(message.request_body)
        except Refused as refused:
            return _immediate(refused.answer, refused.reason)
        if kind == "response_headers":
            return await self._response_headers(message.response_headers)
        if kind == "response_body":
            return await self._response_body(message.response_body)
        if kind == "request_trailers":
            return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
        return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())

    async def _request_headers(self, message: ep.HttpHeaders,
                               principal: str) -> ep.ProcessingResponse:
        self.headers = _header_map(message.headers)
        self.caller = await self.mesh.caller(self.headers, principal, self.context)
        path = self.headers.get(":path", "")
        if llm_http.kind_of(path) and not message.end_of_stream:
            return _CONTINUE_HEADERS  # the decision waits for the body
        # Not an LLM call: the key is checked, nothing decided (an LLM call without a body
        # is refused by parse).
        call = self.mesh.parse(path, self.headers, None)
        return ep.ProcessingResponse(request_headers=ep.HeadersResponse(
            response=ep.CommonResponse(header_mutation=self._upstream(
                [("x-warden-request-id", call.request_id)]))))

    async def _request_body(self, message: ep.HttpBody) -> ep.ProcessingResponse:
        self.body += message.body
        if not message.end_of_stream:
            return ep.ProcessingResponse(request_body=ep.BodyResponse())
        assert self.caller is not None
        call = self.call = self.mesh.parse(self.headers.get(":path", ""), self.headers,
                                           self.body)
        try:
            a = await self.mesh.authorize(self.caller, call, can_redact=True)
        except Refused as refused:
            response = _immediate(refused.answer, refused.reason)
            if refused.authorization is not None:
                response.dynamic_metadata.update(
                    {"warden": metadata(call, refused.authorization)})
            return response
        self.a = a
        upstream = llm_http.upstream_headers(call, a.decision, a.reservation_id)
        body = llm_body.rewritten(call, a.decision)
        common = ep.CommonResponse()
        if body is not None:
            upstream.append(("content-length", str(len(body))))
            common.body_mutation.body = body
        common.header_mutation.CopyFrom(self._upstream(upstream))
        response = ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))
        response.dynamic_metadata.update({"warden": metadata(call, a)})
        return response

    def _upstream(self, headers: list[tuple[str, str]]) -> ep.HeaderMutation:
        given = {name for name, _ in headers}
        return ep.HeaderMutation(set_headers=header_options(headers, raw=True),
                                 remove_headers=[h for h in self.mesh.remove if h not in given])

    async def _response_headers(self, message: ep.HttpHeaders) -> ep.ProcessingResponse:
        headers = _header_map(message.headers)
        self.status = int(headers.get(":status", "0") or 0)
        a = self.a
        if a is None:
            return ep.ProcessingResponse(response_headers=ep.HeadersResponse())
        if self.status < 400 and headers.get("content-type", "").startswith("text/event-stream"):
            route = a.decision.route
            self.meter = StreamMeter(route.max_output_tokens if route else 0)
        if message.end_of_stream:
            await self._settle()
        added = llm_http.rate_limit_headers(a.decision.limits, self.mesh.styles)
        return ep.ProcessingResponse(response_headers=ep.HeadersResponse(
            response=ep.CommonResponse(header_mutation=ep.HeaderMutation(
                set_headers=header_options(added, raw=True)))))

    async def _response_body(self, message: ep.HttpBody) -> ep.ProcessingResponse:
        if self.a is None or self.settled and not self.cut:
            return _CONTINUE_BODY
        if self.cut:
            # The client has its last event; the rest of the upstream's answer is dropped, and
            # a reply that is not the body's ends the stream (Envoy resets it).
            if message.end_of_stream:
                return ep.ProcessingResponse(response_body=ep.BodyResponse(
                    response=ep.CommonResponse(body_mutation=ep.BodyMutation(clear_body=True))))
            return ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(
                status=http_status_pb2.HttpStatus(code=200), details="warden_stream_cut"))
        data = message.body
        if self.meter is not None:
            offset = self.meter.feed(data)
            if offset is not None:
                self.cut = True
                await self._settle()
                ending = cut_events(self.meter.limit)
                body = (data[:offset] if offset >= 0 else b"\n\n") + ending
                return ep.ProcessingResponse(response_body=ep.BodyResponse(
                    response=ep.CommonResponse(body_mutation=ep.BodyMutation(body=body))))
        elif len(self.answer) + len(data) <= MAX_RESPONSE_BYTES:
            self.answer += data
        if message.end_of_stream:
            await self._settle()
        return _CONTINUE_BODY

    def _used(self) -> tuple[Used, str, str]:
        """(what the call used, its outcome, how that is known)."""
        assert self.call is not None and self.a is not None
        estimate = self.a.plan.request.input_tokens
        if self.meter is not None:
            used = self.meter.used(estimate)
            if self.cut:
                return used, "cancelled", "cut"
            ended = self.meter.done and not self.meter.malformed
            return used, "completed" if ended else "failed", \
                "counted" if used.counted else "reported"
        reported = json_usage(bytes(self.answer)) if self.answer else None
        if self.status >= 400:
            return reported or Used(0, 0), "failed", "failed"
        if reported is not None:
            return reported, "completed", "reported"
        # No usage in a successful answer: its text, about four characters a token.
        return Used(estimate, math.ceil(len(self.answer) / 4), counted=True), "completed", \
            "counted"

    async def _settle(self) -> None:
        if self.settled:
            return
        self.settled = True
        a, call = self.a, self.call
        assert a is not None and call is not None
        used, outcome, how = self._used()
        c = self.mesh.components
        row = {"request_id": call.request_id, "input_tokens": used.input_tokens,
               "output_tokens": used.output_tokens,
               "cached_input_tokens": used.cached_input_tokens, "model": "", "provider": "",
               "outcome": outcome,
               "latency_ms": int((time.monotonic() - self.started) * 1000)}
        try:
            await c.reservations.settle(a.compiled.identity.org_id, row, a.reservation_id,
                                        None, await c.cache.prices())
        except Exception as exc:  # noqa: BLE001 - the answer goes on; the reservation expires
            _SETTLED["not_stored"].inc()
            log.warning("usage seen through ext_proc not settled",
                        extra={"request_id": call.request_id, "error": repr(exc)})
            return
        _SETTLED[how].inc()

    async def close(self) -> None:
        """The stream ended: a metered answer cut short settles from what passed."""
        if self.a is not None and not self.settled and self.meter is not None:
            await self._settle()


class EnvoyProcessor(external_processor_pb2_grpc.ExternalProcessorServicer):
    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    async def Process(self, requests: AsyncIterator[ep.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = _Exchange(self._mesh, context)
        try:
            async for message in requests:
                if isinstance(message, Malformed):
                    message.raise_error()
                yield await exchange.handle(message)
        except Exception as exc:  # noqa: BLE001 - every error leaves as a status
            await abort(context, translate("Process", exc))
        finally:
            await exchange.close()
