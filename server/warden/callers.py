"""Who calls, and on whose behalf: an API key's record, or a trusted subject's; and the scope
chain of a call. The entry points (the gRPC API, the Envoy adapters) decide whether a caller may
name a subject; this module only resolves what they were given."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from warden.cache import Cache
from warden.engine import Identity
from warden.errors import WardenError, not_found
from warden.keys import KeyRecord, authenticate, key_prefix


class Callers:
    def __init__(self, cache: Cache, key_pepper: bytes, clock: Callable[[], datetime]) -> None:
        self._cache = cache
        self._pepper = key_pepper
        self._clock = clock

    async def by_key(self, api_key: str) -> KeyRecord:
        """The record of a live API key; UNAUTHENTICATED otherwise."""
        prefix = key_prefix(api_key)
        record = await self._cache.api_key(prefix) if prefix else None
        return authenticate(record, api_key, self._pepper, self._clock)

    async def by_subject(self, org_id: str, app_id: str) -> KeyRecord:
        """A keyless record for an app of the org, named by a caller trusted to do so."""
        app = await self._cache.app(app_id)
        if app is None or app[0] != org_id:
            raise not_found(f"app {app_id!r} of org {org_id!r}")
        return _keyless(org_id, app_id, app[1])

    async def by_principal(self, principal: str) -> KeyRecord:
        """A keyless record for the app a mesh workload identity names; UNAUTHENTICATED when
        no app is registered with it."""
        app_id = await self._cache.principal(principal)
        app = await self._cache.app(app_id) if app_id else None
        if app is None:
            raise WardenError(
                "UNAUTHENTICATED", "PRINCIPAL_UNKNOWN",
                f"no app is registered with the workload identity {principal[:200]!r}: add it "
                "to the app's principals (Admin CreateApp or Apply), or send a Warden API key")
        return _keyless(app[0], app_id, app[1])

    async def identity(self, key: KeyRecord, user_id: str) -> Identity:
        """The scope chain of a call: the key's user, or else the end user the app names. An
        end user the org does not know is logged but has no user scope (and no teams)."""
        if key.user_id:
            if user_id and user_id != key.user_id:
                raise WardenError(
                    "PERMISSION_DENIED", "PERMISSION_DENIED",
                    f"API key {key.id} belongs to user {key.user_id!r} and cannot act for "
                    f"user {user_id!r}", [("user_id", "must be empty or the key's own user")])
            return key.identity
        if not user_id:
            return key.identity
        teams = key.team_ids
        user_teams = await self._cache.user_teams(key.org_id, user_id)
        if user_teams is None:
            user_id = ""
        else:
            teams = tuple(sorted(set(teams) | set(user_teams)))
        return Identity(key.org_id, key.app_id, key.id, user_id, teams, key.allowed_models)


def _keyless(org_id: str, app_id: str, team_id: str) -> KeyRecord:
    return KeyRecord(id="", org_id=org_id, app_id=app_id, user_id="",
                     team_ids=(team_id,) if team_id else (), hash=b"", allowed_models=(),
                     expire_time=None, revoke_time=None)
