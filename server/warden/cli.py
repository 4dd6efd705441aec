"""The `warden` command: `serve`, `migrate`, `health` and `authorize` here, the Admin commands
in cli_admin. Server flags are built from settings.OPTIONS so that a flag and its environment
variable cannot drift apart. What `--help` and `serve` print is written for the person running
Warden: no module names, and secrets only by where they are kept."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
import uuid
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format

from warden import cli_admin, logs
from warden.settings import OPTIONS, Settings, SettingsError
from warden.store import embedded
from warden.tls import ClientFlagsError, add_client_flags, client_channel

log = logging.getLogger("warden.cli")

DESCRIPTION = """\
Warden, a policy sidecar for applications that call LLMs. `warden serve` runs it, `warden
migrate` prepares its database, and the other commands talk to a running sidecar."""

# What `warden migrate` reads; the rest of the server's options would only mislead there.
_MIGRATE_OPTIONS = ("database_url", "data_dir", "db_timeout_seconds", "log_level")


def _add_settings_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None
                        ) -> None:
    for option in OPTIONS:
        if names is not None and option.name not in names:
            continue
        where = f"{option.env}, default {option.default}" if option.default else option.env
        parser.add_argument(option.flag, dest=option.name, metavar="VALUE",
                            help=f"{option.help} [{where}]")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(overrides={o.name: getattr(args, o.name, None) for o in OPTIONS})


def _program() -> list[str]:
    """How this warden was started, so that the commands printed for a person work as pasted."""
    if os.path.basename(sys.argv[0]) == "warden":
        return [sys.argv[0]]
    return [sys.executable, "-m", "warden"]


async def _demo(app) -> str:
    """Create (or reuse) a demo org, app and rate limit through the Admin API, and a new key,
    whose plaintext it returns: the key is shown once."""
    from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2

    auth = (("authorization", f"Bearer {app.admin_token}"),)
    async with grpc.aio.insecure_channel(app.target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)

        async def create(call, request):
            try:
                await call(request, metadata=auth)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise

        await create(admin.CreateOrg, admin_pb2.CreateOrgRequest(
            org=admin_pb2.Org(id="demo", display_name="Demo org")))
        await create(admin.CreateApp, admin_pb2.CreateAppRequest(
            app=admin_pb2.App(id="demo-app", org_id="demo", display_name="Demo app")))
        await create(admin.CreatePolicy, admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
            id="demo-app-rpm", name="60 requests a minute",
            scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="demo-app"),
            rate_limit=types_pb2.RateLimitConfig(metric=types_pb2.METRIC_REQUESTS,
                                                 window=types_pb2.WINDOW_MINUTE, limit=60))))
        key = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
            app_id="demo-app", display_name="demo"), metadata=auth)
    return key.plaintext


def _database(s: Settings) -> str:
    if s.embedded_database:
        return (f"embedded PostgreSQL in {embedded.pgdata(s.data_path)} "
                f"(its log: {embedded.server_log(s.data_path)})")
    # Never the whole URL: it may hold a password.
    url = urlsplit(s.database_url)
    if not url.hostname:
        return "PostgreSQL (from the database URL)"
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL at {url.hostname}{port}{url.path}"


def _summary(app, args: argparse.Namespace, demo_key: str | None) -> str:
    """What a person needs once the sidecar serves: where, with what, and how to go on. The
    admin token itself is never printed: it is a secret kept in a file only its owner reads,
    and a terminal's scrollback or a collected log is not such a place."""
    s = app.settings
    target = app.target
    reach = [] if target == cli_admin.DEFAULT_TARGET else ["--target", target]
    # The admin commands find the token through the data directory, the default one unless told.
    default_data = Settings.load(env={}).data_path
    data_dir = [] if s.data_path == default_data else ["--data-dir", str(s.data_path)]
    rows = [("gRPC", target)]
    if s.subject_socket:
        rows.append(("trusted callers", s.subject_socket))
    if app.metrics_port is not None:
        host = s.metrics_listen.rpartition(":")[0]
        rows.append(("metrics", f"http://{host}:{app.metrics_port}/metrics"))
    else:
        rows.append(("metrics", "off"))
    rows.append(("database", _database(s)))
    token_file = s.data_path / cli_admin.ADMIN_TOKEN_FILE
    if s.admin_token:
        source = "--admin-token" if args.admin_token is not None else "WARDEN_ADMIN_TOKEN"
        rows.append(("admin token", f"the one given by {source}"))
    else:
        rows.append(("admin token", f"{token_file} (a secret, mode 0600; to read it: "
                                    f"{shlex.join(['cat', str(token_file)])})"))
    everything = "" if s.log_level == "DEBUG" else " (--log-level debug for everything)"
    rows.append(("logs", f"JSON lines on stderr at {s.log_level}{everything}"))

    width = max(len(name) for name, _ in rows) + 1
    lines = ["", "Warden is serving.",
             *(f"  {name + ':':<{width}} {value}" for name, value in rows)]
    if s.tls_cert:
        lines.append("  (TLS is on: the commands below need --ca-cert, and with a client CA "
                     "--client-cert and --client-key)")
    if demo_key is not None:
        lines += ["", "Demo: org 'demo', app 'demo-app' (60 requests a minute) and a new API key, "
                  "shown once:", "", f"  {demo_key}", "", "Call it from another shell:",
                  "  " + shlex.join([*_program(), "authorize", *reach, "--key", demo_key,
                                     "--model", "gpt-4o-mini"])]
    if not s.admin_token:
        lines += ["", "The admin commands on this host read the admin token from its file, e.g.:",
                  "  " + shlex.join([*_program(), "policies", "list", *reach, *data_dir])]
    lines += ["", "Stop with Ctrl-C.", ""]
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    from warden.app import serve
    from warden.errors import StartupError
    from warden.store.migrate import SchemaError

    settings = _settings(args)
    logs.configure(settings.log_level)

    async def ready(app) -> None:
        demo_key = await _demo(app) if args.demo else None
        print(_summary(app, args, demo_key), flush=True)

    try:
        asyncio.run(serve(settings, ready))
    except (StartupError, SchemaError) as exc:
        log.error("cannot start", extra={"error": str(exc)})
        print(f"warden: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from warden.store import postgres
    from warden.store.migrate import migrate

    settings = _settings(args)
    logs.configure(settings.log_level)

    async def run() -> list[int]:
        server = (embedded.EmbeddedPostgres(settings.data_path) if settings.embedded_database
                  else None)
        url = server.start() if server else settings.database_url
        try:
            pool = await postgres.create_pool(url, 1, 1, settings.db_timeout_seconds)
            async with pool.acquire() as conn:
                applied = await migrate(conn)
            await pool.close()
            return applied
        finally:
            if server:
                server.stop()

    applied = asyncio.run(run())
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


def _health(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with client_channel(args) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _authorize(args: argparse.Namespace) -> int:
    from warden.v1 import warden_pb2, warden_pb2_grpc

    request = warden_pb2.AuthorizeRequest(
        request_id=args.request_id or uuid.uuid4().hex, api_key=args.key, model=args.model,
        provider=args.provider, max_output_tokens=args.max_output_tokens,
        messages=[warden_pb2.ChatMessage(role="user", content=args.prompt)] if args.prompt else [])
    try:
        with client_channel(args) as channel:
            reply = warden_pb2_grpc.WardenStub(channel).Authorize(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(json.dumps(json_format.MessageToDict(reply), indent=2))
    return 0


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=cli_admin.DEFAULT_TARGET,
                        help="the sidecar's address, HOST:PORT or unix:PATH "
                             "(default %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="seconds to wait for the answer (default %(default)g)")
    add_client_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    """Every command and option; separate from main so that a test can walk the commands."""
    parser = argparse.ArgumentParser(
        prog="warden", description=DESCRIPTION,
        epilog="`warden COMMAND --help` describes a command and its options.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the sidecar", description=(
        "Run the sidecar until SIGTERM or Ctrl-C. Once it serves it prints where, and where "
        "the admin token is kept; its logs are JSON lines on stderr. Every option can also be "
        "set by the environment variable shown with it; a flag wins."))
    _add_settings_flags(serve)
    serve.add_argument("--demo", action="store_true",
                       help="create a demo org, app, rate limit and API key, and print the key "
                            "and how to call the sidecar with it")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate", help="bring the database schema up to this version of Warden, then exit",
        description="Apply the database migrations this version of Warden needs, then exit. "
                    "`warden serve` does this by itself with the embedded database; with a "
                    "shared database run it once per upgrade, before the sidecars.")
    _add_settings_flags(migrate, _MIGRATE_OPTIONS)
    migrate.set_defaults(run=_migrate)

    health = commands.add_parser(
        "health", help="check a running sidecar's health",
        description="Check a running sidecar's health: print its status, exit 0 when it is "
                    "SERVING and 1 otherwise (a container health check).")
    _client_flags(health)
    health.add_argument("--service", default="",
                        help="one service or component, e.g. warden.v1.Admin or "
                             "warden.component.database (default: the sidecar as a whole)")
    health.set_defaults(run=_health)

    auth = commands.add_parser(
        "authorize", help="ask a running sidecar whether one LLM call may go ahead",
        description="Ask a running sidecar whether one LLM call may go ahead, as an application "
                    "would before calling the model, and print its answer.")
    _client_flags(auth)
    auth.add_argument("--key", required=True, help="the API key to call with (wk_...)")
    auth.add_argument("--model", required=True, help="the model of the call, e.g. gpt-4o-mini")
    auth.add_argument("--provider", default="",
                      help="the provider of the call, e.g. openai (default: none named)")
    auth.add_argument("--max-output-tokens", type=int, default=256, metavar="N",
                      help="the most output tokens the call may produce (default %(default)s)")
    auth.add_argument("--prompt", default="", help="a user message to send with the call")
    auth.add_argument("--request-id", default="", metavar="ID",
                      help="the call's id, unique per org (default: a random one)")
    auth.set_defaults(run=_authorize)
    cli_admin.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.run(args))
    except (SettingsError, ClientFlagsError) as exc:
        print(f"warden: {exc}", file=sys.stderr)
        sys.exit(2)
