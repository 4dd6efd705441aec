"""How long a change made through one sidecar takes to reach another sidecar's cache.

    python bench/propagation.py [--changes 100] [--database-url URL] [--json PATH]

Starts two `warden serve` processes, A and B, on one database (a private embedded Postgres the
bench starts, or a fresh database on --database-url) and makes --changes changes through A's
Admin API, in turn: revoke a fresh API key (RevokeApiKey), flip the org's model_access allow
list (UpdatePolicy), switch a provider off or on (SetProviderSwitch). Before each change B is
shown to give the old answer (which also warms its cache); then the bench measures the time
from A's Admin call returning to the first Authorize on B that reflects the change, polling B
with 1 ms pauses. Prints p50, p90 and max per kind and overall, and B's cache hit ratio. Every
process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc

# Beside this file, which is on sys.path when run as `python bench/propagation.py`.
from authorize import (
    HOST,
    BenchError,
    admin_metadata,
    cache_hit_ratios,
    free_ports,
    fresh_database,
    machine,
    percentile_ms,
    scrape_metrics,
    secrets_env,
    start_server,
    stop_leftover_postgres,
    unwind_on_signals,
    warden_command,
)
from google.rpc import error_details_pb2, status_pb2

from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2, warden_pb2_grpc

ORG_ID = "bench"
APP_ID = "bench-app"
POLICY_ID = "bench-models"
# The allow list flips gpt-4o-mini in and out; the switch turns anthropic off and on. Each
# change is observed through its own (provider, model), so no change hides another.
ACCESS_PROBE = ("openai", "gpt-4o-mini")
SWITCH_PROBE = ("anthropic", "claude-3-5-haiku")
KINDS = ("revoke", "model_access", "provider_switch")
# B's cache TTL: long enough that only a change notification can explain B seeing a change.
B_CACHE_TTL_SECONDS = 600
CALL_TIMEOUT = 5.0


@dataclass
class Sidecars:
    admin: admin_pb2_grpc.AdminStub  # on A
    warden: warden_pb2_grpc.WardenStub  # on B
    auth: tuple[tuple[str, str], ...]
    key: str = ""
    allow_access_probe: bool = True
    switch_probe_on: bool = True
    probe_seconds: list[float] = field(default_factory=list)
    request_count: int = 0

    async def answer(self, key: str, probe: tuple[str, str]) -> str:
        """B's answer in short: "allow", "deny MODEL_NOT_ALLOWED", "error API_KEY_REVOKED"."""
        provider, model = probe
        self.request_count += 1
        request = warden_pb2.AuthorizeRequest(
            request_id=f"probe-{self.request_count}", api_key=key, model=model,
            provider=provider, max_output_tokens=256)
        start = time.perf_counter()
        try:
            reply = await self.warden.Authorize(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            answer = f"error {error_reason(exc)}"
        else:
            answer = "allow" if reply.decision == warden_pb2.DECISION_ALLOW else \
                f"deny {types_pb2.Reason.Name(reply.reason).removeprefix('REASON_')}"
        self.probe_seconds.append(time.perf_counter() - start)
        return answer


def error_reason(exc: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason Warden puts in the rich status, else the status code."""
    for name, value in exc.trailing_metadata() or ():
        if name == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return exc.code().name


@contextlib.contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """The Postgres Warden embeds (pgserver), started by the bench so that A and B are two
    equal clients of it, as sidecars of one deployment are; stopped at the end."""
    import pgserver

    with contextlib.ExitStack() as stack:
        # If the bench is stopped hard mid-start, postmaster.pid still names the server.
        stack.callback(stop_leftover_postgres, pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        stack.callback(server.cleanup)
        yield server.get_uri()


async def create_tenant(s: Sidecars) -> None:
    await s.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id=ORG_ID)),
                            metadata=s.auth)
    await s.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id=APP_ID, org_id=ORG_ID)), metadata=s.auth)
    await s.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=access_policy(True)),
                               metadata=s.auth)
    s.key = (await new_key(s))[0]


async def new_key(s: Sidecars) -> tuple[str, str]:
    reply = await s.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id=APP_ID),
                                       metadata=s.auth)
    return reply.plaintext, reply.api_key.id


def access_policy(allow_access_probe: bool) -> types_pb2.Policy:
    allow = [SWITCH_PROBE[1]] + ([ACCESS_PROBE[1]] if allow_access_probe else [])
    return types_pb2.Policy(
        id=POLICY_ID, scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id=ORG_ID),
        model_access=types_pb2.ModelAccessConfig(allow_models=allow))


async def change(s: Sidecars, kind: str) -> tuple[str, tuple[str, str], str]:
    """Make one change through A once B is shown to answer the old way; return the key and
    probe to ask B with and the answer that reflects the change."""
    if kind == "revoke":
        key, key_id = await new_key(s)
        # Any answer but an error loads the key into B's cache.
        if (old := await s.answer(key, SWITCH_PROBE)).startswith("error"):
            raise BenchError(f"B refused a fresh key before its revocation: {old}")
        await s.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=key_id), metadata=s.auth)
        return key, SWITCH_PROBE, "error API_KEY_REVOKED"
    if kind == "model_access":
        states = ("deny MODEL_NOT_ALLOWED", "allow")
        await expect_before(s, ACCESS_PROBE, states[s.allow_access_probe])
        s.allow_access_probe = not s.allow_access_probe
        # revision 0: an unconditional update (the bench is the only writer).
        await s.admin.UpdatePolicy(admin_pb2.UpdatePolicyRequest(
            policy=access_policy(s.allow_access_probe)), metadata=s.auth)
        return s.key, ACCESS_PROBE, states[s.allow_access_probe]
    states = ("deny PROVIDER_DISABLED", "allow")
    await expect_before(s, SWITCH_PROBE, states[s.switch_probe_on])
    s.switch_probe_on = not s.switch_probe_on
    await s.admin.SetProviderSwitch(admin_pb2.SetProviderSwitchRequest(
        switch=admin_pb2.ProviderSwitch(provider=SWITCH_PROBE[0], enabled=s.switch_probe_on,
                                        reason="" if s.switch_probe_on else "bench")),
        metadata=s.auth)
    return s.key, SWITCH_PROBE, states[s.switch_probe_on]


async def expect_before(s: Sidecars, probe: tuple[str, str], expected: str) -> None:
    """B's answer before a change must be the old one, or the measurement proves nothing."""
    if (answer := await s.answer(s.key, probe)) != expected:
        raise BenchError(f"before the change B answered {answer!r}, expected {expected!r}")


async def drive(a_target: str, b_target: str, admin_token: str, args: argparse.Namespace
                ) -> tuple[list[dict], list[float]]:
    async with (grpc.aio.insecure_channel(a_target) as a_channel,
                grpc.aio.insecure_channel(b_target) as b_channel):
        s = Sidecars(admin_pb2_grpc.AdminStub(a_channel), warden_pb2_grpc.WardenStub(b_channel),
                     admin_metadata(admin_token))
        await create_tenant(s)
        changes = []
        for i in range(args.changes):
            kind = KINDS[i % len(KINDS)]
            key, probe, expected = await change(s, kind)
            # The clock starts when A's Admin call has returned: its transaction committed.
            start = time.perf_counter()
            probes = 0
            while True:
                answer = await s.answer(key, probe)
                probes += 1
                elapsed = time.perf_counter() - start
                if answer == expected or elapsed > args.timeout:
                    break
                await asyncio.sleep(0.001)
            seen = answer == expected
            changes.append({"kind": kind, "seen": seen, "seconds": elapsed, "probes": probes})
            if not seen:
                print(f"change {i} ({kind}) not seen by B after {args.timeout:.0f} s: B still "
                      f"answers {answer!r}", file=sys.stderr)
        return changes, s.probe_seconds


def figures(changes: list[dict]) -> dict:
    seen = sorted(c["seconds"] for c in changes if c["seen"])
    return {"changes": len(changes), "missed": len(changes) - len(seen),
            "p50_ms": percentile_ms(seen, 0.50), "p90_ms": percentile_ms(seen, 0.90),
            "max_ms": percentile_ms(seen, 1.0),
            "first_probe": sum(c["seen"] and c["probes"] == 1 for c in changes)}


def run(args: argparse.Namespace, context: dict) -> dict:
    a_port, b_port, b_metrics_port = free_ports(3)
    a_target, b_target = f"{HOST}:{a_port}", f"{HOST}:{b_port}"
    b_metrics = f"{HOST}:{b_metrics_port}"
    admin_token, env = secrets_env()
    with (tempfile.TemporaryDirectory(prefix="warden-bench-", ignore_cleanup_errors=True) as tmp,
          contextlib.ExitStack() as stack):
        tmp_path = Path(tmp)
        if args.database_url:
            database_url = stack.enter_context(fresh_database(args.database_url))
            context["database"] = urlsplit(database_url).path.lstrip("/")
        else:
            print("starting embedded Postgres ...", file=sys.stderr)
            database_url = stack.enter_context(embedded_postgres(tmp_path / "pg"))
        print("starting warden A and B ...", file=sys.stderr)
        # One after the other: A applies the migrations, B finds them applied.
        start_server(stack, "warden A", warden_command(a_target, tmp_path / "a", database_url),
                     a_target, tmp_path / "a.log", env)
        start_server(stack, "warden B",
                     warden_command(b_target, tmp_path / "b", database_url, b_metrics,
                                    "--cache-ttl-seconds", str(B_CACHE_TTL_SECONDS)),
                     b_target, tmp_path / "b.log", env)
        print(f"making {args.changes} changes through A ...", file=sys.stderr)
        try:
            changes, probe_seconds = asyncio.run(drive(a_target, b_target, admin_token, args))
        except grpc.aio.AioRpcError as exc:
            raise BenchError(f"{exc.code().name}: {exc.details()}") from None
        by_kind = {kind: figures([c for c in changes if c["kind"] == kind]) for kind in KINDS}
        return {"all": figures(changes), **by_kind,
                "probe_p50_ms": percentile_ms(sorted(probe_seconds), 0.5),
                "b_cache_hit_ratio": cache_hit_ratios(scrape_metrics(b_metrics)),
                "raw_ms": [{**c, "seconds": round(c["seconds"] * 1000, 3)} for c in changes]}


def report(context: dict, results: dict) -> None:
    def ms(value: float | None) -> str:
        return f"{'n/a' if value is None else f'{value:.2f}':>9}"

    print("  ".join(f"{k}={v}" for k, v in context.items()))
    print(f"{'change':<17}{'count':>6}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}{'missed':>8}"
          f"{'1st probe':>11}")
    for name in (*KINDS, "all"):
        r = results[name]
        print(f"{name:<17}{r['changes']:>6}{ms(r['p50_ms'])}{ms(r['p90_ms'])}{ms(r['max_ms'])}"
              f"{r['missed']:>8}{r['first_probe']:>11}")
    print(f"one Authorize on B (the resolution of these figures): p50 "
          f"{results['probe_p50_ms']:.2f} ms")
    print("B cache hit ratio since start: " + ", ".join(
        f"{cache} {'n/a' if r is None else f'{r:.2%}'}"
        for cache, r in results["b_cache_hit_ratio"].items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100, help="changes made through A")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for B to reflect one change before counting it "
                             "as missed")
    parser.add_argument("--database-url", default="",
                        help="external Postgres server (a fresh database is created and dropped);"
                             " default: an embedded Postgres started by the bench")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.changes < 1 or args.timeout <= 0:
        parser.error("--changes must be >= 1 and --timeout > 0")
    return args


def main() -> None:
    args = parse_args()
    unwind_on_signals()
    context = {
        **machine(),
        "database_mode": "external" if args.database_url else "embedded",
        "changes": args.changes, "b_cache_ttl_s": B_CACHE_TTL_SECONDS,
    }
    try:
        results = run(args, context)
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; servers stopped")
    report(context, results)
    if args.json:
        args.json.write_text(json.dumps({"context": context, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
