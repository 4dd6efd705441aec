"""What both Envoy adapters (ext_authz, ext_proc) do with an HTTP LLM call: who calls, and
the decision, through the same Callers and Authorizer as the gRPC API. An answer Warden
decided against the call is raised as Refused, holding what the client receives; a failure to
decide (the database and caches cannot say who calls) propagates, for the adapter to fail its
RPC and leave the outcome to Envoy's failure_mode_allow."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from warden.api import llm_http
from warden.api.llm_http import BadCall, HttpAnswer, LlmCall
from warden.authorizer import Authorization
from warden.components import Components
from warden.errors import WardenError
from warden.keys import KeyRecord
from warden.tls import TrustedPeers


class Refused(Exception):
    def __init__(self, answer: HttpAnswer, reason: str,
                 authorization: Authorization | None = None) -> None:
        super().__init__(reason)
        self.answer, self.reason, self.authorization = answer, reason, authorization


class Mesh:
    def __init__(self, components: Components, key_headers: tuple[str, ...],
                 rate_limit_styles: frozenset[str],
                 trusted: TrustedPeers, rag_header: str = llm_http.RAG_SOURCES_HEADER) -> None:
        self.components = components
        self.key_headers = key_headers
        self.styles = rate_limit_styles
        self.trusted = trusted  # whose reported workload identities name an app
        self.rag_header = rag_header
        # What the upstream must never see: the Warden key, and any x-warden-* header a client
        # made up (those Warden sets overwrite the client's).
        self.remove = key_headers + (rag_header,) + llm_http.UPSTREAM_HEADERS

    def parse(self, path: str, headers: Mapping[str, str], body: bytes | None) -> LlmCall:
        try:
            return llm_http.parse(path, headers, body, self.rag_header)
        except BadCall as exc:
            raise Refused(llm_http.bad_call(exc), "INVALID_ARGUMENT") from None

    async def caller(self, headers: Mapping[str, str], principal: str,
                     context: grpc.aio.ServicerContext) -> KeyRecord:
        """Who calls: the Warden key in the request's headers; without one, the app registered
        with the workload identity Envoy reports (source.principal), if Envoy is a trusted
        peer: anyone who can reach the port could claim any principal."""
        key = llm_http.api_key(headers, self.key_headers)
        try:
            if key:
                return await self.components.callers.by_key(key)
            if principal and self.trusted.trust(context):
                return await self.components.callers.by_principal(principal)
        except WardenError as exc:
            raise _refused(exc) from None
        message = ("no Warden API key: send it as Authorization: Bearer <key> or in one of the "
                   f"headers {', '.join(self.key_headers)}")
        if principal:
            message += (f"; the workload identity {principal[:200]!r} was not used: Envoy "
                        "reports one that Warden trusts only on WARDEN_SUBJECT_SOCKET or with a "
                        "client certificate named in WARDEN_TLS_TRUSTED_CLIENTS")
        raise Refused(llm_http.error_answer(401, "API_KEY_MISSING", message), "API_KEY_MISSING")

    async def authorize(self, caller: KeyRecord, call: LlmCall,
                        can_redact: bool) -> Authorization:
        """The decision of an allowed call; Refused (holding the decision) otherwise.
        `can_redact`: the adapter rewrites the body (ext_proc) and can send a redacted one."""
        try:
            a = await self.components.authorizer.authorize(caller, call.input(can_redact))
        except WardenError as exc:
            raise _refused(exc) from None
        if not a.decision.allowed:
            raise Refused(llm_http.denial(a.decision, self.styles), a.decision.reason.value, a)
        return a


def _refused(exc: WardenError) -> Exception:
    status = llm_http.ERROR_STATUS.get(exc.code)
    if status is None:
        return exc
    return Refused(llm_http.error_answer(status, exc.reason, exc.message,
                                         exc.retry_after_seconds), exc.reason)
