"""What the journal holds: the records of decisions, usage and audit batches, as the flush
applies them (store/decision_log.py, migrations/0008's warden_apply_journal). One place for their
fields, so that what Authorize and RecordUsage write and what the flush reads stay in step.

- decision: one per Authorize, with the reservation of an allowed call and, when sampled, the
  attributes of its explanation event ("explanation", and "snapshot" the first time a segment
  refers to one).
- usage: one per settlement: the tokens, the cost and the outcome. The flush settles the
  reservation from it (actual minus reserved, per part) when it is the request's first.
- audit: a batch of events; its body is followed by a newline and the events as rows of COPY's
  text format (built when they are acknowledged: the flush COPYs them as they are).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from warden.engine import (
    AuthorizeInput,
    CompiledSet,
    Decision,
    Identity,
    Part,
    Plan,
    PolicyResult,
)
from warden.engine.audit import compact_json
from warden.engine.pricing import Price
from warden.journal import split

USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "model", "provider",
                "outcome", "latency_ms")


def batch_entry(record: dict[str, Any]) -> tuple[str, int]:
    """What the journal keeps of a record until it is applied: its kind, and how many rows it
    adds to a flush call (an audit record, one per event; a decision, two when explained)."""
    kind = record["kind"]
    if kind == "audit":
        return kind, record["rows"] if "rows" in record else len(record["events"])
    return kind, 1 + ("explanation" in record or "event" in record)


def decision_record(identity: Identity, request: AuthorizeInput, decision: Decision,
                    decision_id: str, parts: tuple[Part, ...], reserved_cost: int,
                    price: Price | None, create_time: str, expire_time: str | None
                    ) -> dict[str, Any]:
    """An Authorize's record. `price`: the one the reservation was made at when the price
    table had none (a budget's default price), for whichever sidecar settles it."""
    route = decision.route
    allowed = decision.allowed
    record = {
        "kind": "decision", "org_id": identity.org_id, "request_id": request.request_id,
        "app_id": identity.app_id, "api_key_id": identity.api_key_id,
        "user_id": request.user_id or identity.user_id,
        "model": route.model if route else request.model,
        "provider": route.provider if route else request.provider,
        "decision": "allow" if allowed else "deny", "reason": decision.reason.value,
        "input_tokens": request.input_tokens,
        "max_output_tokens": route.max_output_tokens if route else request.max_output_tokens,
        "create_time": create_time, "decision_id": decision_id,
        "reservation_id": decision_id if allowed else "",
        "reserved": [{"policy_id": p.policy_id, "metric": p.metric, "amount": p.amount,
                      "bucket_start": p.bucket_text} for p in parts],
        "reserved_cost_micros": reserved_cost if allowed else 0,
        "expire_time": expire_time}
    if price is not None and allowed:
        record["price"] = price_json(price)
    return record


def price_json(price: Price) -> dict[str, int]:
    return {"input": price.input_micros_per_million,
            "output": price.output_micros_per_million,
            "cached_input": price.cached_input_micros_per_million}


def price_from_json(data: Mapping[str, int] | None) -> Price | None:
    return None if data is None else Price(data["input"], data["output"], data["cached_input"])


# The characters a field of COPY's text format must escape, and how.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_rows(org_id: str, app_id: str, events: list[dict[str, Any]]) -> bytes:
    """Audit events (the dicts AuditLog.append takes) as COPY text rows of the audit columns
    (store/postgres.py AUDIT_COLUMNS)."""
    head = f"{org_id.translate(_COPY_ESCAPES)}\t{app_id.translate(_COPY_ESCAPES)}\t"
    lines = []
    for e in events:
        fields = (e["event_id"], e["event_time"], e["action"], e["request_id"], e["user_id"],
                  e["model"], e["provider"], e["attributes"])
        line = "\t".join(fields)
        # Most events need no escape: one look at the joined line, not one per field.
        if line.count("\t") != len(fields) - 1 or "\\" in line or "\n" in line or "\r" in line:
            line = "\t".join(f.translate(_COPY_ESCAPES) for f in fields)
        lines.append(f"{head}{line}\t{'t' if e.get('time_assigned') else 'f'}\n")
    return "".join(lines).encode()


def audit_rows(body: bytes) -> tuple[bytes, bool]:
    """The COPY rows of an audit record's body, and whether none of them needs the look-up
    by id ("assigned" counts those that do; true only of records this version journaled). (An
    earlier Warden journaled the events as JSON in the record itself: those are turned into
    rows here.)"""
    record, rows = split(body)
    if rows:
        return rows, "assigned" not in json.loads(record)
    return rows_of_events(json.loads(record)), False


def rows_of_events(record: dict[str, Any]) -> bytes:
    """The COPY rows of an audit record that holds its events, attributes as JSON values."""
    return copy_rows(record["org_id"], record["app_id"], [
        {**e, "attributes": compact_json(e["attributes"])} for e in record["events"]])


def _said(results: Sequence[PolicyResult], start: int = 0) -> str:
    """The explanation's entries (JSON, without brackets) of results[start:] that say more
    than a plain allow: [index, allowed, reason, message]."""
    return compact_json([[n, r.allowed, r.reason.value, r.message]
                         for n, r in enumerate(results) if n >= start and (
                             not r.allowed or r.reason.value != "ALLOWED" or r.message)])[1:-1]


class DecisionJSON:
    """The JSON of the common decision record of one compiled set, from fragments made once.

    Why: encoding a decision record (with its explanation) from dicts cost about as much as
    the rest of the decision. Most of it is the same for every call of a compiled set: the
    org, app, key, user, model and provider, each reservation part's policy and metric, the
    explanation's snapshot id, fixed results and route. `encode` fills in what varies: the
    request id (validated to characters JSON needs no escape for), the end user, the numbers,
    the times and the results the call's own checks gave (guardrails, cost caps). It covers
    an allowed call whose quotas each admitted it plainly (no lowered tokens spoke), explained
    plainly (an audit setting that masks, hashes or stores prompts scrubs the explanation: the
    dicts do that) or not at all; anything else goes through decision_record.
    tests/unit/test_records.py checks that both give the same JSON value for every engine
    case."""

    def __init__(self, compiled: CompiledSet) -> None:
        i, route = compiled.identity, compiled.route
        assert route is not None
        text = json.encoder.encode_basestring  # a JSON string literal (C)
        self._head = (f'{{"kind":"decision","org_id":{text(i.org_id)},"app_id":'
                      f'{text(i.app_id)},"api_key_id":{text(i.api_key_id)},"model":'
                      f'{text(route.model)},"provider":{text(route.provider)},'
                      '"decision":"allow","reason":"ALLOWED","request_id":"')
        self._user = i.user_id
        self._user_json = text(i.user_id)
        self._parts = {t.policy.id: f'{{"policy_id":{text(t.policy.id)},"metric":'
                                    f'"{t.policy.metric}","amount":' for t in compiled.terms}
        self._price = (f',"price":{compact_json(price_json(compiled.price))}'
                       if compiled.price_is_default and compiled.price else "")
        self._fallbacks = compact_json([[t.provider, t.model] for t in route.fallbacks])
        self._route = f',"route":[{text(route.provider)},{text(route.model)},'

        self._results = {id(compiled.fixed): _said(compiled.fixed),
                         id(compiled.fixed_capped): _said(compiled.fixed_capped)}

    def encode(self, plan: Plan, decision: Decision, parts: tuple[Part, ...], decision_id: str,
               create_time: str, expire_time: str, reserved_cost: int,
               snapshot_id: str | None) -> bytes:
        """The record; with the explanation that refers to `snapshot_id` when one is given."""
        request, route = plan.request, decision.route
        assert route is not None
        user, heads = request.user_id, self._parts
        reserved = ",".join(
            f'{heads[p.policy_id]}{p.amount},"bucket_start":"{p.bucket_text}"}}'
            if p.bucket_text else f'{heads[p.policy_id]}{p.amount},"bucket_start":null}}'
            for p in parts)
        out = [self._head, request.request_id, '","user_id":',
               self._user_json if not user or user == self._user else
               json.encoder.encode_basestring(user),
               f',"input_tokens":{request.input_tokens},"max_output_tokens":'
               f'{route.max_output_tokens},"create_time":"{create_time}","decision_id":"',
               decision_id, '","reservation_id":"', decision_id, '","reserved":[', reserved,
               f'],"reserved_cost_micros":{reserved_cost},"expire_time":"{expire_time}"',
               self._price]
        if snapshot_id is not None:
            limits = ",".join(
                f'[{o.remaining},"{o.reset_text}"]' if o.reset_text is not None and
                o.remaining is not None else compact_json([o.remaining, o.reset_text])
                for o in decision.limits)
            said = self._results[id(plan.fixed)]
            if len(plan.results) > len(plan.fixed):
                said = ",".join(filter(None, (said, _said(plan.results, len(plan.fixed)))))
            out += [',"explanation":{"decision":"allow","reason":"ALLOWED","snapshot":"',
                    snapshot_id, '","limits":[', limits, "]",
                    f',"results":[{said}]' if said else "", self._route,
                    str(route.max_output_tokens), ",", self._fallbacks, "]}"]
        out.append("}")
        return "".join(out).encode()
