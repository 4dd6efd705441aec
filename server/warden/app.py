"""The composition root: builds every part from Settings, owns start-up and shutdown order.

Start: data dir and secrets -> database (embedded or URL) -> pool -> schema -> stores ->
journal (what a previous run left is applied) -> gRPC server (Warden, Admin, health,
reflection) -> metrics -> health watcher.
Stop (SIGTERM/SIGINT): health NOT_SERVING -> server.stop(grace) drains in-flight RPCs ->
journal flushed, unspent leases given back -> pool closes -> embedded Postgres stops.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from warden import __version__, metrics
from warden.api.admin_auth import AdminAuth
from warden.api.admin_service import AdminService
from warden.api.decoding import add_servicer
from warden.api.envoy_authz import EnvoyAuthorization
from warden.api.envoy_proc import EnvoyProcessor
from warden.api.mesh import Mesh
from warden.api.warden_service import WardenService
from warden.components import Components, Stores
from warden.errors import StartupError
from warden.settings import Settings
from warden.store import postgres
from warden.store.apply import PostgresApplyStore
from warden.store.audit_partitions import maintain_audit_partitions
from warden.store.audit_query import PostgresAuditQueryStore
from warden.store.base import REFUNDS
from warden.store.circuits import PostgresCircuitStore
from warden.store.counters import PostgresCounterStore
from warden.store.decision_log import PostgresDecisionLog
from warden.store.embedded import EmbeddedPostgres
from warden.store.lookups import PostgresChangeFeed, PostgresLookupStore
from warden.store.migrate import check_schema, migrate
from warden.store.postgres import database_unavailable
from warden.store.reporting import PostgresReportingStore, prune_quota_buckets
from warden.tls import TrustedPeers, server_credentials
from warden.v1 import admin_pb2, admin_pb2_grpc, warden_pb2, warden_pb2_grpc

log = logging.getLogger("warden.app")

WARDEN_SERVICE = warden_pb2.DESCRIPTOR.services_by_name["Warden"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
ENVOY_AUTHZ_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
ENVOY_PROC_SERVICE = external_processor_pb2.DESCRIPTOR.services_by_name[
    "ExternalProcessor"].full_name
DATABASE_COMPONENT = "warden.component.database"
# Health names that follow the database. The data plane ("" and Warden) keeps serving while it
# is away: it decides from the cache, the leases it holds and each quota's failure mode, and
# keeps decisions and usage in its journal.
_SERVING_WITH_DATABASE = (ADMIN_SERVICE, DATABASE_COMPONENT)


def read_or_create_secret(path: Path) -> str:
    """A secret kept in the data directory (mode 0600), created on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


async def _check_pepper(conn: asyncpg.Connection, pepper: bytes) -> None:
    """Sidecars sharing a database must share the key pepper, or keys made by one fail on
    another. The first start records a fingerprint; a different pepper is refused at start."""
    fingerprint = hmac.new(pepper, b"warden key pepper fingerprint", hashlib.sha256).hexdigest()
    stored = await conn.fetchval(
        # DO UPDATE (to the same value), not DO NOTHING: a sidecar racing the first start waits
        # for its insert to commit and then returns the stored fingerprint, instead of reading
        # a snapshot in which there is none.
        "INSERT INTO warden_meta (key, value) VALUES ('key_pepper_fingerprint', $1)"
        " ON CONFLICT (key) DO UPDATE SET value = warden_meta.value RETURNING value",
        fingerprint)
    if stored != fingerprint:
        raise StartupError(
            "this database's API keys were hashed with another key pepper: give every sidecar "
            "of one database the same WARDEN_KEY_PEPPER")


async def _repeat(round_: Callable[[], Awaitable[float]], delay: float) -> None:
    """`round_` again and again, each after the seconds the one before returned."""
    while True:
        await asyncio.sleep(delay)
        delay = await round_()


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin_token = ""
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.database_url = ""
        self._embedded: EmbeddedPostgres | None = None
        self._pool: asyncpg.Pool | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._metrics_server = None
        self._watcher: asyncio.Task | None = None
        self._feed: PostgresChangeFeed | None = None
        self._feed_task: asyncio.Task | None = None
        self._clock_offset = timedelta(0)
        self.components: Components | None = None
        self._background: list[asyncio.Task] = []

    @property
    def target(self) -> str:
        """Where clients connect (the listen address with the bound port)."""
        listen = self.settings.listen
        if listen.startswith("unix:"):
            return listen
        return f"{listen.rpartition(':')[0]}:{self.port}"

    async def start(self) -> None:
        s = self.settings
        data = s.data_path
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.admin_token = s.admin_token or read_or_create_secret(data / "admin-token")
        pepper = (s.key_pepper or read_or_create_secret(data / "key-pepper")).encode()
        if not s.admin_token:
            log.info("admin token from data directory", extra={"path": str(data / "admin-token")})

        self.database_url = s.database_url
        if s.embedded_database:
            self._embedded = EmbeddedPostgres(data)
            self.database_url = await asyncio.to_thread(self._embedded.start)
        self._pool = await postgres.create_pool(
            self.database_url, s.db_pool_min, s.db_pool_max, s.db_timeout_seconds,
            connect_timeout=max(s.health_interval_seconds, 2.0))
        async with self._pool.acquire() as conn:
            if s.migrate_on_start:
                await migrate(conn)
            else:
                await check_schema(conn)
            await _check_pepper(conn, pepper)
            await self._sync_clock(conn)
        pool = self._pool
        self.components = components = Components.build(s, Stores(
            directory=postgres.PostgresDirectoryStore(pool),
            policies=postgres.PostgresPolicyStore(pool),
            prices=postgres.PostgresPriceStore(pool),
            apply=PostgresApplyStore(pool),
            audit=postgres.PostgresAuditSink(pool),
            reporting=PostgresReportingStore(pool),
            audit_query=PostgresAuditQueryStore(pool),
            lookups=PostgresLookupStore(pool),
            counters=PostgresCounterStore(pool),
            decision_log=PostgresDecisionLog(pool),
            circuits=PostgresCircuitStore(pool),
        ), pepper, read_or_create_secret(data / "sidecar-id"), self.database_now)
        self._feed = PostgresChangeFeed(self.database_url, max(s.health_interval_seconds, 0.5))
        self._feed_task = asyncio.create_task(
            self._feed.run(self._changed, components.cache.set_live))
        await components.flusher.start()
        # Housekeeping's first rounds run before serving, the rest hourly: this month's audit
        # partition exists before the first event, and no first round races a caller's writes.
        self._background = [asyncio.create_task(components.quotas.run()),
                            asyncio.create_task(components.circuits.run())] + [
            asyncio.create_task(_repeat(round_, await round_()))
            for round_ in (self._prune_once, self._maintain_audit_once)]
        await self._start_grpc(components)
        if s.metrics_listen:
            host, _, port = s.metrics_listen.rpartition(":")
            self._metrics_server, _ = start_http_server(int(port), host)
            self.metrics_port = self._metrics_server.server_port
        metrics.BUILD_INFO.info({"version": __version__})
        self._watcher = asyncio.create_task(self._watch_database())
        log.info("warden serving", extra={"target": self.target, "metrics_port": self.metrics_port,
                                          "embedded_database": s.embedded_database})

    def _changed(self, table: str, row_id: str) -> None:
        """A change feed notification: usage held for a sidecar, or a cached row changed."""
        assert self.components is not None
        if table == REFUNDS:
            self.components.flusher.held(row_id)
        else:
            self.components.cache.invalidate(table, row_id)

    async def _prune_once(self) -> float:
        """Drop counter buckets no window or period counts any more; the seconds until the next
        round (an hour)."""
        assert self._pool is not None
        try:
            await prune_quota_buckets(self._pool,
                                      timedelta(days=self.settings.quota_retention_days))
        except Exception as exc:  # noqa: BLE001 - next hour
            log.warning("pruning counter buckets failed", extra={"error": repr(exc)})
        return 3600

    async def _maintain_audit_once(self) -> float:
        """Audit partitions made ahead, old ones dropped; the seconds until the next round (an
        hour, a minute after a failure)."""
        assert self._pool is not None
        days = self.settings.audit_retention_days
        try:
            await maintain_audit_partitions(self._pool, timedelta(days=days) if days else None)
            return 3600
        except Exception as exc:  # noqa: BLE001 - the default partition catches meanwhile
            log.warning("audit partition maintenance failed", extra={"error": repr(exc)})
            return 60

    def database_now(self) -> datetime:
        return datetime.now(UTC) + self._clock_offset

    async def _sync_clock(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        """Measure the database clock against ours (half the round trip is the error bound)."""
        before = time.time()
        db_now = await conn.fetchval("SELECT now()")
        after = time.time()
        self._clock_offset = db_now - datetime.fromtimestamp((before + after) / 2, UTC)

    async def _start_grpc(self, components: Components) -> None:
        s = self.settings
        size = s.max_message_bytes
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", size),
                     ("grpc.max_send_message_length", size),
                     ("grpc.so_reuseport", 0)])
        trusted = TrustedPeers(bool(s.subject_socket), s.tls_trusted_clients)
        add_servicer(server, warden_pb2_grpc.add_WardenServicer_to_server,
                     WardenService(components, trusted))
        mesh = Mesh(components, s.envoy_key_headers, s.envoy_rate_limit_headers, trusted,
                    s.envoy_rag_sources_header)
        add_servicer(server, external_auth_pb2_grpc.add_AuthorizationServicer_to_server,
                     EnvoyAuthorization(mesh))
        add_servicer(server, external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server,
                     EnvoyProcessor(mesh))
        add_servicer(server, admin_pb2_grpc.add_AdminServicer_to_server, AdminService(components),
                     AdminAuth(self.admin_token, components.stores.audit,
                               s.tls_admin_clients))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (WARDEN_SERVICE, ADMIN_SERVICE, ENVOY_AUTHZ_SERVICE, ENVOY_PROC_SERVICE,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        credentials = server_credentials(s)
        for address in filter(None, (s.listen, s.subject_socket)):
            try:
                # TLS is for the network listener; the subject socket is a local Unix socket.
                port = (server.add_secure_port(address, credentials)
                        if credentials and address == s.listen
                        else server.add_insecure_port(address))
            except RuntimeError as exc:
                raise StartupError(f"cannot listen on {address}: {exc}") from None
            if address == s.listen:
                self.port = port
        if s.subject_socket:
            # Whoever can connect here may act as any app: only the sidecar's own user.
            os.chmod(s.subject_socket.removeprefix("unix:"), 0o600)
        self._server = server
        await server.start()
        for name in ("", WARDEN_SERVICE, ENVOY_AUTHZ_SERVICE, ENVOY_PROC_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self._set_database_health(True)

    async def _set_database_health(self, up: bool) -> None:
        assert self._health is not None
        status = (health_pb2.HealthCheckResponse.SERVING if up
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in _SERVING_WITH_DATABASE:
            await self._health.set(name, status)
        metrics.COMPONENT_UP.labels("database").set(1 if up else 0)

    async def _watch_database(self) -> None:
        assert self._pool is not None
        up = True
        while True:
            await asyncio.sleep(self.settings.health_interval_seconds)
            try:
                await asyncio.wait_for(self._sync_clock(self._pool),
                                       max(1.0, self.settings.health_interval_seconds))
                now_up = True
            except Exception as exc:  # noqa: BLE001 - any failure of SELECT 1 is "down"
                if not database_unavailable(exc):
                    log.exception("database health check failed")
                now_up = False
            if now_up != up:
                log.warning("database health changed", extra={"up": now_up})
                up = now_up
                await self._set_database_health(up)

    async def stop(self) -> None:
        grace = self.settings.shutdown_grace_seconds
        log.info("shutting down", extra={"grace_seconds": grace})
        for task in (self._watcher, self._feed_task, *self._background):
            if task is not None:
                task.cancel()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self.components is not None:
            await self.components.flusher.stop()
            try:
                await self.components.quotas.release()
            except Exception as exc:  # noqa: BLE001 - stranded until their windows end
                log.warning("unspent leases not given back", extra={"error": repr(exc)})
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=max(grace, 1.0))
            except TimeoutError:
                self._pool.terminate()
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
        log.info("stopped")


async def serve(settings: Settings, on_ready: Callable[[App], object] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down in order."""
    app = App(settings)
    try:
        await app.start()
    except BaseException:
        await app.stop()
        raise
    # Here and not in App (tests run many Apps in one process). What exists once the sidecar
    # has started (modules, descriptors, settings) is never garbage: the collector stops
    # scanning it. And a young collection runs every 50,000 allocations instead of 700, so the
    # older generations (reservations held for their TTL, for one) are rescanned far less
    # often: StreamAudit acknowledged and stored more, with a lower p99 (bench/audit.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        if on_ready is not None:
            result = on_ready(app)
            if asyncio.iscoroutine(result):
                await result
        await stopping.wait()
    finally:
        await app.stop()
