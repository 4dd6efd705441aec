"""How much of a limit several sidecars let an app use when calls are settled on a sidecar other
than the one that authorized them.

    python bench/settlement.py [--sidecars 4] [--elsewhere 0.2] [--offer 4] [--concurrency 64]
                               [--token-limit 200000] [--budget-micros 1000000] [--seed 1]
                               [--database-url URL | embedded] [--json PATH]

--sidecars sidecars on one fresh database; org `bench`, a price for gpt-4o-mini of 1 micro per
input and 2 per output token, and two apps, one per phase:

1. `bench-tokens`, an app rate limit of --token-limit TOTAL_TOKENS an hour. Each call asks
   for 1-2,000 input tokens and 1-2,000 output tokens with min_output_tokens = max (all or
   nothing).
2. `bench-budget`, an app budget of --budget-micros a day (UTC; the bench waits out a
   midnight that is less than 90 s away). Each call asks for 1-2,000 input and 1-2,000 output
   tokens with a random min_output_tokens, so Warden may lower max_output_tokens to fit.

Each phase offers about --offer times its limit (by what the calls reserve), in --waves waves
WAVE_PAUSE seconds apart (as an app's traffic goes on; a refund comes back to the sidecar
that authorized a call with that sidecar's next journal flush, and the next wave can use it),
--concurrency calls in flight, Authorize on sidecar i mod --sidecars. An allowed call "runs"
(a 1-10 ms sleep standing for the LLM call), uses a random fraction of the output tokens it was
granted, and is settled with RecordUsage carrying its reservation_id; a fraction --elsewhere
of the settlements goes to a sidecar other than the one that authorized the call. That
sidecar knows the reservation only once the decision reached Postgres (the authorizing
sidecar's journal is flushed every second): until then it answers NOT_FOUND, and the bench
retries every RETRY_PAUSE seconds, as an app's client would. Request sizes, fractions and the
sidecar choices come from --seed.

Reports per phase: calls offered, admitted and denied, the settled total (tokens, or cost in
micros) as a fraction of the limit, what the admitted calls reserved, and after the sidecars
stopped (SIGTERM: leases given back, journals flushed) `sum(granted)` of quota_buckets for the
phase's policy against the settled total: what the counter holds beyond what was used is
allowance stranded by the sidecars. Exits 1 if more than the limit was settled, if a call
failed or was denied for another reason than its limit, if a RecordUsage answered another
cost than the price's, or if the usage rows in Postgres differ from the acknowledged
RecordUsage calls.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import harness
from harness import Bench, table
from servers import CALL_TIMEOUT, Server, fetch, say

from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2, warden_pb2_grpc

ORG_ID = "bench"
MODEL = "gpt-4o-mini"
MAX_TOKENS = 2000
# Microseconds per token at the price below: a call's cost is input + 2 x output tokens.
INPUT_MICROS, OUTPUT_MICROS = 1, 2
LLM_SECONDS = (0.001, 0.010)
MIDNIGHT_MARGIN = 90.0
# A settlement on another sidecar answered NOT_FOUND is retried this often, for this long.
RETRY_PAUSE, RETRY_FOR = 0.25, 10.0
WAVE_PAUSE = 1.5  # more than a journal flush interval


@dataclass(frozen=True)
class Phase:
    name: str
    app_id: str
    policy_id: str
    unit: str  # what the limit counts
    denied_reason: int  # the only reason a call may be denied for
    trims: bool  # whether min_output_tokens lets Warden lower max_output_tokens


PHASES = (
    Phase("tokens", "bench-tokens", "bench-tokens-per-hour", "tokens",
          types_pb2.REASON_RATE_LIMITED, False),
    Phase("budget", "bench-budget", "bench-budget-daily", "micros",
          types_pb2.REASON_BUDGET_EXHAUSTED, True),
)


@dataclass
class Outcome:
    """What the client saw in one phase."""

    offered: int = 0
    admitted: int = 0
    denied: Counter = field(default_factory=Counter)  # by reason
    errors: Counter = field(default_factory=Counter)
    first_error: str = ""
    reserved: int = 0  # by the admitted calls, in the limit's unit
    trimmed: int = 0  # admitted with max_output_tokens lowered
    elsewhere: int = 0  # acknowledged settlements sent to another sidecar
    retries: int = 0  # RecordUsage calls answered NOT_FOUND by another sidecar, and retried
    settled: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # id -> in, out, cost

    def fail(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.first_error = self.first_error or f"{kind}: {detail}"

    def used(self, phase: Phase) -> int:
        if phase.unit == "tokens":
            return sum(i + o for i, o, _ in self.settled.values())
        return sum(c for _, _, c in self.settled.values())


async def create_tenant(target: str, auth: tuple[tuple[str, str], ...], token_limit: int,
                        budget: int) -> dict[str, str]:
    keys = {}
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id=ORG_ID)),
                              metadata=auth)
        await admin.SetModelPrice(admin_pb2.SetModelPriceRequest(price=admin_pb2.ModelPrice(
            provider="", model=MODEL, input_micros_per_million=INPUT_MICROS * 10**6,
            output_micros_per_million=OUTPUT_MICROS * 10**6)), metadata=auth)
        for phase in PHASES:
            await admin.CreateApp(admin_pb2.CreateAppRequest(
                app=admin_pb2.App(id=phase.app_id, org_id=ORG_ID)), metadata=auth)
            scope = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id=phase.app_id)
            config = {"rate_limit": types_pb2.RateLimitConfig(
                metric=types_pb2.METRIC_TOTAL_TOKENS, window=types_pb2.WINDOW_HOUR,
                limit=token_limit)} if phase.unit == "tokens" else {
                "budget": types_pb2.BudgetConfig(period=types_pb2.PERIOD_DAY,
                                                 limit_micros=budget)}
            await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
                id=phase.policy_id, scope=scope, mode=types_pb2.POLICY_MODE_ENFORCE,
                **config)), metadata=auth)
            reply = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id=phase.app_id),
                                             metadata=auth)
            keys[phase.name] = reply.plaintext
    return keys


def asks(phase: Phase, limit: int, offer: float, rng: random.Random, sidecars: int,
         elsewhere: float) -> list[tuple]:
    """The calls of a phase: (input, max output, min output, fraction used, LLM seconds,
    sidecar that authorizes, sidecar that settles), about `offer` x the limit reserved."""
    mean_reserved = (1 + MAX_TOKENS) / 2 * (1 + (OUTPUT_MICROS if phase.unit == "micros"
                                                 else 1))
    calls = []
    for i in range(math.ceil(offer * limit / mean_reserved)):
        inp, max_out = rng.randint(1, MAX_TOKENS), rng.randint(1, MAX_TOKENS)
        min_out = rng.randint(1, max_out) if phase.trims else max_out
        by = i % sidecars
        settles = by
        if sidecars > 1 and rng.random() < elsewhere:
            settles = rng.choice([s for s in range(sidecars) if s != by])
        calls.append((inp, max_out, min_out, rng.random(), rng.uniform(*LLM_SECONDS), by,
                      settles))
    return calls


async def offer(phase: Phase, key: str, sidecars: list[Server], calls: list[tuple],
                concurrency: int, run_id: str, waves: int) -> Outcome:
    out = Outcome(offered=len(calls))
    channels = [grpc.aio.insecure_channel(s.target) for s in sidecars]
    stubs = [warden_pb2_grpc.WardenStub(c) for c in channels]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        inp, max_out, min_out, fraction, llm_seconds, by, settles = calls[i]
        request_id = f"{run_id}-{phase.name}-{i}"
        async with gate:
            try:
                reply = await stubs[by].Authorize(warden_pb2.AuthorizeRequest(
                    request_id=request_id, api_key=key, model=MODEL, input_tokens=inp,
                    max_output_tokens=max_out, min_output_tokens=min_out),
                    timeout=CALL_TIMEOUT)
                if reply.decision != warden_pb2.DECISION_ALLOW:
                    out.denied[types_pb2.Reason.Name(reply.reason)] += 1
                    return
                granted = reply.route.max_output_tokens
                if not min_out <= granted <= max_out:
                    out.fail("ROUTE", f"max_output_tokens {granted} outside [{min_out}, "
                                      f"{max_out}]")
                    return
                out.admitted += 1
                out.trimmed += granted < max_out
                out.reserved += inp + granted if phase.unit == "tokens" else \
                    INPUT_MICROS * inp + OUTPUT_MICROS * granted
                await asyncio.sleep(llm_seconds)
                used = max(1, round(fraction * granted))
                usage = warden_pb2.RecordUsageRequest(
                    request_id=request_id, api_key=key, outcome=warden_pb2.OUTCOME_COMPLETED,
                    usage=types_pb2.Usage(input_tokens=inp, output_tokens=used),
                    reservation_id=reply.reservation_id)
                deadline = time.monotonic() + RETRY_FOR
                while True:
                    try:
                        answer = await stubs[settles].RecordUsage(
                            usage, timeout=CALL_TIMEOUT)
                        break
                    except grpc.aio.AioRpcError as exc:
                        # Another sidecar knows the reservation once the decision reached
                        # Postgres (within a journal flush): until then NOT_FOUND, retried as
                        # an app's client would.
                        if settles == by or exc.code() != grpc.StatusCode.NOT_FOUND or \
                                time.monotonic() > deadline:
                            raise
                    out.retries += 1
                    await asyncio.sleep(RETRY_PAUSE)
            except grpc.aio.AioRpcError as exc:
                out.fail(exc.code().name, exc.details() or "")
                return
            cost = INPUT_MICROS * inp + OUTPUT_MICROS * used
            if answer.cost_micros != cost or answer.duplicate:
                out.fail("USAGE", f"cost_micros {answer.cost_micros} (expected {cost}), "
                                  f"duplicate {answer.duplicate}")
            out.settled[request_id] = (inp, used, answer.cost_micros)
            out.elsewhere += settles != by

    try:
        size = math.ceil(len(calls) / waves)
        for start in range(0, len(calls), size):
            if start:
                await asyncio.sleep(WAVE_PAUSE)
            await asyncio.gather(*(one(i) for i in range(start, min(start + size, len(calls)))))
    finally:
        for channel in channels:
            await channel.close()
    return out


def clear_of_utc_midnight() -> None:
    """A daily budget counts one UTC calendar day: the budget phase must not straddle two."""
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if (left := (midnight - now).total_seconds()) < MIDNIGHT_MARGIN:
        say(f"waiting {left:.0f} s for UTC midnight ...")
        time.sleep(left + 1.0)


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say(f"starting {args.sidecars} sidecars ...")
    sidecars = bench.wardens(args.sidecars, database_url)
    keys = asyncio.run(create_tenant(sidecars[0].target, bench.auth, args.token_limit,
                                     args.budget_micros))
    limits = {"tokens": args.token_limit, "budget": args.budget_micros}
    rng = random.Random(args.seed)
    run_id = f"s{args.seed}"
    outcomes: dict[str, Outcome] = {}
    for phase in PHASES:
        if phase.name == "budget":
            clear_of_utc_midnight()
        calls = asks(phase, limits[phase.name], args.offer, rng, args.sidecars, args.elsewhere)
        say(f"{phase.name}: {len(calls)} calls offered at concurrency {args.concurrency} ...")
        started = time.perf_counter()
        outcomes[phase.name] = o = asyncio.run(offer(phase, keys[phase.name], sidecars, calls,
                                                     args.concurrency, run_id, args.waves))
        say(f"{phase.name}: done in {time.perf_counter() - started:.1f} s")
        if o.errors:
            bench.problem(f"{phase.name}: {sum(o.errors.values())} calls failed "
                          f"{dict(o.errors)}, first: {o.first_error}")
        if other := set(o.denied) - {types_pb2.Reason.Name(phase.denied_reason)}:
            bench.problem(f"{phase.name}: calls denied for {sorted(other)}")
    say("stopping the sidecars (SIGTERM) ...")
    for s in sidecars:
        if status := s.stop():
            bench.problem(f"{s.name} exited with status {status}")
    granted = {r["policy_id"]: r["granted"] for r in asyncio.run(fetch(
        database_url, "SELECT policy_id, sum(granted) AS granted FROM quota_buckets"
        " GROUP BY policy_id"))}
    rows = asyncio.run(fetch(database_url, "SELECT request_id, input_tokens, output_tokens,"
                                           " cost_micros FROM usage"))
    stored = {r["request_id"]: (r["input_tokens"], r["output_tokens"], r["cost_micros"])
              for r in rows}
    results: dict = {}
    for phase in PHASES:
        o, limit = outcomes[phase.name], limits[phase.name]
        mine = {k: v for k, v in stored.items() if k.startswith(f"{run_id}-{phase.name}-")}
        if mine != o.settled:
            missing = len(o.settled.keys() - mine.keys())
            differ = sum(mine[k] != v for k, v in o.settled.items() if k in mine)
            bench.problem(f"{phase.name}: {len(mine)} usage rows in Postgres for "
                          f"{len(o.settled)} acknowledged RecordUsage calls ({missing} "
                          f"missing, {len(mine.keys() - o.settled.keys())} not acknowledged, "
                          f"{differ} with other values)")
        used = o.used(phase)
        if used > limit:
            bench.problem(f"{phase.name}: {used:,} {phase.unit} settled against a limit of "
                          f"{limit:,}")
        results[phase.name] = {
            "limit": limit, "unit": phase.unit, "offered": o.offered, "admitted": o.admitted,
            "denied": dict(o.denied), "errors": dict(o.errors), "trimmed": o.trimmed,
            "settled": len(o.settled), "settled_elsewhere": o.elsewhere,
            "retries": o.retries,
            "used": used, "used_fraction": round(used / limit, 4),
            "reserved": o.reserved, "usage_rows": len(mine),
            "granted_after_stop": int(granted.get(phase.policy_id, 0))}
    return results


def report(context: dict, results: dict) -> None:
    rows = []
    for phase in PHASES:
        r = results[phase.name]
        rows.append([
            f"{phase.name} ({r['limit']:,} {r['unit']})", r["offered"], r["admitted"],
            sum(r["denied"].values()), r["settled_elsewhere"], f"{r['used']:,}",
            f"**{r['used_fraction']:.3f}**", f"{r['reserved'] / r['limit']:.2f}",
            f"{r['granted_after_stop']:,}",
            f"{(r['granted_after_stop'] - r['used']) / r['limit']:+.3f}"])
    print(table(["phase (limit)", "offered:", "admitted:", "denied:", "settled elsewhere:",
                 "settled:", "used / limit:", "reserved / limit:", "granted after stop:",
                 "(granted - settled) / limit:"], rows,
                f"**{context['sidecars']} sidecars, {context['elsewhere']:.0%} of RecordUsage "
                f"sent to another sidecar than the one that authorized**, about "
                f"{context['offer']:g}x the limit offered at concurrency {context['concurrency']}"))
    budget = results["budget"]
    print("\nRecordUsage calls retried after NOT_FOUND from another sidecar (the decision "
          "not yet in Postgres): " + ", ".join(f"{p.name} {results[p.name]['retries']}"
                                                for p in PHASES) + ".")
    print(f"\nBudget phase: {budget['trimmed']} of {budget['admitted']} admitted calls had "
          f"max_output_tokens lowered to fit. `granted` is sum(granted) of quota_buckets for "
          f"the phase's policy once every sidecar stopped; above `settled` it is allowance "
          f"the sidecars left counted but unused.")


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--sidecars", type=int, default=4, help="sidecars on the one database")
    p.add_argument("--elsewhere", type=float, default=0.2,
                   help="fraction of RecordUsage calls sent to another sidecar")
    p.add_argument("--offer", type=float, default=4.0,
                   help="what the offered calls reserve, in multiples of the limit")
    p.add_argument("--waves", type=int, default=4, help="waves the offer comes in")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    p.add_argument("--token-limit", type=int, default=200_000,
                   help="TOTAL_TOKENS an hour of the tokens phase")
    p.add_argument("--budget-micros", type=int, default=1_000_000,
                   help="daily budget of the budget phase")
    p.add_argument("--seed", type=int, default=1, help="of the calls' sizes and sidecars")
    args = p.parse_args()
    harness.positive(p, args, "sidecars", "concurrency", "waves")
    harness.positive(p, args, "token_limit", "budget_micros", at_least=MAX_TOKENS * 3)
    if not 0 <= args.elsewhere <= 1 or args.offer <= 0:
        p.error("--elsewhere must be in [0, 1] and --offer > 0")
    harness.main(p, work, report, lambda a: {
        "sidecars": a.sidecars, "elsewhere": a.elsewhere, "offer": a.offer, "waves": a.waves,
        "concurrency": a.concurrency, "seed": a.seed}, args)


if __name__ == "__main__":
    main()
