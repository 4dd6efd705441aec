"""The in-process cache Authorize decides from: key lookups, users' teams, apps (for explicit
subjects), policies per scope, provider switches, prices, circuits, and the compiled policy sets
made from them (engine/compiled.py), read through a LookupStore and kept fresh by a ChangeFeed.

Every change to a cached table is broadcast by the database (store/base.py ChangeFeed); the
payload names the row, and exactly the entries that row feeds are dropped. The TTL is only a
safety net for a broadcast that never came. After the feed reconnects everything is dropped,
since notifications sent while it was away are lost.

A lookup that raced with an invalidation (the row changed while it was being read) is answered
but not cached: each invalidation bumps a generation, and a load only stores its result if the
generation did not move meanwhile.

While the database is unreachable (so nothing can change in it, as far as this sidecar can
tell), a lookup it fails is answered from the last value read, if any: stale-if-error, so that
quotas can fail open. Invalidations drop those values too, and a feed that reconnects drops
them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from cachetools import LRUCache

from warden import metrics
from warden.engine import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    Circuit,
    CompiledSet,
    Identity,
    PolicyRecord,
    ProviderSwitch,
    compile_set,
)
from warden.engine.pricing import Price
from warden.errors import StoreUnavailable
from warden.expiring import ExpiringDict
from warden.keys import KeyRecord
from warden.store.base import LookupStore

Scope = tuple[str, str]
_MISSING = object()


class _Entries:
    """One named expiring cache with its metrics and its last-known values."""

    def __init__(self, name: str, maxsize: int, ttl: float) -> None:
        self.name = name
        self.data = ExpiringDict(maxsize, ttl)
        # The last value read per key, served only while the database is unreachable.
        self.last: LRUCache = LRUCache(maxsize=maxsize)
        self.hits = metrics.CACHE_HITS.labels(name)
        self.misses = metrics.CACHE_MISSES.labels(name)
        metrics.CACHE_ENTRIES.labels(name).set_function(lambda: len(self.data))

    def get(self, key: Hashable) -> Any:
        value = self.data.get(key, _MISSING)
        (self.misses if value is _MISSING else self.hits).inc()
        return value

    def drop(self, keys: Sequence[Hashable], how: str) -> None:
        for key in keys:
            self.last.pop(key, None)
            if self.data.pop(key, _MISSING) is not _MISSING:
                metrics.CACHE_INVALIDATIONS.labels(self.name, how).inc()

    def stale(self, key: Hashable, exc: BaseException) -> Any:
        """The last value of `key` if the database is away; else re-raise."""
        value = self.last.get(key, _MISSING)
        if value is _MISSING or not isinstance(exc, StoreUnavailable):
            raise exc
        metrics.CACHE_STALE_SERVES.labels(self.name).inc()
        return value


class Cache:
    def __init__(self, store: LookupStore, maxsize: int, ttl: float,
                 default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS) -> None:
        self._store = store
        self._default_max_output = default_max_output
        self._keys = _Entries("api_keys", maxsize, ttl)
        self._users = _Entries("users", maxsize, ttl)
        self._apps = _Entries("apps", maxsize, ttl)
        self._principals = _Entries("app_principals", maxsize, ttl)
        self._policies = _Entries("policies", maxsize, ttl)
        self._switches = _Entries("provider_switches", 1, ttl)
        self._prices = _Entries("model_prices", 1, ttl)
        self._circuits = _Entries("circuits", 1, ttl)
        # By (identity, model asked for, provider asked for). Not kept while the database is
        # away: a set is compiled again from the last values read, as each call needs it.
        self._compiled = _Entries("compiled_sets", maxsize, ttl)
        self._all = (self._keys, self._users, self._apps, self._principals, self._policies,
                     self._switches, self._prices, self._circuits, self._compiled)
        self._generation = 0
        self._live = False

    def set_live(self, live: bool) -> None:
        """The change feed is listening (True) or not (False); either way, start clean (but
        keep the last values while it is away: the database may be away too)."""
        self.invalidate_all(keep_last=not live)
        self._live = live

    def _get(self, entries: _Entries, key: Hashable) -> Any:
        if not self._live:
            entries.misses.inc()
            return _MISSING
        return entries.get(key)

    async def _load(self, entries: _Entries, key: Hashable,
                    load: Callable[[], Awaitable[Any]]) -> Any:
        value = self._get(entries, key)
        if value is _MISSING:
            generation = self._generation
            try:
                value = await load()
            except Exception as exc:  # noqa: BLE001 - stale() re-raises what it cannot serve
                return entries.stale(key, exc)
            if generation == self._generation:
                entries.last[key] = value
                if self._live:
                    entries.data[key] = value
        return value

    async def api_key(self, prefix: str) -> KeyRecord | None:
        found = self._get(self._keys, prefix)  # every call's: no coroutine when cached
        if found is not _MISSING:
            return found
        return await self._load(self._keys, prefix, lambda: self._store.find_api_key(prefix))

    async def app(self, app_id: str) -> tuple[str, str] | None:
        """(org id, team id or "") of an app, for explicit subjects."""
        return await self._load(self._apps, app_id, lambda: self._store.find_app(app_id))

    async def principal(self, principal: str) -> str | None:
        """The id of the app a mesh workload identity names, or None."""
        return await self._load(self._principals, principal,
                                lambda: self._store.find_principal(principal))

    async def user_teams(self, org_id: str, user_id: str) -> tuple[str, ...] | None:
        """The teams of a user of the org, or None when the org has no such user."""
        return await self._load(self._users, (org_id, user_id),
                                lambda: self._store.user_teams(org_id, user_id))

    async def provider_switches(self) -> tuple[ProviderSwitch, ...]:
        return await self._load(self._switches, "all", self._store.provider_switches)

    async def circuits(self) -> tuple[Circuit, ...]:
        """The circuits routing goes past (open, half-open, forced open)."""
        return await self._load(self._circuits, "all", self._store.circuits)

    async def prices(self) -> dict[tuple[str, str], Price]:
        """Every model price by (provider, model)."""
        return await self._load(self._prices, "all", self._store.prices)

    async def policies(self, scopes: Sequence[Scope], fresh: bool = False
                       ) -> list[PolicyRecord]:
        """Every policy attached to any of the scopes; the missing scopes (with `fresh`, all
        of them: one read, so one version of them all) are read at once."""
        found: dict[Scope, tuple[PolicyRecord, ...]] = {}
        missing = []
        for scope in scopes:
            value = _MISSING if fresh else self._get(self._policies, scope)
            if value is _MISSING:
                missing.append(scope)
            else:
                found[scope] = value
        if missing:
            generation = self._generation
            try:
                loaded = await self._store.policies_for(missing)
            except Exception as exc:  # noqa: BLE001 - stale() re-raises what it cannot serve
                loaded = {scope: self._policies.stale(scope, exc) for scope in missing}
            else:
                if generation == self._generation:
                    self._policies.last.update(loaded)
                    if self._live:
                        self._policies.data.update(loaded)
            found.update(loaded)
        return [p for scope in scopes for p in found[scope]]

    async def compiled(self, identity: Identity, model: str, provider: str) -> CompiledSet:
        """The compiled policy set of a scope chain and the model and provider asked for. Its
        policies are read in one statement, whatever the cache holds of them: a change that
        spans several scopes (an Apply) whose notifications are still arriving can never give
        a set mixing old and new policies."""
        key = (identity, model, provider)
        found = self._get(self._compiled, key)
        if found is not _MISSING:
            return found
        generation = self._generation
        compiled = compile_set(identity, model, provider,
                               await self.policies(identity.scopes(), fresh=True),
                               await self.provider_switches(), await self.prices(),
                               self._default_max_output, await self.circuits())
        if generation == self._generation and self._live:
            self._compiled.data[key] = compiled
        return compiled

    def invalidate(self, table: str, row_id: str) -> None:
        """Drop what one changed row feeds (a ChangeFeed payload)."""
        self._generation += 1
        if table == "policies":
            kind, _, scope_id = row_id.partition(":")
            scope = (kind, scope_id)
            self._policies.drop([scope], "exact")
            # A policy change is rare: looking through every set costs less than an index.
            self._compiled.drop([k for k in self._compiled.data if scope in k[0].scopes()],
                                "exact")
        elif table == "api_keys":
            self._keys.drop([row_id], "exact")
        elif table == "apps":
            self._apps.drop([row_id], "exact")
            self._keys.drop([p for p, r in self._keys.data.items()
                             if r is not None and r.app_id == row_id], "exact")
        elif table == "app_principals":
            self._principals.drop([row_id], "exact")
        elif table in ("users", "user_teams"):
            self._users.drop([k for k in self._users.data if k[1] == row_id], "exact")
            self._keys.drop([p for p, r in self._keys.data.items()
                             if r is not None and r.user_id == row_id], "exact")
        elif table == "provider_switches":
            self._switches.drop(["all"], "exact")
            self._compiled.drop(list(self._compiled.data), "exact")
        elif table == "model_prices":
            self._prices.drop(["all"], "exact")
            self._compiled.drop(list(self._compiled.data), "exact")
        elif table == "circuits":
            self._circuits.drop(["all"], "exact")
            self._compiled.drop(list(self._compiled.data), "exact")
        else:
            self.invalidate_all()

    def invalidate_all(self, how: str = "full", keep_last: bool = False) -> None:
        self._generation += 1
        for entries in self._all:
            metrics.CACHE_INVALIDATIONS.labels(entries.name, how).inc(len(entries.data))
            entries.data.clear()
            if not keep_last:
                entries.last.clear()
