"""Admin.Apply: validate the whole declaration, convert it, converge it through ApplyStore.

Everything that can be checked without the database is checked here, and every problem is
reported at once, so that one run of `warden apply` shows all that is wrong with a file. What
needs the database (API keys named by policies, ids taken by unowned orgs, deletions that would
orphan keys or logged requests) is checked by the store inside the apply transaction.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from warden.api.policies import check_policy, policy_row
from warden.api.validate import Violations
from warden.components import Components
from warden.store.base import Declared
from warden.v1 import admin_pb2, types_pb2

log = logging.getLogger("warden.api")

_ACTIONS = {"create": admin_pb2.CHANGE_ACTION_CREATE, "update": admin_pb2.CHANGE_ACTION_UPDATE,
            "delete": admin_pb2.CHANGE_ACTION_DELETE}

# Which declared collection a policy scope must name, by scope kind. API keys are not declared
# (they hold secrets), so a key scope is checked against the database by the store.
_SCOPE_COLLECTIONS = {types_pb2.SCOPE_KIND_ORG: "orgs", types_pb2.SCOPE_KIND_TEAM: "teams",
                      types_pb2.SCOPE_KIND_APP: "apps", types_pb2.SCOPE_KIND_USER: "users"}


def _unique_ids(v: Violations, items: Sequence[Any], kind: str,
                check_ids: bool = True) -> dict[str, Any]:
    """Check each item's id; return the items by id (the first one wins a duplicate)."""
    by_id: dict[str, Any] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if check_ids:
            v.id(item.id, f"{kind}[{i}].id")
        if item.id in first:
            v.check(False, f"{kind}[{i}].id",
                    f"{item.id!r} is declared twice (also {kind}[{first[item.id]}])")
        elif item.id:
            first[item.id] = i
            by_id[item.id] = item
    return by_id


def _owned_org(v: Violations, org_id: str, at: str, orgs: dict[str, Any]) -> bool:
    if not v.check(bool(org_id), at, "is required"):
        return False
    return v.check(org_id in orgs, at, f"must name an org declared in orgs (got "
                   f"{org_id[:80]!r}); an apply only changes the orgs it declares")


def _same_org_team(v: Violations, team_id: str, org_id: str | None, at: str,
                   teams: dict[str, Any]) -> None:
    """`org_id` is None when the owner's own org is already reported as wrong."""
    team = teams.get(team_id)
    if team is None:
        v.check(False, at, f"must name a team declared in teams (got {team_id[:80]!r})")
    elif org_id is not None:
        v.check(team.org_id == org_id, at,
                f"team {team_id!r} belongs to org {team.org_id!r}, not {org_id!r}")


def _check_orgs(v: Violations, request: admin_pb2.ApplyRequest) -> dict[str, Any]:
    v.check(len(request.orgs) > 0, "orgs",
            "must declare at least one org: an apply owns exactly the orgs it declares")
    orgs = _unique_ids(v, request.orgs, "orgs")
    for i, org in enumerate(request.orgs):
        v.org_settings(org, f"orgs[{i}]")
    return orgs


def _check_directory(v: Violations, request: admin_pb2.ApplyRequest,
                     orgs: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    teams = _unique_ids(v, request.teams, "teams")
    for i, team in enumerate(request.teams):
        _owned_org(v, team.org_id, f"teams[{i}].org_id", orgs)
        v.text(team.display_name, f"teams[{i}].display_name")
    apps = _unique_ids(v, request.apps, "apps")
    named: dict[str, str] = {}  # principal -> the app declaring it first
    for i, app in enumerate(request.apps):
        owned = _owned_org(v, app.org_id, f"apps[{i}].org_id", orgs)
        v.text(app.display_name, f"apps[{i}].display_name")
        if app.team_id:
            _same_org_team(v, app.team_id, app.org_id if owned else None,
                           f"apps[{i}].team_id", teams)
        v.principals(app.principals, f"apps[{i}].principals")
        for j, principal in enumerate(app.principals):
            v.check(named.setdefault(principal, app.id) == app.id, f"apps[{i}].principals[{j}]",
                    f"{principal[:80]!r} already names app {named[principal]!r} in this request")
    users = _unique_ids(v, request.users, "users")
    for i, user in enumerate(request.users):
        owned = _owned_org(v, user.org_id, f"users[{i}].org_id", orgs)
        v.text(user.display_name, f"users[{i}].display_name")
        seen: set[str] = set()
        for j, team_id in enumerate(user.team_ids):
            at = f"users[{i}].team_ids[{j}]"
            if v.check(team_id not in seen, at, f"{team_id!r} is listed twice"):
                _same_org_team(v, team_id, user.org_id if owned else None, at, teams)
            seen.add(team_id)
    return teams, apps, users


def _check_policies(v: Violations, request: admin_pb2.ApplyRequest,
                    declared: dict[str, dict[str, Any]]) -> None:
    _unique_ids(v, request.policies, "policies", check_ids=False)  # check_policy does
    for i, policy in enumerate(request.policies):
        at = f"policies[{i}]"
        before = len(v.items)
        check_policy(v, policy, at=at, require_id=True)
        collection = _SCOPE_COLLECTIONS.get(policy.scope.kind)
        scope_ok = not any(f.startswith(f"{at}.scope.") for f, _ in v.items[before:])
        if collection and scope_ok:
            v.check(policy.scope.id in declared[collection], f"{at}.scope.id",
                    f"must name one of the {collection} declared in this request "
                    f"(got {policy.scope.id!r})")


def _declared(request: admin_pb2.ApplyRequest) -> Declared:
    return Declared(
        orgs=[{"id": o.id, "display_name": o.display_name, "time_zone": o.time_zone or "UTC",
               "currency": o.currency or "USD"} for o in request.orgs],
        teams=[{"id": t.id, "org_id": t.org_id, "display_name": t.display_name}
               for t in request.teams],
        apps=[{"id": a.id, "org_id": a.org_id, "team_id": a.team_id or None,
               "display_name": a.display_name, "principals": sorted(a.principals)}
              for a in request.apps],
        users=[{"id": u.id, "org_id": u.org_id, "display_name": u.display_name,
                "team_ids": sorted(u.team_ids)} for u in request.users],
        policies=[{"id": p.id, **policy_row(p)} for p in request.policies],
    )


async def handle_apply(components: Components, request: admin_pb2.ApplyRequest
                       ) -> admin_pb2.ApplyResponse:
    v = Violations()
    orgs = _check_orgs(v, request)
    teams, apps, users = _check_directory(v, request, orgs)
    _check_policies(v, request, {"orgs": orgs, "teams": teams, "apps": apps, "users": users})
    v.done()
    changes = await components.stores.apply.apply(_declared(request), request.dry_run)
    # Admin changes leave no other trace, so the log keeps which orgs were converged and how.
    log.info("apply", extra={"orgs": [o.id for o in request.orgs], "dry_run": request.dry_run,
                             **Counter(c.action for c in changes)})
    return admin_pb2.ApplyResponse(
        changes=[admin_pb2.Change(kind=c.kind, id=c.id, action=_ACTIONS[c.action],
                                  fields=c.fields) for c in changes],
        applied=not request.dry_run)
