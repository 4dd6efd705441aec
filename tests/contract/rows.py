"""Rows as the API layer hands them to the stores (api/admin_service.py, api/apply.py), and a
small directory most suites start from."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

import pytest

from warden.errors import WardenError
from warden.store.base import DirectoryStore


def org(org_id: str, *, display_name: str = "", time_zone: str = "UTC",
        currency: str = "USD") -> dict[str, Any]:
    return {"id": org_id, "display_name": display_name, "time_zone": time_zone,
            "currency": currency}


def team(team_id: str, org_id: str, *, display_name: str = "") -> dict[str, Any]:
    return {"id": team_id, "org_id": org_id, "display_name": display_name}


def app(app_id: str, org_id: str, *, team_id: str | None = None, display_name: str = "",
        principals: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": app_id, "org_id": org_id, "team_id": team_id, "display_name": display_name,
            "principals": sorted(principals)}


def user(user_id: str, org_id: str, team_ids: tuple[str, ...] = (), *,
         display_name: str = "") -> dict[str, Any]:
    return {"id": user_id, "org_id": org_id, "display_name": display_name,
            "team_ids": list(team_ids)}


def api_key(key_id: str, app_id: str, *, user_id: str | None = None, prefix: str | None = None,
            allowed_models: tuple[str, ...] = (), expire_time: datetime | None = None,
            display_name: str = "") -> dict[str, Any]:
    return {"id": key_id, "app_id": app_id, "user_id": user_id, "display_name": display_name,
            "prefix": prefix or f"p-{key_id}", "hash": hashlib.sha256(key_id.encode()).digest(),
            "allowed_models": list(allowed_models), "expire_time": expire_time}


def new_key(key_id: str) -> dict[str, Any]:
    """What RotateApiKey passes for the replacement: id, prefix and hash only."""
    return {"id": key_id, "prefix": f"p-{key_id}",
            "hash": hashlib.sha256(key_id.encode()).digest()}


def rate_limit(policy_id: str, kind: str, scope_id: str, limit: int = 10, *, name: str = "",
               mode: str = "enforce", priority: int = 0, locked: bool = False,
               window: str = "WINDOW_MINUTE", failure_mode: str = "fail_open") -> dict[str, Any]:
    return {"id": policy_id, "scope_kind": kind, "scope_id": scope_id, "name": name,
            "policy_type": "rate_limit", "mode": mode, "priority": priority, "locked": locked,
            "failure_mode": failure_mode,
            "config": {"metric": "METRIC_REQUESTS", "window": window, "limit": str(limit)}}


def budget(policy_id: str, kind: str, scope_id: str, limit_micros: int, *,
           period: str = "PERIOD_MONTH", models: tuple[str, ...] = ()) -> dict[str, Any]:
    config: dict[str, Any] = {"period": period, "limit_micros": str(limit_micros)}
    if models:
        config["selector"] = {"models": list(models)}
    return {"id": policy_id, "scope_kind": kind, "scope_id": scope_id, "name": "",
            "policy_type": "budget", "mode": "enforce", "priority": 0, "locked": False,
            "failure_mode": "fail_closed", "config": config}


def model_access(policy_id: str, kind: str, scope_id: str,
                 allow_models: tuple[str, ...] = ("gpt-*",)) -> dict[str, Any]:
    return {"id": policy_id, "scope_kind": kind, "scope_id": scope_id, "name": "",
            "policy_type": "model_access", "mode": "enforce", "priority": 0, "locked": False,
            "failure_mode": "fail_closed", "config": {"allow_models": list(allow_models)}}


def price(provider: str, model: str, input_micros: int, output_micros: int,
          cached_input_micros: int) -> dict[str, Any]:
    return {"provider": provider, "model": model, "input_micros_per_million": input_micros,
            "output_micros_per_million": output_micros,
            "cached_input_micros_per_million": cached_input_micros}


def switch(provider: str, model: str = "", org_id: str = "", *, enabled: bool = False,
           reason: str = "") -> dict[str, Any]:
    return {"provider": provider, "model": model, "org_id": org_id, "enabled": enabled,
            "reason": reason or ("" if enabled else "switched off")}


async def directory(store: DirectoryStore) -> None:
    """Two orgs. acme: teams eng and ops; app chat (team eng) and app batch (no team); user ann
    (in eng and ops) and user bob (in none). globex: team g-eng, app g-app, user gus (g-eng)."""
    for o in ("acme", "globex"):
        await store.create_org(org(o))
    for t, o in (("eng", "acme"), ("ops", "acme"), ("g-eng", "globex")):
        await store.create_team(team(t, o))
    await store.create_app(app("chat", "acme", team_id="eng"))
    await store.create_app(app("batch", "acme"))
    await store.create_app(app("g-app", "globex", team_id="g-eng"))
    await store.create_user(user("ann", "acme", ("ops", "eng")))
    await store.create_user(user("bob", "acme"))
    await store.create_user(user("gus", "globex", ("g-eng",)))


async def refused(call: Awaitable[Any], code: str) -> WardenError:
    """The WardenError the call raises, which must carry `code`."""
    with pytest.raises(WardenError) as raised:
        await call
    assert raised.value.code == code, raised.value
    return raised.value
