"""ChangeFeed: every sidecar's cache drops exactly the entries a committed change names, so the
feed must name each cached table's change by the cache's key (migrations/0002 and 0003,
warden_change_id), report nothing that did not commit, and say when it is listening: once it
says so, no later change may be missed; while it is not, the cache must not be trusted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from tests.contract.rows import (
    api_key,
    app,
    directory,
    new_key,
    org,
    price,
    rate_limit,
    switch,
    team,
    user,
)
from warden.store.base import Declared


class Heard:
    """What the feed called back, in order."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []
        self.states: list[bool] = []
        self._news = asyncio.Event()

    def on_change(self, table: str, row_id: str) -> None:
        self.changes.append((table, row_id))
        self._news.set()

    def on_state(self, listening: bool) -> None:
        self.states.append(listening)
        self._news.set()

    async def until(self, done: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not done():
                self._news.clear()
                await self._news.wait()


@pytest.fixture
async def heard(change_feed, directory_store) -> AsyncIterator[Heard]:
    """A running feed that has said it is listening, over the usual directory."""
    await directory(directory_store)
    heard = Heard()
    task = asyncio.create_task(change_feed.run(heard.on_change, heard.on_state))
    try:
        await heard.until(lambda: heard.states == [True])
        yield heard
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_change_right_after_listening_is_heard(heard, price_store):
    assert heard.changes == []
    await price_store.set_price(price("openai", "gpt-4o", 1, 2, 1))
    await heard.until(lambda: ("model_prices", "openai/gpt-4o") in heard.changes)
    assert heard.states == [True]


async def test_each_change_names_the_cache_entry_it_invalidates(heard, backend):
    d, p = backend.directory, backend.policies

    async def membership_change():
        await backend.apply.apply(Declared(
            orgs=[org("acme")], teams=[team("eng", "acme"), team("ops", "acme")],
            apps=[app("chat", "acme", team_id="eng"), app("batch", "acme")],
            users=[user("ann", "acme", ("eng",)), user("bob", "acme")]), dry_run=False)

    writes = [
        (lambda: d.create_app(app("new-app", "acme")), [("apps", "new-app")]),
        (lambda: d.create_app(app("mesh-app", "acme", principals=("spiffe://td/sa/m",))),
         [("apps", "mesh-app"), ("app_principals", "spiffe://td/sa/m")]),
        (lambda: d.create_user(user("cat", "acme", ("eng",))),
         [("users", "cat"), ("user_teams", "cat")]),
        (membership_change, [("user_teams", "ann")]),
        (lambda: d.create_api_key(api_key("k1", "chat", prefix="aaa111")),
         [("api_keys", "aaa111")]),
        (lambda: d.revoke_api_key("k1"), [("api_keys", "aaa111")]),
        (lambda: d.create_api_key(api_key("k2", "chat", prefix="bbb222")),
         [("api_keys", "bbb222")]),
        (lambda: d.rotate_api_key("k2", new_key("k3"), timedelta(hours=1)),
         [("api_keys", "bbb222"), ("api_keys", "p-k3")]),
        (lambda: p.create_policy(rate_limit("p1", "app", "chat")), [("policies", "app:chat")]),
        (lambda: p.update_policy(rate_limit("p1", "app", "chat", limit=3), 0),
         [("policies", "app:chat")]),
        (lambda: p.delete_policy("p1"), [("policies", "app:chat")]),
        (lambda: d.set_provider_switch(switch("openai", org_id="acme")),
         [("provider_switches", "acme")]),
        (lambda: d.set_provider_switch(switch("openai", "gpt-4o")),
         [("provider_switches", "")]),
        (lambda: backend.prices.set_price(price("azure", "gpt-4o", 1, 2, 1)),
         [("model_prices", "azure/gpt-4o")]),
    ]
    for write, expected in writes:
        heard.changes.clear()
        await write()
        await heard.until(lambda expected=expected: all(c in heard.changes for c in expected))


async def test_a_change_that_never_commits_is_not_heard(heard, apply_store, price_store):
    """A dry-run apply writes and rolls back: sidecars must not drop (or worse, act on) what
    never happened. The price set afterwards marks how far the feed has got."""
    changes = await apply_store.apply(Declared(
        orgs=[org("acme")], teams=[team("eng", "acme"), team("ops", "acme")],
        apps=[app("chat", "acme", team_id="eng"), app("batch", "acme"), app("ghost", "acme")],
        users=[user("ann", "acme", ("eng", "ops")), user("bob", "acme")],
        policies=[rate_limit("p-ghost", "app", "ghost")]), dry_run=True)
    assert [(c.kind, c.id) for c in changes] == [("app", "ghost"), ("policy", "p-ghost")]
    await price_store.set_price(price("openai", "marker", 1, 1, 1))
    await heard.until(lambda: ("model_prices", "openai/marker") in heard.changes)
    assert heard.changes == [("model_prices", "openai/marker")]


async def test_a_lost_connection_is_reported_and_listening_resumes(heard, seed, price_store):
    assert await seed.interrupt_feed() >= 1
    await heard.until(lambda: heard.states[-2:] == [False, True])
    assert heard.states[:2] == [True, False]
    await price_store.set_price(price("openai", "after", 1, 1, 1))
    await heard.until(lambda: ("model_prices", "openai/after") in heard.changes)


async def test_cancelling_the_feed_closes_its_connection(change_feed, seed):
    """Sidecars start and stop feeds over their lifetime; a cancelled one must not leave a
    connection (and its LISTEN) behind."""
    heard = Heard()
    task = asyncio.create_task(change_feed.run(heard.on_change, heard.on_state))
    await heard.until(lambda: heard.states == [True])
    assert await seed.feed_connections() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the store may take a moment to see the socket close
        if not await seed.feed_connections():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the cancelled feed's connection is still open after 5 s")
