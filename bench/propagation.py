"""How long a change made through one sidecar takes to reach another sidecar's cache.

    python bench/propagation.py [--changes 100] [--timeout 10]
                                [--database-url URL | embedded] [--json PATH]

Starts two `warden serve` processes, A and B, on one fresh database, B with a cache TTL of
B_CACHE_TTL_SECONDS so that only a change notification can make it see a change within the
run, and makes --changes changes through A's Admin API, in turn: revoke a fresh API key
(RevokeApiKey), flip the org's model_access allow list (UpdatePolicy), switch a provider off
or on (SetProviderSwitch). Before each change B is shown to give the old answer (which also
warms its cache); then the bench measures the time from A's Admin call returning to the first
Authorize on B that reflects the change, polling B with 1 ms pauses. Prints p50, p90 and max
per kind and overall, the changes B's first probe already reflected, and B's cache hit ratio.
A change not seen within --timeout is counted as missed, and makes the bench exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import grpc
import harness
from google.rpc import error_details_pb2, status_pb2
from harness import Bench, num, table
from load import percentile_ms
from servers import BenchError, cache_hit_ratios, say

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


async def drive(a_target: str, b_target: str, auth: tuple[tuple[str, str], ...],
                args: argparse.Namespace
                ) -> tuple[list[dict], list[float]]:
    async with (grpc.aio.insecure_channel(a_target) as a_channel,
                grpc.aio.insecure_channel(b_target) as b_channel):
        s = Sidecars(admin_pb2_grpc.AdminStub(a_channel), warden_pb2_grpc.WardenStub(b_channel),
                     auth)
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
                say(f"change {i} ({kind}) not seen by B after {args.timeout:g} s: B still "
                    f"answers {answer!r}")
        return changes, s.probe_seconds


def figures(changes: list[dict]) -> dict:
    seen = sorted(c["seconds"] for c in changes if c["seen"])
    return {"changes": len(changes), "missed": len(changes) - len(seen),
            "p50_ms": percentile_ms(seen, 0.50), "p90_ms": percentile_ms(seen, 0.90),
            "max_ms": percentile_ms(seen, 1.0),
            "first_probe": sum(c["seen"] and c["probes"] == 1 for c in changes)}


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden A and B ...")
    # One after the other: A applies the migrations, B finds them applied.
    a = bench.warden(database_url, name="warden-a")
    b = bench.warden(database_url, "--cache-ttl-seconds", str(B_CACHE_TTL_SECONDS),
                     name="warden-b")
    say(f"making {args.changes} changes through A ...")
    try:
        changes, probe_seconds = asyncio.run(drive(a.target, b.target, bench.auth, args))
    except grpc.aio.AioRpcError as exc:
        raise BenchError(f"{exc.code().name}: {exc.details()}") from None
    by_kind = {kind: figures([c for c in changes if c["kind"] == kind]) for kind in KINDS}
    if missed := sum(not c["seen"] for c in changes):
        bench.problem(f"{missed} changes not seen by B within {args.timeout:g} s")
    return {"all": figures(changes), **by_kind,
            "probe_p50_ms": percentile_ms(sorted(probe_seconds), 0.5),
            "b_cache_hit_ratio": cache_hit_ratios(b.scrape()),
            "raw_ms": [{**c, "seconds": round(c["seconds"] * 1000, 3)} for c in changes]}


def report(context: dict, results: dict) -> None:
    print(table(["change", "count:", "p50 ms:", "p90 ms:", "max ms:", "missed:", "1st probe:"],
                [[name, r["changes"], num(r["p50_ms"], 2), num(r["p90_ms"], 2),
                  num(r["max_ms"], 2), r["missed"], r["first_probe"]]
                 for name in (*KINDS, "all") for r in [results[name]]],
                f"**From A's Admin call returning to B's first answer reflecting it**, "
                f"{context['changes']} changes"))
    print(f"\nOne Authorize on B (the resolution of these figures): p50 "
          f"{num(results['probe_p50_ms'], 2)} ms. B's cache hit ratio since start: " + ", ".join(
              f"{cache} {'n/a' if r is None else f'{r:.2%}'}"
              for cache, r in results["b_cache_hit_ratio"].items()))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--changes", type=int, default=100, help="changes made through A")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for B to reflect one change before counting it as "
                        "missed")
    args = p.parse_args()
    harness.positive(p, args, "changes")
    harness.positive(p, args, "timeout", at_least=0.01)
    harness.main(p, work, report, lambda a: {
        "changes": a.changes, "b_cache_ttl_s": B_CACHE_TTL_SECONDS}, args)


if __name__ == "__main__":
    main()
