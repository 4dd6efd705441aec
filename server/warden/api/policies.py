"""Policy checks and the policy's row form, shared by CreatePolicy, UpdatePolicy and Apply.

A policy is refused with every problem named (INVALID_ARGUMENT, one violation per field) before
anything is stored.
"""

from __future__ import annotations

from typing import Any

from warden.api import convert
from warden.api.validate import MAX_TEXT, MAX_TOKENS, Violations
from warden.guardrails import pii
from warden.v1 import types_pb2

MAX_LIST = 1000
MAX_ROUTE_TARGETS = 10
MAX_PRIORITY = 1_000_000
MAX_LIMIT = 10**12
MAX_MICROS = 10**15
MAX_PATTERNS = 32
MAX_PATTERN = 1000
SETTING_TYPES = ("model_access", "routing", "pii", "prompt_injection", "rag_sources", "audit")
QUOTA_TYPES = ("rate_limit", "budget")


def _names(v: Violations, values, at: str, required: bool = False) -> None:
    """A list of model, provider or source names (a '*' in a name matches any characters)."""
    v.check(len(values) <= MAX_LIST, at, f"must hold at most {MAX_LIST} entries")
    if required:
        v.check(len(values) > 0, at, "must name at least one entry")
    seen = set()
    for i, value in enumerate(values):
        v.check(0 < len(value) <= MAX_TEXT, f"{at}[{i}]",
                f"must be 1-{MAX_TEXT} characters")
        v.check(value not in seen, f"{at}[{i}]", f"{value!r} is listed twice")
        seen.add(value)


def _selector(v: Violations, selector: types_pb2.Selector, at: str) -> None:
    _names(v, selector.models, f"{at}.models")
    _names(v, selector.providers, f"{at}.providers")


def _action(v: Violations, action: int, at: str, allowed: tuple[int, ...]) -> None:
    names = " or ".join(types_pb2.GuardrailAction.Name(a) for a in allowed)
    v.check(action in allowed, at, f"must be {names}")


_ALL_ACTIONS = (types_pb2.GUARDRAIL_ACTION_LOG, types_pb2.GUARDRAIL_ACTION_REDACT,
                types_pb2.GUARDRAIL_ACTION_BLOCK)
_NO_REDACT = (types_pb2.GUARDRAIL_ACTION_LOG, types_pb2.GUARDRAIL_ACTION_BLOCK)


def _check_config(v: Violations, policy: types_pb2.Policy, kind: str, at: str) -> None:
    if kind == "rate_limit":
        c = policy.rate_limit
        v.check(c.metric in (types_pb2.METRIC_REQUESTS, types_pb2.METRIC_INPUT_TOKENS,
                             types_pb2.METRIC_OUTPUT_TOKENS, types_pb2.METRIC_TOTAL_TOKENS),
                f"{at}.metric", "must be METRIC_REQUESTS or a token metric (budgets count money)")
        v.check(c.window != types_pb2.WINDOW_UNSPECIFIED, f"{at}.window", "is required")
        v.check(0 < c.limit <= MAX_LIMIT, f"{at}.limit", f"must be between 1 and {MAX_LIMIT}")
        _selector(v, c.selector, f"{at}.selector")
    elif kind == "budget":
        c = policy.budget
        v.check(c.period != types_pb2.PERIOD_UNSPECIFIED, f"{at}.period", "is required")
        v.check(0 < c.limit_micros <= MAX_MICROS, f"{at}.limit_micros",
                f"must be between 1 and {MAX_MICROS}")
        v.check(0 <= c.max_request_cost_micros <= c.limit_micros or c.limit_micros <= 0,
                f"{at}.max_request_cost_micros", "must be between 0 and limit_micros")
        v.check(0 <= c.alert_threshold_percent <= 100, f"{at}.alert_threshold_percent",
                "must be between 0 and 100")
        for name in ("default_input_micros_per_million", "default_output_micros_per_million"):
            v.check(0 <= getattr(c, name) <= MAX_MICROS, f"{at}.{name}",
                    f"must be between 0 and {MAX_MICROS}")
        _selector(v, c.selector, f"{at}.selector")
    elif kind == "model_access":
        c = policy.model_access
        for name in ("allow_models", "deny_models", "allow_providers", "deny_providers"):
            _names(v, getattr(c, name), f"{at}.{name}")
        for both in set(c.allow_models) & set(c.deny_models):
            v.check(False, f"{at}.deny_models", f"{both!r} is also in allow_models")
        for both in set(c.allow_providers) & set(c.deny_providers):
            v.check(False, f"{at}.deny_providers", f"{both!r} is also in allow_providers")
        v.check(len(c.aliases) <= MAX_LIST, f"{at}.aliases", f"at most {MAX_LIST} aliases")
        for alias, model in sorted(c.aliases.items()):
            v.check(0 < len(alias) <= MAX_TEXT and 0 < len(model) <= MAX_TEXT,
                    f"{at}.aliases[{alias!r}]", f"alias and model must be 1-{MAX_TEXT} characters")
            v.check(model not in c.aliases, f"{at}.aliases[{alias!r}]",
                    f"points at {model!r}, which is itself an alias (aliases resolve one step; "
                    "a chain or cycle is refused)")
        v.check(any((c.allow_models, c.deny_models, c.allow_providers, c.deny_providers,
                     c.aliases)), at, "must set at least one list or alias")
    elif kind == "routing":
        c = policy.routing
        v.check(len(c.rules) <= MAX_LIST, f"{at}.rules", f"at most {MAX_LIST} rules")
        aliases = set()
        for i, rule in enumerate(c.rules):
            r = f"{at}.rules[{i}]"
            v.check(0 < len(rule.alias) <= MAX_TEXT, f"{r}.alias",
                    f"must be 1-{MAX_TEXT} characters")
            v.check(rule.alias not in aliases, f"{r}.alias", f"{rule.alias!r} has another rule")
            aliases.add(rule.alias)
            v.check(0 < len(rule.targets) <= MAX_ROUTE_TARGETS, f"{r}.targets",
                    f"must hold 1 to {MAX_ROUTE_TARGETS} targets")
            for j, target in enumerate(rule.targets):
                for name in ("provider", "model"):
                    v.check(0 < len(getattr(target, name)) <= MAX_TEXT,
                            f"{r}.targets[{j}].{name}", f"must be 1-{MAX_TEXT} characters")
        v.check(0 <= c.max_tokens_cap <= MAX_TOKENS, f"{at}.max_tokens_cap",
                f"must be between 0 and {MAX_TOKENS}")
        v.check(bool(c.rules) or c.max_tokens_cap > 0, at,
                "must set at least one rule or max_tokens_cap")
    elif kind == "pii":
        c = policy.pii
        _action(v, c.action, f"{at}.action", _ALL_ACTIONS)
        _names(v, c.entities, f"{at}.entities")
        for i, entity in enumerate(c.entities):
            v.check(entity in pii.KINDS, f"{at}.entities[{i}]",
                    f"must be one of {', '.join(pii.KINDS)}")
        for entity, action in c.entity_actions.items():
            if v.check(entity in (c.entities or pii.KINDS), f"{at}.entity_actions",
                       f"{entity[:80]!r} is not a kind this policy checks"):
                _action(v, action, f"{at}.entity_actions[{entity}]", _ALL_ACTIONS)
        v.check(len(c.patterns) <= MAX_PATTERNS, f"{at}.patterns",
                f"must hold at most {MAX_PATTERNS} patterns")
        names = set(pii.KINDS)
        for i, rule in enumerate(c.patterns):
            p = f"{at}.patterns[{i}]"
            v.id(rule.name, f"{p}.name")
            v.check(rule.name not in names, f"{p}.name",
                    f"{rule.name[:80]!r} is a built-in kind or another pattern's name")
            names.add(rule.name)
            v.check(len(rule.pattern) <= MAX_PATTERN, f"{p}.pattern",
                    f"must be at most {MAX_PATTERN} characters")
            try:
                pii.compile_custom(rule.name, rule.pattern)
            except ValueError as exc:
                v.check(False, f"{p}.pattern", str(exc))
            if rule.action:
                _action(v, rule.action, f"{p}.action", _ALL_ACTIONS)
    elif kind == "prompt_injection":
        c = policy.prompt_injection
        _action(v, c.action, f"{at}.action", _NO_REDACT)
        v.check(0 < c.threshold <= 1, f"{at}.threshold", "must be in (0, 1]")
        _names(v, c.roles, f"{at}.roles")
    elif kind == "rag_sources":
        c = policy.rag_sources
        _action(v, c.action, f"{at}.action", _NO_REDACT)
        _names(v, c.allowed_sources, f"{at}.allowed_sources")
        _names(v, c.denied_sources, f"{at}.denied_sources")
        v.check(bool(c.allowed_sources or c.denied_sources), at,
                "must list allowed_sources or denied_sources")
    elif kind == "audit":
        _check_audit(v, policy, at)


_AUDIT_SCOPES = (types_pb2.SCOPE_KIND_ORG, types_pb2.SCOPE_KIND_TEAM, types_pb2.SCOPE_KIND_APP)


def _check_audit(v: Violations, policy: types_pb2.Policy, at: str) -> None:
    c = policy.audit
    # Audit events are written for an app's key; a user's or a key's setting would split them.
    v.check(policy.scope.kind in _AUDIT_SCOPES or not policy.scope.kind,
            at.rsplit(".", 1)[0] + ".scope.kind", "an audit setting applies to an org, team or app")
    for name in ("allow_sample_rate", "deny_sample_rate"):
        rate = getattr(c, name)
        v.check(not c.HasField(name) or 0 <= rate <= 1, f"{at}.{name}",
                "must be between 0 and 1")
    seen: set[str] = set()
    for name in ("mask_fields", "hash_fields"):
        paths = getattr(c, name)
        v.check(len(paths) <= MAX_LIST, f"{at}.{name}", f"must hold at most {MAX_LIST} paths")
        for i, path in enumerate(paths):
            v.check(0 < len(path) <= MAX_TEXT and all(path.split(".")), f"{at}.{name}[{i}]",
                    "must be a dotted attribute path such as 'user.email'")
            v.check(path not in seen, f"{at}.{name}[{i}]",
                    f"{path!r} is listed twice (in mask_fields or hash_fields)")
            seen.add(path)


def check_policy(v: Violations, policy: types_pb2.Policy, at: str = "policy",
                 require_id: bool = False) -> None:
    """Add every problem of `policy` to `v` (field paths under `at`)."""
    v.id(policy.id, f"{at}.id", required=require_id)
    v.text(policy.name, f"{at}.name")
    if v.check(policy.scope.kind in convert.SCOPE_NAMES, f"{at}.scope.kind", "is required"):
        v.id(policy.scope.id, f"{at}.scope.id")
    v.check(0 <= policy.priority <= MAX_PRIORITY, f"{at}.priority",
            f"must be between 0 and {MAX_PRIORITY}")
    v.check(policy.mode in (types_pb2.POLICY_MODE_UNSPECIFIED, types_pb2.POLICY_MODE_ENFORCE,
                            types_pb2.POLICY_MODE_DRY_RUN), f"{at}.mode", "unknown mode")
    v.check(policy.failure_mode in types_pb2.FailureMode.values(), f"{at}.failure_mode",
            "unknown failure mode")
    kind = policy.WhichOneof("config")
    if v.check(kind is not None, f"{at}.config", "one of the config fields is required"):
        _check_config(v, policy, kind, f"{at}.{kind}")
        v.check(not policy.locked or kind in SETTING_TYPES, f"{at}.locked",
                f"only setting policies ({', '.join(SETTING_TYPES)}) can be locked; quota "
                "policies already bind every child scope")


def validate_policy(policy: types_pb2.Policy, require_id: bool = False) -> None:
    v = Violations()
    check_policy(v, policy, require_id=require_id)
    v.done()


def failure_mode(policy: types_pb2.Policy) -> str:
    """The stored failure mode: as given, else fail_open for rate limits and fail_closed for
    everything else (budgets never overspend by default)."""
    if policy.failure_mode == types_pb2.FAILURE_MODE_UNSPECIFIED:
        return "fail_open" if policy.WhichOneof("config") == "rate_limit" else "fail_closed"
    return "fail_open" if policy.failure_mode == types_pb2.FAILURE_MODE_FAIL_OPEN \
        else "fail_closed"


def policy_row(policy: types_pb2.Policy) -> dict[str, Any]:
    """The stored form of a validated policy (without its id)."""
    kind, config = convert.policy_config_json(policy)
    return {
        "scope_kind": convert.SCOPE_NAMES[policy.scope.kind], "scope_id": policy.scope.id,
        "name": policy.name, "policy_type": kind,
        "mode": "dry_run" if policy.mode == types_pb2.POLICY_MODE_DRY_RUN else "enforce",
        "priority": policy.priority, "locked": policy.locked,
        "failure_mode": failure_mode(policy), "config": config,
    }
