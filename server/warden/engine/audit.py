"""The audit setting of a caller, and what it does to the trail (pure: no I/O).

- Which setting applies: the least specific *locked* enforced audit policy, else the most
  specific enforced one, else the defaults (log every decision, store no prompt text).
- Sampling of the decision log is decided by the request id, so every sidecar (and every
  replay) makes the same choice for one call.
- An explanation keeps what repeats from call to call (each result's and limit's policy
  fields) in a snapshot, stored once per org; `expand` joins the two back together.
- Scrubbing runs on an event's attributes before it is journaled: prompt text is removed
  unless the setting keeps it, masked paths become "***", hashed paths an HMAC of their JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warden.engine.model import AuditSetting, Decision, PolicyRecord, Reason

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


# A result's own fields (RESULT[4:]) when it is a plain allow.
PLAIN_ALLOW = [True, Reason.ALLOWED.value, ""]


@dataclass(frozen=True)
class Snapshot:
    """The fixed fields of a decision's results and limits, stored once per org and content:
    `body` is {"results": [RESULT[:4] lists], "limits": [LIMIT[:4] lists]}, `id` a hash of its
    JSON."""

    id: str
    body: dict[str, Any]


def snapshot_of(decision: Decision) -> Snapshot:
    """The snapshot of a decision's fixed fields (the scope is one "kind:id" field)."""
    body = {
        "results": [[r.policy_id, f"{r.scope_kind}:{r.scope_id}", r.policy_type, r.mode]
                    for r in decision.results],
        "limits": [[p.id, f"{p.scope_kind}:{p.scope_id}", p.metric, p.limit]
                   for p in (o.check.policy for o in decision.limits)]}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return Snapshot(hashlib.sha256(text.encode()).hexdigest()[:32], body)


def explanation(decision: Decision, snapshot: Snapshot) -> dict[str, Any]:
    """The decision's reasons as the attributes of an "authorize.decision" event that refers to
    its snapshot (snapshot_of; a compiled set keeps its few). What repeats from call to call
    (each result's policy, scope, type and mode; each limit's policy, scope, metric and limit)
    is in the snapshot; the attributes hold its id and what this call decided, as positional
    lists: the results that are not a plain allow as [index, then RESULT[4:]], limits as
    [remaining, reset_time], the route in ROUTE order. `expand` joins the two into the full
    form GetRequestStory rebuilds the AuthorizeResponse from."""
    route = decision.route
    attributes: dict[str, Any] = {
        "decision": "allow" if decision.allowed else "deny",
        "reason": decision.reason.value,
        "snapshot": snapshot.id,
        "limits": [[o.remaining, o.reset_text] for o in decision.limits],
    }
    own = [[i, r.allowed, r.reason.value, r.message] for i, r in enumerate(decision.results)
           if not r.allowed or r.reason is not Reason.ALLOWED or r.message]
    if own:
        attributes["results"] = own
    if route is not None:
        attributes["route"] = [route.provider, route.model, route.max_output_tokens,
                               [[t.provider, t.model] for t in route.fallbacks]]
    if decision.retry_after is not None:
        attributes["retry_after_seconds"] = decision.retry_after.total_seconds()
    return attributes


@dataclass(slots=True)
class Explanation:
    """How a decision is explained in its journal record: plainly (what `explanation` gives,
    which the journal may encode straight from the decision), or by attributes already
    worked out (expanded, scrubbed, prompts added) for a setting that changes them."""

    snapshot: Snapshot | None
    given: dict[str, Any] | None = None

    @property
    def plain(self) -> bool:
        return self.given is None

    def attributes(self, decision: Decision) -> dict[str, Any]:
        if self.given is not None:
            return self.given
        assert self.snapshot is not None
        return explanation(decision, self.snapshot)


def expand(attributes: dict[str, Any], body: Mapping[str, Any] | None) -> dict[str, Any]:
    """An explanation with its snapshot's fields put back: results in RESULT order, limits in
    LIMIT order, without the snapshot id. Attributes without a snapshot id (explanations
    stored before snapshots, or under a setting that masks or hashes fields) are returned as
    they are, and so are attributes whose snapshot is missing or does not fit them."""
    if "snapshot" not in attributes or not body:
        return attributes
    try:
        fixed_results, fixed_limits = body["results"], body["limits"]
        own = [PLAIN_ALLOW] * len(fixed_results)
        for i, *result in attributes.get("results", ()):
            if not 0 <= i < len(own) or len(result) != len(PLAIN_ALLOW):
                return attributes
            own[i] = result
        limits = attributes["limits"]
        if len(limits) != len(fixed_limits):
            return attributes
        full = {k: v for k, v in attributes.items() if k != "snapshot"}
        full["results"] = [list(f) + list(o) for f, o in zip(fixed_results, own, strict=True)]
        full["limits"] = [list(f) + list(o) for f, o in zip(fixed_limits, limits, strict=True)]
    except (KeyError, TypeError, ValueError):
        return attributes
    return full


def scrub(attributes: dict[str, Any], setting: AuditSetting, pepper: bytes) -> dict[str, Any]:
    """`attributes` as the setting lets them be stored (a new dict when anything changes)."""
    if not (setting.mask_fields or setting.hash_fields) and (
            setting.store_prompts or not any(name in attributes for name in PROMPT_FIELDS)):
        return attributes
    return _scrubbed(json.loads(json.dumps(attributes)), setting, pepper)  # a deep copy


# Attributes as journaled: compact JSON text, non-ASCII kept as it is (an escape would be a
# backslash, which COPY's text format escapes in turn).
compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                check_circular=False).encode
# A prompt field's key in compact JSON. Only the end of a key can read so (a quote inside a
# string is escaped), and a false match (a nested key) costs only a parse.
_PROMPT_KEY = re.compile("|".join(f'"{name}":' for name in PROMPT_FIELDS))


def scrub_json(text: str, setting: AuditSetting, pepper: bytes) -> str:
    """scrub() of attributes given as compact JSON text: the text itself when nothing
    changes."""
    if not (setting.mask_fields or setting.hash_fields) and (
            setting.store_prompts or not _PROMPT_KEY.search(text)):
        return text
    return compact_json(_scrubbed(json.loads(text), setting, pepper))


def _scrubbed(out: dict[str, Any], setting: AuditSetting, pepper: bytes) -> dict[str, Any]:
    """Scrub `out` in place."""
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
