"""The audit setting of a caller, and what it does to the trail (pure: no I/O).

- Which setting applies: the least specific *locked* enforced audit policy, else the most
  specific enforced one, else the defaults (log every decision, store no prompt text).
- Sampling of the decision log is decided by the request id, so every sidecar (and every
  replay) makes the same choice for one call.
- Scrubbing runs on an event's attributes before it is journaled: prompt text is removed
  unless the setting keeps it, masked paths become "***", hashed paths an HMAC of their JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Sequence
from typing import Any

from warden.engine.model import AuditSetting, Decision, PolicyRecord, bucket_time

DEFAULT = AuditSetting()
# Attributes that carry prompt or completion text (top level of an event's attributes).
PROMPT_FIELDS = ("prompt", "completion", "messages")
REMOVED = "[not stored: the audit setting does not store prompts]"
MASK = "***"
# Field order of the positional lists in an explanation.
RESULT = ("policy_id", "scope", "policy_type", "mode", "allowed", "reason", "message")
ROUTE = ("provider", "model", "max_output_tokens", "fallbacks")  # fallbacks: [provider, model]
LIMIT = ("policy_id", "scope", "metric", "limit", "remaining", "reset_time")


def audit_setting(policies: Sequence[PolicyRecord]) -> AuditSetting:
    """The setting among a caller's policies (in any order)."""
    enforced = sorted((p for p in policies if p.audit is not None and p.enforced),
                      key=PolicyRecord.specificity)
    locked = [p for p in reversed(enforced) if p.locked]
    chosen = (locked or enforced)[:1]
    return chosen[0].audit if chosen and chosen[0].audit else DEFAULT


def sampled(rate: float, request_id: str) -> bool:
    """Whether a call falls in the logged share `rate`: a fixed hash of its request id."""
    if rate >= 1:
        return True
    return rate > 0 and zlib.crc32(request_id.encode()) < rate * 2**32


def explanation(decision: Decision) -> dict[str, Any]:
    """The decision's reasons as the attributes of an "authorize.decision" event: the fields of
    its AuthorizeResponse, which GetRequestStory rebuilds from them. Results, route and limits
    are positional lists (fields in RESULT, ROUTE and LIMIT order): every call writes one, and
    named fields would double what the decision log encodes and stores."""
    route = decision.route
    attributes: dict[str, Any] = {
        "decision": "allow" if decision.allowed else "deny",
        "reason": decision.reason.value,
        "results": [[r.policy_id, f"{r.scope_kind}:{r.scope_id}", r.policy_type, r.mode,
                     r.allowed, r.reason.value, r.message] for r in decision.results],
        "limits": [[o.check.policy.id, f"{o.check.policy.scope_kind}:{o.check.policy.scope_id}",
                    o.check.policy.metric, o.check.policy.limit, o.remaining,
                    bucket_time(o.reset_time) if o.reset_time else None]
                   for o in decision.limits],
    }
    if route is not None:
        attributes["route"] = [route.provider, route.model, route.max_output_tokens,
                               [[t.provider, t.model] for t in route.fallbacks]]
    if decision.retry_after is not None:
        attributes["retry_after_seconds"] = decision.retry_after.total_seconds()
    return attributes


def scrub(attributes: dict[str, Any], setting: AuditSetting, pepper: bytes) -> dict[str, Any]:
    """`attributes` as the setting lets them be stored (a new dict when anything changes)."""
    if not (setting.mask_fields or setting.hash_fields) and (
            setting.store_prompts or not any(name in attributes for name in PROMPT_FIELDS)):
        return attributes
    out = json.loads(json.dumps(attributes))  # a deep copy of plain JSON values
    if not setting.store_prompts:
        for name in PROMPT_FIELDS:
            if name in out:
                out[name] = REMOVED
    for path in setting.mask_fields:
        _replace(out, path, lambda value: MASK)
    for path in setting.hash_fields:
        _replace(out, path, lambda value: "hmac-sha256:" + hmac.new(
            pepper, json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),
            hashlib.sha256).hexdigest())
    return out


def _replace(attributes: dict[str, Any], path: str, new) -> None:
    *parents, last = path.split(".")
    node: Any = attributes
    for name in parents:
        node = node.get(name) if isinstance(node, dict) else None
    if isinstance(node, dict) and last in node:
        node[last] = new(node[last])
