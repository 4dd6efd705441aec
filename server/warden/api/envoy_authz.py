"""Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`) on Warden's
gRPC port: a CheckRequest becomes the Authorizer's input, its decision a CheckResponse.

Every answer Warden decided (allowed, denied, a bad request, an unknown key) is a successful
RPC whose verdict is in `CheckResponse.status`, with the HTTP answer the client gets in
`denied_response`: Envoy's error path (`failure_mode_allow`, `status_on_error`) is left to a
sidecar that could not decide, which fails the RPC (UNAVAILABLE when its database and caches
cannot say who the caller is). llm_http.py reads the HTTP request and writes the answers;
docs/envoy.md lists them.

Check's handler sends bytes (RAW_RESPONSES): an allowed call's answer is encoded straight to the
wire (allowed_response), since building its HeaderValueOption and Struct messages field by field
cost more CPU than the decision; a denial is built as a message and serialized.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from warden.api import llm_http, wire
from warden.api.errors import rpc
from warden.api.llm_http import BadCall, HttpAnswer, LlmCall
from warden.api.mesh import Mesh, Refused
from warden.authorizer import Authorization

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The CheckResponse status of an HTTP answer.
_CODES = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED,
          403: code_pb2.PERMISSION_DENIED, 409: code_pb2.ALREADY_EXISTS,
          429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE}


def header_options(pairs: list[tuple[str, str]],
                   raw: bool = False) -> list[base_pb2.HeaderValueOption]:
    """Header mutations. ext_proc reads only `raw_value` (a `value` arrives empty there);
    ext_authz reads `value`."""
    if raw:
        return [base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, raw_value=v.encode()), append_action=_OVERWRITE)
            for k, v in pairs]
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v),
                                       append_action=_OVERWRITE) for k, v in pairs]


def denied(answer: HttpAnswer, message: str) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_CODES.get(answer.status, code_pb2.PERMISSION_DENIED),
                                 message=message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=answer.status),
            headers=header_options(answer.headers), body=answer.body.decode()))


def metadata(call: LlmCall, a: Authorization) -> dict[str, str]:
    """What Envoy's access log may record of a decision, e.g.
    %DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%."""
    identity, decision = a.compiled.identity, a.decision
    return {"decision_id": a.decision_id, "reservation_id": a.reservation_id,
            "request_id": call.request_id, "org_id": identity.org_id, "app_id": identity.app_id,
            "model": decision.route.model if decision.route else call.model,
            "decision": "allow" if decision.allowed else "deny",
            "reason": decision.reason.value}


_OK_STATUS = wire.field(1, b"")  # google.rpc.Status{code: OK}
_OVERWRITE_ACTION = wire.number(3, _OVERWRITE)


def _header_option(key: str, value: str) -> bytes:
    """HeaderValueOption{header: {key, value}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}."""
    return wire.field(1, wire.field(1, key.encode()) + wire.field(2, value.encode())) \
        + _OVERWRITE_ACTION


def allowed_response(upstream: list[tuple[str, str]], downstream: list[tuple[str, str]],
                     remove: list[str], metadata: Mapping[str, str]) -> bytes:
    """CheckResponse{status: OK, ok_response: {headers: upstream, headers_to_remove: remove,
    response_headers_to_add: downstream}, dynamic_metadata: metadata}, serialized."""
    ok = b"".join([*(wire.field(2, _header_option(k, v)) for k, v in upstream),
                   *(wire.field(5, name.encode()) for name in remove),
                   *(wire.field(6, _header_option(k, v)) for k, v in downstream)])
    # Struct{fields: {key: Value{string_value}}}
    struct = b"".join(wire.field(1, wire.field(1, k.encode()) + wire.field(2, wire.field(
        3, v.encode()))) for k, v in metadata.items())
    return _OK_STATUS + wire.field(3, ok) + (wire.field(4, struct) if struct else b"")


def http_headers(http: external_auth_pb2.AttributeContext.HttpRequest) -> Mapping[str, str]:
    """The request's headers by lower-case name, from `headers` or, when Envoy is set to
    encode_raw_headers, from `header_map`."""
    if http.headers:
        return http.headers
    return {h.key.lower(): h.raw_value.decode("utf-8", "replace") or h.value
            for h in http.header_map.headers}


class EnvoyAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    RAW_RESPONSES = frozenset({"Check"})

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    @rpc
    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext) -> bytes:
        attributes = request.attributes.request
        if not attributes.HasField("http"):
            return denied(llm_http.bad_call(BadCall(
                "attributes.request.http", "is required: Warden authorizes HTTP requests")),
                "INVALID_ARGUMENT").SerializeToString()
        http = attributes.http
        headers = http_headers(http)
        mesh = self._mesh
        try:
            call = mesh.parse(http.path, headers, http.raw_body or http.body.encode() or None)
            caller = await mesh.caller(headers, request.attributes.source.principal, context)
            if not call.kind:
                # Not an LLM call (GET /v1/models, say): the key is checked, nothing decided.
                return self._allowed([("x-warden-request-id", call.request_id)], [], {})
            a = await mesh.authorize(caller, call, can_redact=False)
        except Refused as refused:
            answer = denied(refused.answer, refused.reason)
            if refused.authorization is not None:
                answer.dynamic_metadata.update(metadata(call, refused.authorization))
            return answer.SerializeToString()
        return self._allowed(llm_http.upstream_headers(call, a.decision, a.reservation_id),
                             llm_http.rate_limit_headers(a.decision.limits, mesh.styles),
                             metadata(call, a))

    def _allowed(self, upstream: list[tuple[str, str]], downstream: list[tuple[str, str]],
                 values: Mapping[str, str]) -> bytes:
        given = {name for name, _ in upstream}
        return allowed_response(upstream, downstream,
                                [h for h in self._mesh.remove if h not in given], values)
