"""The data plane's one decision pipeline, for every entry point (the gRPC API; the Envoy
adapters call the same object).

Per call, in order: the caller's scope chain (callers.py); the compiled policy set of that chain
and the model asked for (cache.py: compiled once, dropped by the change feed), or the set it
carries for a circuit's probe when this call is it (circuits.py); the request id
claimed; the set's plan for this call (token demands, caps); the quota leases taken, all or
nothing (quota.py); the decision; its explanation, if sampled; the journal record
(reservations.py). Everything that depends only on the policies was worked out when the set
was compiled; what remains here is what varies per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from warden import metrics
from warden.cache import Cache
from warden.callers import Callers
from warden.circuits import Circuits
from warden.engine import AuthorizeInput, CompiledSet, Decision, Plan, Unpriced, decide
from warden.engine.audit import Explanation, Snapshot, expand, explanation, sampled, scrub
from warden.errors import WardenError, invalid
from warden.journal import Journal
from warden.keys import KeyRecord
from warden.quota import Quotas
from warden.reservations import Reservations

# Bound once: labels() looks the child up on every call, and every decision counts one.
_LOGGED, _SAMPLED_OUT, _JOURNAL_FULL = (metrics.DECISION_LOG.labels(outcome) for outcome in
                                        ("logged", "sampled_out", "journal_full"))


@dataclass(slots=True)
class Authorization:
    """A decided call: the decision, the plan and set it came from (for adapters that encode
    answers from what the set fixes), and its id (an allowed call's reservation id)."""

    compiled: CompiledSet
    plan: Plan
    decision: Decision
    decision_id: str

    @property
    def reservation_id(self) -> str:
        return self.decision_id if self.decision.allowed else ""


class Authorizer:
    def __init__(self, callers: Callers, cache: Cache, quotas: Quotas,
                 reservations: Reservations, journal: Journal, circuits: Circuits,
                 clock: Callable[[], datetime], key_pepper: bytes,
                 max_prompt_chars: int = 512 * 1024) -> None:
        self._callers = callers
        self._cache = cache
        self._quotas = quotas
        self._reservations = reservations
        self._journal = journal
        self._circuits = circuits
        self._clock = clock
        self._pepper = key_pepper
        self._decisions: dict[tuple[bool, str], Any] = {}
        self._max_prompt = max_prompt_chars

    async def authorize(self, caller: KeyRecord, request: AuthorizeInput) -> Authorization:
        size = request.prompt_chars
        if size > self._max_prompt:
            raise invalid([("messages", f"hold {size} characters of text; the limit is "
                                        f"{self._max_prompt} (WARDEN_MAX_PROMPT_CHARS)")])
        identity = await self._callers.identity(caller, request.user_id)
        compiled = await self._cache.compiled(identity, request.model, request.provider)
        probe = None  # the circuit whose one probe call this is
        if compiled.probe is not None:
            compiled, probe = self._circuits.route(compiled)
        claim = self._reservations.claim(identity.org_id, request.request_id)
        try:
            plan = compiled.plan(request)
            parts: list = []
            if plan.route is None or not plan.checks:
                decision = decide(plan, (), now=self._clock() if plan.retry_at else None)
            else:
                outcomes, got, parts = await self._quotas.take(
                    plan.checks, plan.route.max_output_tokens, plan.min_output_tokens,
                    self._clock())
                decision = decide(plan, outcomes, got.max_output)
        except BaseException as exc:
            self._reservations.release(claim)
            if probe is not None:
                self._circuits.unspent(probe)
            if isinstance(exc, Unpriced):
                raise WardenError(
                    "FAILED_PRECONDITION", "MODEL_NOT_PRICED",
                    f"budget {exc.policy_id!r} applies to model {exc.model!r} (provider "
                    f"{exc.provider!r}), which has no price: set one with Admin.SetModelPrice, "
                    "or give the budget default prices") from None
            raise
        if probe is not None and not decision.allowed:
            self._circuits.unspent(probe)
        decision_id = self._reservations.record(
            claim, compiled, plan, decision, parts,
            self._explanation(compiled, plan, decision, request))
        self._count(decision)
        return Authorization(compiled, plan, decision, decision_id)

    def _count(self, decision: Decision) -> None:
        key = (decision.allowed, decision.reason.value)
        counter = self._decisions.get(key)
        if counter is None:
            counter = self._decisions[key] = metrics.DECISIONS.labels(
                "allow" if decision.allowed else "deny", decision.reason.value)
        counter.inc()

    def _explanation(self, compiled: CompiledSet, plan: Plan, decision: Decision,
                     request: AuthorizeInput) -> Explanation | None:
        """The attributes of the "authorize.decision" event that explains a sampled decision,
        and the snapshot they refer to (None when they hold every field themselves: a setting
        that masks or hashes fields names them in the full form). They travel in the
        decision's journal record (which gives the event its id, time, user, model and
        provider when it is flushed), so they cost no fsync wait and no record of their own;
        they are left out (counted) when the journal is full, the decision never is."""
        setting = compiled.audit
        rate = setting.allow_sample_rate if decision.allowed else setting.deny_sample_rate
        if not sampled(rate, request.request_id):
            _SAMPLED_OUT.inc()
            return None
        if self._journal.full():
            _JOURNAL_FULL.inc()
            return None
        _LOGGED.inc()
        snapshot: Snapshot | None = compiled.snapshot(plan, decision)
        if not (setting.mask_fields or setting.hash_fields or setting.store_prompts):
            return Explanation(snapshot)  # nothing for scrub() to change
        attributes = explanation(decision, snapshot)
        if setting.mask_fields or setting.hash_fields:
            attributes, snapshot = expand(attributes, snapshot.body), None
        if setting.store_prompts:
            attributes["messages"] = [{"role": m.role, "content": m.content}
                                      for m in request.messages]
        return Explanation(snapshot, scrub(attributes, setting, self._pepper))
