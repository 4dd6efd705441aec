"""An LLM call made over HTTP (OpenAI's API shape), as the Envoy adapters see it: what is
asked, read from the path, headers and JSON body; and Warden's answer in HTTP terms (status,
an OpenAI-style error body, rate-limit headers, the headers the upstream gets).

Pure translation shared by `ext_authz` (envoy_authz.py) and `ext_proc` (envoy_proc.py): no
gRPC, no Envoy types, no I/O. docs/envoy.md describes every answer.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warden.api.validate import MAX_RAG_SOURCES, MAX_TEXT, MAX_TOKENS, REQUEST_ID
from warden.engine import AuthorizeInput, Decision, QuotaOutcome, Reason

# The last segment(s) of a path, without its query, name the kind of call: a gateway may
# serve the API under a prefix (/openai/v1/chat/completions).
KINDS = (("/chat/completions", "chat.completions"), ("/completions", "completions"),
         ("/embeddings", "embeddings"), ("/responses", "responses"))
# Where each kind asks for its largest output.
MAX_TOKENS_FIELDS = {"chat.completions": ("max_completion_tokens", "max_tokens"),
                     "completions": ("max_tokens",), "responses": ("max_output_tokens",),
                     "embeddings": ()}
# Headers Warden sets for the upstream; any of them a client sent is removed.
UPSTREAM_HEADERS = ("x-warden-request-id", "x-warden-reservation-id", "x-warden-model",
                    "x-warden-provider", "x-warden-max-tokens")
RAG_SOURCES_HEADER = "x-warden-rag-sources"  # the default of WARDEN_ENVOY_RAG_SOURCES_HEADER
PROVIDER_HEADER = "x-warden-provider"  # the route's provider, set by the mesh's route config
REQUEST_ID_HEADER = "x-request-id"
RATE_LIMIT_STYLES = frozenset({"openai", "ietf"})


class BadCall(Exception):
    """The HTTP request is not one Warden can decide on: 400, with what is wrong and where."""

    def __init__(self, where: str, description: str) -> None:
        super().__init__(f"{where} {description}")
        self.where, self.description = where, description


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(slots=True)
class LlmCall:
    """What an HTTP request asks of Warden. `kind` is "" for a path that is no LLM call."""

    kind: str
    request_id: str
    model: str = ""
    max_tokens: int = 0  # as asked; 0: not set
    stream: bool = False
    user: str = ""
    provider: str = ""
    messages: list[Message] = field(default_factory=list)
    body: dict[str, Any] | None = None
    rag_sources: list[str] = field(default_factory=list)

    def input(self, can_redact: bool) -> AuthorizeInput:
        text = sum(len(m.content) for m in self.messages)
        chars = text + sum(len(m.role) for m in self.messages)
        return AuthorizeInput(
            prompt_chars=text,
            can_redact=can_redact,
            request_id=self.request_id, model=self.model, provider=self.provider,
            input_tokens=-(-chars // 4),  # about four characters a token, as Authorize
            # An embedding has no output; 1 keeps a quota from reserving the default.
            max_output_tokens=1 if self.kind == "embeddings" else self.max_tokens,
            user_id=self.user, messages=self.messages, rag_sources=self.rag_sources)


def kind_of(path: str) -> str:
    path = path.partition("?")[0].rstrip("/")
    return next((kind for suffix, kind in KINDS if path.endswith(suffix)), "")


def api_key(headers: Mapping[str, str], names: Sequence[str]) -> str:
    """The Warden key from the first of `names` (lower-case header names) present;
    `authorization` carries it as a bearer token. "" when none is there."""
    for name in names:
        value = headers.get(name, "")
        if not value:
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
        return value.strip()
    return ""


def request_id(headers: Mapping[str, str]) -> str:
    """Envoy's x-request-id (so the access log, RecordUsage and the audit trail line up), or a
    new id when there is none."""
    value = headers.get(REQUEST_ID_HEADER, "")
    if not value:
        return uuid.uuid4().hex
    if not REQUEST_ID.match(value):
        raise BadCall(f"header {REQUEST_ID_HEADER}",
                      "must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'")
    return value


def parse(path: str, headers: Mapping[str, str], body: bytes | None,
          rag_header: str = RAG_SOURCES_HEADER) -> LlmCall:
    """The call a request makes. `body` is None when the proxy sent none. BadCall when an LLM
    call's body cannot be read."""
    kind = kind_of(path)
    call = LlmCall(kind, request_id(headers), provider=headers.get(PROVIDER_HEADER, ""))
    sources = [s.strip() for s in headers.get(rag_header, "").split(",") if s.strip()]
    if len(sources) > MAX_RAG_SOURCES or any(len(s) > MAX_TEXT for s in sources):
        raise BadCall(f"headers.{rag_header}",
                      f"must name at most {MAX_RAG_SOURCES} sources of at most {MAX_TEXT} "
                      "characters each")
    call.rag_sources = sources
    if not kind:
        return call
    if headers.get("x-envoy-auth-partial-body") == "true":
        raise BadCall("body", "was cut at the proxy's buffer limit (with_request_body."
                      "max_request_bytes): Warden needs the whole JSON body")
    if not body:
        raise BadCall("body", f"is required: a {kind} call names its model in its JSON body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadCall("body", f"is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadCall("body", f"is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadCall("body", "must be a JSON object")
    call.body = data
    call.model = _text(data, "model", required=True)
    call.user = _text(data, "user")
    for name in MAX_TOKENS_FIELDS[kind]:
        value = data.get(name)
        if value is not None:
            if type(value) is not int or not 0 <= value <= MAX_TOKENS:
                raise BadCall(f"body.{name}", f"must be an integer between 0 and {MAX_TOKENS}")
            call.max_tokens = value
            break
    stream = data.get("stream", False)
    if type(stream) is not bool:
        raise BadCall("body.stream", "must be true or false")
    call.stream = stream
    call.messages = _messages(kind, data)
    return call


def _text(data: dict[str, Any], name: str, required: bool = False) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadCall(f"body.{name}", "is required (a string)" if required else
                      "must be a string")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise BadCall(f"body.{name}", f"must be at most {MAX_TEXT} characters, without NUL")
    return value


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or the text of a list of parts (images and audio count
    nothing here)."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                part_text = part.get("text", "")
                if not isinstance(part_text, str):
                    raise BadCall(f"{where}[{i}].text", "must be a string")
                texts.append(part_text)
            else:
                raise BadCall(f"{where}[{i}]", "must be a string or an object")
        text = "\n".join(texts)
    else:
        raise BadCall(where, "must be a string or a list of parts")
    if "\x00" in text:
        raise BadCall(where, "must not contain the NUL character (U+0000)")
    return text


def _messages(kind: str, data: dict[str, Any]) -> list[Message]:
    if kind == "chat.completions" or (kind == "responses" and isinstance(data.get("input"),
                                                                          list)):
        name = "messages" if kind == "chat.completions" else "input"
        items = data.get(name)
        if not isinstance(items, list) or (kind == "chat.completions" and not items):
            raise BadCall(f"body.{name}", "is required: a list of messages")
        messages = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadCall(f"body.{name}[{i}]", "must be an object")
            role = item.get("role", "")
            if not isinstance(role, str) or len(role) > MAX_TEXT:
                raise BadCall(f"body.{name}[{i}].role", "must be a short string")
            messages.append(Message(role, _content(item.get("content"),
                                                   f"body.{name}[{i}].content")))
        return messages
    name = {"completions": "prompt", "embeddings": "input", "responses": "input"}[kind]
    value = data.get(name)
    if value is None:
        raise BadCall(f"body.{name}", "is required")
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return [Message("user", " " * 4 * len(value))]  # token ids: four characters each
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return [Message("user", " " * 4 * sum(len(v) for v in value))]
    return [Message("user", _content(value, f"body.{name}"))]


# --- answers --------------------------------------------------------------------------------

# A denial's HTTP status, OpenAI error type and code, by the reason of its first denial.
_DENIALS: dict[Reason, tuple[int, str]] = {
    Reason.RATE_LIMITED: (429, "rate_limit_exceeded"),
    Reason.BUDGET_EXHAUSTED: (429, "insufficient_quota"),
    Reason.REQUEST_COST_CAP: (403, "request_cost_cap"),
    Reason.MODEL_NOT_ALLOWED: (403, "model_not_allowed"),
    Reason.PROVIDER_DISABLED: (403, "provider_disabled"),
    Reason.QUOTA_UNAVAILABLE: (503, "quota_unavailable"),
    Reason.PROVIDER_UNAVAILABLE: (503, "provider_unavailable"),
    Reason.MODEL_NOT_PRICED: (403, "model_not_priced"),
    Reason.PII_DETECTED: (403, "pii_detected"),
    Reason.RAG_SOURCE_NOT_ALLOWED: (403, "rag_source_not_allowed"),
    Reason.PROMPT_INJECTION: (403, "prompt_injection"),
}
# A WardenError's HTTP status, by its gRPC code. UNAVAILABLE and INTERNAL are not here: Warden
# could not decide, and the proxy's own failure mode says what happens.
ERROR_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
                "NOT_FOUND": 403, "FAILED_PRECONDITION": 403, "ALREADY_EXISTS": 409,
                "RESOURCE_EXHAUSTED": 429}
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "not_found_error", 409: "invalid_request_error", 429: "rate_limit_error",
          503: "server_error"}


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A denial as the client receives it."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]


def error_body(status: int, message: str, code: str, type_: str = "") -> bytes:
    """OpenAI's error shape, which its SDKs surface as the exception's message."""
    return json.dumps({"error": {"message": message, "type": type_ or _TYPES.get(status, "error"),
                                 "param": None, "code": code}}).encode()


def bad_call(exc: BadCall) -> HttpAnswer:
    return HttpAnswer(400, error_body(400, f"{exc.where} {exc.description}", "invalid_request"),
                      [("content-type", "application/json")])


def error_answer(status: int, reason: str, message: str,
                 retry_after: float | None = None) -> HttpAnswer:
    code = "invalid_api_key" if status == 401 else reason.lower()
    headers = [("content-type", "application/json")]
    if retry_after is not None:
        headers.append(("retry-after", str(max(1, math.ceil(retry_after)))))
    return HttpAnswer(status, error_body(status, message, code), headers)


def denial(decision: Decision, styles: frozenset[str]) -> HttpAnswer:
    """A denied decision: the first enforced denial names the status and the message."""
    first = next(r for r in decision.results if not r.allowed and r.mode == "enforce")
    status, code = _DENIALS[first.reason]
    type_ = ("insufficient_quota" if first.reason is Reason.BUDGET_EXHAUSTED else
             _limit_group(first.policy_id, decision.limits) or "requests"
             if status == 429 else "")
    headers = [("content-type", "application/json")]
    if decision.retry_after is not None:
        headers.append(("retry-after",
                        str(max(1, math.ceil(decision.retry_after.total_seconds())))))
    headers += rate_limit_headers(decision.limits, styles)
    message = f"{first.message or first.reason.value} (policy {first.policy_id})"
    return HttpAnswer(status, error_body(status, message, code, type_), headers)


def _limit_group(policy_id: str, limits: Iterable[QuotaOutcome]) -> str:
    for outcome in limits:
        if outcome.check.policy.id == policy_id:
            return _group(outcome)
    return ""


def _group(outcome: QuotaOutcome) -> str:
    """"requests" or "tokens" for a rate limit, "" for a budget."""
    rate = outcome.check.policy.rate_limit
    if rate is None:
        return ""
    return "requests" if rate.metric == "REQUESTS" else "tokens"


def duration_text(seconds: float) -> str:
    """A reset as OpenAI writes it: 20ms, 1s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_limit_headers(limits: Sequence[QuotaOutcome], styles: frozenset[str]
                       ) -> list[tuple[str, str]]:
    """The call's enforced rate limits as response headers: OpenAI's x-ratelimit-* (per group,
    the limit with the least left) and the IETF draft's RateLimit-Policy and RateLimit (every
    limit, named by policy id). Budgets are money, not rates: they are in neither."""
    if not styles or not limits:
        return []
    tightest: dict[str, tuple[int, int, float]] = {}
    policies, states = [], []
    for outcome in limits:
        policy = outcome.check.policy
        group = _group(outcome)
        if not group or not policy.enforced or outcome.remaining is None:
            continue
        limit = policy.limit
        remaining = min(max(outcome.remaining, 0), limit)
        reset = (outcome.reset_time - outcome.now).total_seconds() \
            if outcome.reset_time is not None else 0.0
        if group not in tightest or remaining < tightest[group][1]:
            tightest[group] = (limit, remaining, reset)
        assert policy.rate_limit is not None
        unit = ';qu="tokens"' if group == "tokens" else ""
        policies.append(f'"{policy.id}";q={limit};w={policy.rate_limit.window_seconds}{unit}')
        states.append(f'"{policy.id}";r={remaining};t={max(0, math.ceil(reset))}')
    headers = []
    if "openai" in styles:
        for group, (limit, remaining, reset) in tightest.items():
            headers += [(f"x-ratelimit-limit-{group}", str(limit)),
                        (f"x-ratelimit-remaining-{group}", str(remaining)),
                        (f"x-ratelimit-reset-{group}", duration_text(reset))]
    if "ietf" in styles and policies:
        headers += [("ratelimit-policy", ", ".join(policies)), ("ratelimit", ", ".join(states))]
    return headers


def upstream_headers(call: LlmCall, decision: Decision, reservation_id: str
                     ) -> list[tuple[str, str]]:
    """What the upstream is told of an allowed call: its ids, and the route where it differs
    from what the body asks (ext_proc rewrites the body itself)."""
    headers = [("x-warden-request-id", call.request_id)]
    if reservation_id:
        headers.append(("x-warden-reservation-id", reservation_id))
    route = decision.route
    if route is not None:
        if route.model != call.model:
            headers.append(("x-warden-model", route.model))
        if route.provider and route.provider != call.provider:
            headers.append(("x-warden-provider", route.provider))
        if route.max_output_tokens and route.max_output_tokens != call.max_tokens \
                and call.kind != "embeddings":
            headers.append(("x-warden-max-tokens", str(route.max_output_tokens)))
    return headers
