"""The request body ext_proc sends upstream: what the decision says it must be (the routed
model, the lowered max tokens, usage asked for in a stream, the redacted messages)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from warden.api.llm_http import MAX_TOKENS_FIELDS, LlmCall
from warden.engine import Decision
from warden.guardrails import pii
from warden.guardrails.pii import Finding


def rewritten(call: LlmCall, decision: Decision) -> bytes | None:
    """The request body as the decision says it must go upstream (the routed model, the lowered
    max tokens, usage asked for in a stream), or None when it goes as it came."""
    body, route = call.body, decision.route
    if body is None or route is None:
        return None
    changed = dict(body)
    if route.model != call.model:
        changed["model"] = route.model
    if route.max_output_tokens and route.max_output_tokens != call.max_tokens \
            and call.kind != "embeddings":
        names = MAX_TOKENS_FIELDS[call.kind]
        # The field the caller used; max_tokens when none (every compatible server knows it).
        name = next((n for n in names if n in body), names[-1])
        changed[name] = route.max_output_tokens
    if decision.redactions is not None:
        _redact_body(call.kind, body, changed, decision.redactions.spans)
    if call.stream and call.kind in ("chat.completions", "completions"):
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        if options.get("include_usage") is not True:
            changed["stream_options"] = {**options, "include_usage": True}
    if changed == body:
        return None
    return json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()


def _redact_body(kind: str, body: dict[str, Any], changed: dict[str, Any],
                 spans: Sequence[Finding]) -> None:
    """Replace the redacted spans in the body's messages, where _messages read them."""
    name = "messages" if kind == "chat.completions" else \
        {"completions": "prompt", "embeddings": "input", "responses": "input"}[kind]
    value = body[name]
    if kind == "chat.completions" or (kind == "responses" and isinstance(value, list)):
        items = [dict(item) for item in value]
        for i, item in enumerate(items):
            mine = [f for f in spans if f.message == i]
            if mine:
                item["content"] = _redact_value(item.get("content"), mine)
        changed[name] = items
    else:
        changed[name] = _redact_value(value, list(spans))


def _redact_value(value: Any, spans: list[Finding]) -> Any:
    """A message's content (a string, or a list of parts read as their texts joined by a
    newline, as _content reads it) with the spans replaced, part by part."""
    if isinstance(value, str):
        return pii.redact(value, spans)
    out, at = [], 0
    for part in value:
        text = part if isinstance(part, str) else part.get("text", "")
        end = at + len(text)
        mine = [replace(f, start=max(f.start, at) - at, end=min(f.end, end) - at)
                for f in spans if f.start < end and at < f.end]
        new = pii.redact(text, mine) if mine else text
        out.append(new if isinstance(part, str) else {**part, "text": new} if mine else part)
        at = end + 1
    return out
