"""`warden apply | keys | policies | providers`: Admin API commands against a running Warden.

Exit codes: 0 done, 1 the server refused or could not be reached (the status, its message and
every field violation are printed), 2 the command line or the input file is wrong (nothing was
sent).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from warden.api.convert import SCOPE_KINDS
from warden.policy_file import PolicyFileError, load_apply_file
from warden.settings import Settings
from warden.tls import ClientFlagsError, add_client_flags, client_channel
from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
# In the sidecar's data directory, where `warden serve` generates the token when none is given.
ADMIN_TOKEN_FILE = "admin-token"
PAGE = 1000
_VERBS = {admin_pb2.CHANGE_ACTION_CREATE: "create", admin_pb2.CHANGE_ACTION_UPDATE: "update",
          admin_pb2.CHANGE_ACTION_DELETE: "delete"}


class UsageError(Exception):
    """Bad input found before anything was sent: exit 2."""


class Admin:
    """An Admin stub that adds the token to every call and pages through lists."""

    def __init__(self, args: argparse.Namespace) -> None:
        # A client certificate may stand in for the token (WARDEN_TLS_ADMIN_CLIENTS).
        token = admin_token(args, required=not args.client_cert)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            self._channel = client_channel(args)
        except ClientFlagsError as exc:
            raise UsageError(str(exc)) from None
        self._stub = admin_pb2_grpc.AdminStub(self._channel)
        self._timeout = args.timeout

    def call(self, method: str, request: Any) -> Any:
        return getattr(self._stub, method)(request, metadata=self._metadata,
                                           timeout=self._timeout)

    def pages(self, method: str, request: Any, field: str) -> Iterator[Any]:
        request.page_size = PAGE
        while True:
            reply = self.call(method, request)
            yield from getattr(reply, field)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    def close(self) -> None:
        self._channel.close()


def admin_token(args: argparse.Namespace, required: bool = True) -> str:
    """--admin-token, else WARDEN_ADMIN_TOKEN, else the token `warden serve` generated into its
    data directory (so that on the sidecar's own host no token needs to be handled at all)."""
    if args.admin_token:
        return args.admin_token
    if os.environ.get("WARDEN_ADMIN_TOKEN"):
        return os.environ["WARDEN_ADMIN_TOKEN"]
    path = Settings.load(overrides={"data_dir": args.data_dir}).data_path / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip()
    except OSError as exc:
        if not required:
            return ""
        raise UsageError(f"no admin token: pass --admin-token, set WARDEN_ADMIN_TOKEN, or run "
                         f"where the sidecar's data directory is readable ({path}: "
                         f"{exc.strerror})") from None


def print_rpc_error(exc: grpc.RpcError) -> None:
    """The status, its message, and the rich details (google.rpc.Status in the trailers)."""
    print(f"warden: {exc.code().name}: {exc.details()}", file=sys.stderr)
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        status = None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            print(f"  reason: {info.reason}", file=sys.stderr)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for violation in bad.field_violations:
                print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            print(f"  retry after {info.retry_delay.ToTimedelta().total_seconds():g} s",
                  file=sys.stderr)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _time(ts: timestamp_pb2.Timestamp, present: bool = True) -> str:
    if not present:
        return "-"
    return ts.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# apply


def _apply(args: argparse.Namespace) -> int:
    try:
        request = load_apply_file(args.file)
    except PolicyFileError as exc:
        raise UsageError(str(exc)) from None
    request.dry_run = args.dry_run
    reply = _call(args, "Apply", request)
    prefix = "plan: " if args.dry_run else ""
    counts = {"create": 0, "update": 0, "delete": 0}
    for change in reply.changes:
        verb = _VERBS.get(change.action, "?")
        counts[verb] = counts.get(verb, 0) + 1
        fields = f" (fields: {', '.join(change.fields)})" if change.fields else ""
        print(f"{prefix}{verb} {change.kind} {change.id}{fields}")
    summary = (f"{counts['create']} to create, {counts['update']} to update, "
               f"{counts['delete']} to delete")
    if args.dry_run:
        print(f"dry run: {summary}; nothing was changed" if reply.changes
              else f"dry run: no changes, {args.file} matches the database; nothing was changed")
    elif reply.changes:
        print(f"applied: {counts['create']} created, {counts['update']} updated, "
              f"{counts['delete']} deleted")
    else:
        print(f"no changes: {args.file} matches the database")
    return 0


# keys


def _key_state(key: admin_pb2.ApiKey, now: datetime) -> str:
    if key.HasField("revoke_time"):
        end = key.revoke_time.ToDatetime(UTC)
        return "revoked" if end <= now else f"grace until {_time(key.revoke_time)}"
    if key.HasField("expire_time") and key.expire_time.ToDatetime(UTC) <= now:
        return "expired"
    return "active"


def _keys_create(args: argparse.Namespace) -> int:
    request = admin_pb2.CreateApiKeyRequest(app_id=args.app, user_id=args.user or "",
                                            display_name=args.name or "",
                                            allowed_models=args.model or [])
    if args.expires_in is not None:
        request.expire_time.FromDatetime(datetime.now(UTC)
                                         + timedelta(seconds=args.expires_in))
    reply = _call(args, "CreateApiKey", request)
    print(f"id:  {reply.api_key.id}")
    print(f"key: {reply.plaintext}")
    print("The key is shown once and Warden keeps only a hash of it: store it now.",
          file=sys.stderr)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    reply = _call(args, "RevokeApiKey", admin_pb2.RevokeApiKeyRequest(id=args.id))
    print(f"revoked {reply.api_key.id} (app {reply.api_key.app_id}) at "
          f"{_time(reply.api_key.revoke_time)}")
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    request = admin_pb2.RotateApiKeyRequest(id=args.id)
    if args.grace is not None:
        request.grace_period.CopyFrom(duration_pb2.Duration(seconds=args.grace))
    reply = _call(args, "RotateApiKey", request)
    print(f"id:  {reply.api_key.id} (replaces {args.id})")
    print(f"key: {reply.plaintext}")
    print("The key is shown once and Warden keeps only a hash of it: store it now. "
          + (f"The old key keeps working for {args.grace} s." if args.grace is not None
             else "The old key keeps working for the server's default grace period."),
          file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)

    def run(admin: Admin) -> list[list[str]]:
        return [[k.id, k.prefix, _key_state(k, now), k.user_id or "-", k.display_name or "-",
                 ",".join(k.allowed_models) or "*", _time(k.create_time)]
                for k in admin.pages("ListApiKeys", admin_pb2.ListApiKeysRequest(
                    app_id=args.app), "api_keys")]

    _table(("ID", "PREFIX", "STATE", "USER", "NAME", "MODELS", "CREATED"), _with_admin(args, run))
    return 0


# policies


def _scope_arg(value: str) -> types_pb2.Scope:
    kind, sep, scope_id = value.partition(":")
    if not sep or kind not in SCOPE_KINDS or not scope_id:
        raise argparse.ArgumentTypeError(
            f"expected KIND:ID with KIND one of {', '.join(SCOPE_KINDS)} (got {value!r})")
    return types_pb2.Scope(kind=SCOPE_KINDS[kind], id=scope_id)


def _policies_list(args: argparse.Namespace) -> int:
    names = {v: k for k, v in SCOPE_KINDS.items()}
    request = admin_pb2.ListPoliciesRequest(scope=args.scope)

    def run(admin: Admin) -> list[list[str]]:
        return [[p.id, f"{names.get(p.scope.kind, '?')}:{p.scope.id}",
                 p.WhichOneof("config") or "-",
                 types_pb2.PolicyMode.Name(p.mode).removeprefix("POLICY_MODE_").lower()]
                for p in admin.pages("ListPolicies", request, "policies")]

    _table(("ID", "SCOPE", "TYPE", "MODE"), _with_admin(args, run))
    return 0


# providers


def _where(switch: admin_pb2.ProviderSwitch) -> str:
    models = f"model {switch.model}" if switch.model else "every model"
    org = f"org {switch.org_id}" if switch.org_id else "every org"
    return f"{switch.provider} ({models}, {org})"


def _providers_set(args: argparse.Namespace, enabled: bool) -> int:
    switch = admin_pb2.ProviderSwitch(provider=args.provider, model=args.model,
                                      org_id=args.org, enabled=enabled,
                                      reason=getattr(args, "reason", "") or "")
    reply = _call(args, "SetProviderSwitch", admin_pb2.SetProviderSwitchRequest(switch=switch))
    state = "on" if reply.switch.enabled else f"off: {reply.switch.reason}"
    print(f"{_where(reply.switch)} is {state}")
    return 0


def _providers_list(args: argparse.Namespace) -> int:
    reply = _call(args, "ListProviderSwitches",
                  admin_pb2.ListProviderSwitchesRequest(org_id=args.org))
    _table(("PROVIDER", "MODEL", "ORG", "STATE", "REASON", "UPDATED"),
           [[s.provider, s.model or "*", s.org_id or "*", "on" if s.enabled else "off",
             s.reason or "-", _time(s.update_time, s.HasField("update_time"))]
            for s in reply.switches])
    return 0


def _with_admin(args: argparse.Namespace, run: Callable[[Admin], Any]) -> Any:
    admin = Admin(args)
    try:
        return run(admin)
    finally:
        admin.close()


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    return _with_admin(args, lambda admin: admin.call(method, request))


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            print(f"warden: {exc}", file=sys.stderr)
            return 2
        except grpc.RpcError as exc:
            print_rpc_error(exc)
            return 1
    return run


def _connection_flags(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--target", default=DEFAULT_TARGET,
                        help="the sidecar's address, HOST:PORT or unix:PATH (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=timeout, metavar="SECONDS",
                        help="seconds to wait for each answer (default %(default)g)")
    parser.add_argument("--admin-token", default="", metavar="TOKEN",
                        help="the sidecar's admin token (default: $WARDEN_ADMIN_TOKEN, else the "
                             f"file {ADMIN_TOKEN_FILE} in the sidecar's data directory)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="the sidecar's data directory, where `warden serve` keeps the admin "
                             "token (default: $WARDEN_DATA_DIR, else $XDG_DATA_HOME/warden or "
                             "~/.local/share/warden)")
    add_client_flags(parser)


def _command(parent: Any, name: str, run: Callable[[argparse.Namespace], int], text: str,
             timeout: float = 10.0) -> argparse.ArgumentParser:
    parser = parent.add_parser(name, help=text, description=text)
    _connection_flags(parser, timeout)
    parser.set_defaults(run=_guarded(run))
    return parser


def register(commands: Any) -> None:
    """Add the admin commands to the `warden` subcommand parser."""
    # Long enough to wait for another apply holding the lock (store/apply.py waits up to 60 s).
    apply = _command(commands, "apply", _apply,
                     "make the orgs a YAML file declares match it: create, update and delete "
                     "their teams, apps, users and policies, and print each change",
                     timeout=120.0)
    apply.add_argument("-f", "--file", required=True,
                       help="the YAML file declaring orgs, teams, apps, users and policies")
    apply.add_argument("--dry-run", action="store_true",
                       help="print what would change and change nothing")

    text = "create, revoke, rotate and list API keys"
    keys = commands.add_parser("keys", help=text, description=f"Manage API keys: {text}.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = _command(key_commands, "create", _keys_create,
                      "create an API key and print it (once)")
    create.add_argument("--app", required=True, help="the app the key belongs to")
    create.add_argument("--user", default="",
                        help="the user the key acts for (default: none; the app may name the "
                             "user of each call)")
    create.add_argument("--name", default="", help="a name to tell the key apart in listings")
    create.add_argument("--model", action="extend", nargs="+", metavar="M",
                        help="models the key may use (default: whatever policies allow)")
    create.add_argument("--expires-in", type=int, metavar="SECONDS",
                        help="seconds until the key stops working (default: never)")
    key_id = "the key's id (key_...), as `warden keys list` shows it"
    revoke = _command(key_commands, "revoke", _keys_revoke, "revoke an API key now")
    revoke.add_argument("id", help=key_id)
    rotate = _command(key_commands, "rotate", _keys_rotate,
                      "replace an API key with a new one; the old one works for a grace period")
    rotate.add_argument("id", help=key_id)
    rotate.add_argument("--grace", type=int, metavar="SECONDS",
                        help="seconds the old key keeps working (default: the server's grace "
                             "period)")
    listing = _command(key_commands, "list", _keys_list, "list the API keys of an app")
    listing.add_argument("--app", required=True, help="the app whose keys to list")

    policies = commands.add_parser("policies", help="list policies",
                                   description="List the policies stored in the database.")
    policy_commands = policies.add_subparsers(dest="policies_command", required=True,
                                              metavar="COMMAND")
    listing = _command(policy_commands, "list", _policies_list,
                       "list policies: id, scope, type and mode")
    listing.add_argument("--scope", type=_scope_arg, default=None, metavar="KIND:ID",
                         help="only the policies set at this scope, e.g. app:chat; KIND one of "
                              f"{', '.join(SCOPE_KINDS)} (default: every scope)")

    providers = commands.add_parser(
        "providers", help="switch providers or models off and on",
        description="Switch providers or models off and on, for every org or one: a call to a "
                    "provider or model that is off is denied with the reason given.")
    provider_commands = providers.add_subparsers(dest="providers_command", required=True,
                                                 metavar="COMMAND")
    off = _command(provider_commands, "off", lambda a: _providers_set(a, False),
                   "switch a provider (or one of its models) off")
    on = _command(provider_commands, "on", lambda a: _providers_set(a, True),
                  "switch a provider (or one of its models) back on")
    for parser in (off, on):
        parser.add_argument("provider", help="the provider, e.g. openai")
        parser.add_argument("--model", default="", help="one model (default: every model)")
        parser.add_argument("--org", default="", help="one org (default: every org)")
    off.add_argument("--reason", required=True,
                     help="why; every denied caller is told, and `providers list` shows it")
    listing = _command(provider_commands, "list", _providers_list,
                       "list the providers and models switched off or back on")
    listing.add_argument("--org", default="",
                         help="only the switches that apply to one org: its own and those "
                              "for every org (default: every switch)")
