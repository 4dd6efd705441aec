"""The cache's one subtle rule, without a database: a lookup that raced with an invalidation is
answered but not cached, so an entry read before a change can never outlive the change's
notification. (The cache against Postgres: tests/integration/test_cache.py.)"""

import asyncio

from warden.cache import Cache


class SlowStore:
    """A LookupStore whose reads can be held open while a change lands."""

    def __init__(self) -> None:
        self.teams = ("old",)
        self.release = asyncio.Event()
        self.reads = 0

    async def user_teams(self, org_id: str, user_id: str) -> tuple[str, ...] | None:
        self.reads += 1
        seen = self.teams
        await self.release.wait()
        return seen


async def test_a_read_that_raced_an_invalidation_is_not_cached() -> None:
    store = SlowStore()
    cache = Cache(store, maxsize=10, ttl=60)
    cache.set_live(True)
    racing = asyncio.create_task(cache.user_teams("acme", "alice"))
    await asyncio.sleep(0)
    store.teams = ("new",)
    cache.invalidate("user_teams", "alice")
    store.release.set()
    assert await racing == ("old",)
    assert await cache.user_teams("acme", "alice") == ("new",)
    assert store.reads == 2


async def test_an_undisturbed_read_is_cached_and_dropped_by_its_notification() -> None:
    store = SlowStore()
    store.release.set()
    cache = Cache(store, maxsize=10, ttl=60)
    cache.set_live(True)
    assert await cache.user_teams("acme", "alice") == ("old",)
    assert await cache.user_teams("acme", "alice") == ("old",)
    assert store.reads == 1
    cache.invalidate("users", "bob")
    await cache.user_teams("acme", "alice")
    assert store.reads == 1
    cache.invalidate("users", "alice")
    await cache.user_teams("acme", "alice")
    assert store.reads == 2


async def test_without_a_listening_feed_nothing_is_served_from_the_cache() -> None:
    store = SlowStore()
    store.release.set()
    cache = Cache(store, maxsize=10, ttl=60)
    await cache.user_teams("acme", "alice")
    await cache.user_teams("acme", "alice")
    assert store.reads == 2  # not live yet: the feed has not connected
    cache.set_live(True)
    await cache.user_teams("acme", "alice")
    await cache.user_teams("acme", "alice")
    assert store.reads == 3
    cache.set_live(False)  # the feed is lost: changes could go unseen
    store.teams = ("new",)
    assert await cache.user_teams("acme", "alice") == ("new",)
    assert store.reads == 4
