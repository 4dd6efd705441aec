"""What the decision log costs Authorize: three settings of the org's decision log alternated
over rounds on one sidecar, and their medians.

    python bench/decision_log.py [--rounds 4] [--seconds 8] [--warmup 2] [--concurrency 32]
                                 [--database-url URL | embedded] [--json PATH]

One `warden serve` on a fresh database, with the tenant of bench/tenant.py (six policies,
four of them quotas). Authorize at --concurrency, --rounds rounds, each running the three
settings in turn (the order rotates from round to round): every decision explained (the
default), 10% of allowed calls explained (every denial too, and the bench has none), and none
explained. An org audit policy is created or deleted between runs. A first run of the default
setting warms the sidecar and database up and is not reported. Each run reports Authorize/s
and the server's CPU per call (from /proc); the summary gives each setting's medians and its
cost against "none". Every call must be allowed, and Postgres must hold every allowed decision
and exactly the explanations the settings call for (a call is sampled by a hash of its
request id); otherwise exit 1.
"""

from __future__ import annotations

import asyncio
import statistics

import harness
import tenant
from harness import Bench, num, table
from load import Call, allowed, problems_of, run_load
from servers import CALL_TIMEOUT, say

from warden.engine.audit import sampled

# name, allow_sample_rate, deny_sample_rate
SETTINGS = (("every decision", 1.0, 1.0), ("10% of allows", 0.1, 1.0), ("none", 0.0, 0.0))


def recording(api_key: str) -> tuple[Call, list[str]]:
    """An Authorize call of the tenant's request, and the list of request ids it made."""
    made: list[str] = []
    make = tenant.requests(api_key)

    async def call(stub, n: int, spans: dict[str, float]) -> int:
        request = make(n)
        made.append(request.request_id)
        return allowed(await stub.Authorize(request, timeout=CALL_TIMEOUT)).ByteSize()

    return call, made


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden ...")
    warden = bench.warden(database_url)
    key = asyncio.run(tenant.create(warden.target, bench.auth))
    runs, logged, decided = [], 0, 0
    # Round 0, not reported: a new sidecar and database's first seconds cost more (plans,
    # autovacuum's first passes over the new tables), and round 1 always starts with the same
    # setting.
    schedule = [(0, SETTINGS[0])] + [
        (round_ + 1, setting) for round_ in range(args.rounds)
        for setting in SETTINGS[round_ % 3:] + SETTINGS[:round_ % 3]]
    for round_, (name, allow_rate, deny_rate) in schedule:
        say(f"round {round_}: {name} explained ...")
        asyncio.run(tenant.decision_log(warden.target, bench.auth, allow_rate, deny_rate))
        call, request_ids = recording(key)
        r = run_load([warden.target], call, args.concurrency, args.warmup, args.seconds,
                     [warden.pid])
        if round_:
            runs.append({"round": round_, "setting": name, **r})
        logged += sum(sampled(allow_rate, i) for i in request_ids)
        decided += r["ops"]
        for p in problems_of(f"round {round_}, {name}", r):
            bench.problem(p)
    harness.check_stored(bench, database_url, {
        "allowed decisions": ("SELECT count(*) FROM requests WHERE decision = 'allow'",
                              decided),
        "explanations": ("SELECT count(*) FROM audit_events"
                         " WHERE action = 'authorize.decision'", logged)})
    medians = {name: {"ops_per_s": statistics.median(r["ops_per_s"] for r in runs
                                                     if r["setting"] == name),
                      "server_cpu_ms": statistics.median(r["server_cpu_ms"] for r in runs
                                                         if r["setting"] == name)}
               for name, _, _ in SETTINGS}
    return {"runs": runs, "medians": medians}


def report(context: dict, results: dict) -> None:
    print(table(["round:", "explained", "Authorize/s:", "p50 ms:", "server CPU ms/call:",
                 "rest of machine:"],
                [[r["round"], r["setting"], num(r["ops_per_s"], 1), num(r["p50_ms"], 2),
                  num(r["server_cpu_ms"], 3), f"{r['rest_cpu_pct']}%"]
                 for r in results["runs"]], "Each run"))
    medians = results["medians"]
    base = medians["none"]
    print(table(["explained", "median Authorize/s:", "median CPU ms/call:",
                 "throughput cost:", "CPU per call:"],
                [[name, num(m["ops_per_s"], 1), num(m["server_cpu_ms"], 3),
                  f"**{(1 - m['ops_per_s'] / base['ops_per_s']) * 100:+.1f}%**",
                  f"{(m['server_cpu_ms'] / base['server_cpu_ms'] - 1) * 100:+.1f}%"]
                 for name, m in medians.items()],
                f"**Medians of {context['rounds']} rounds**, against none explained"))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--rounds", type=int, default=4, help="runs of each setting")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds run but not measured before each run")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    args = p.parse_args()
    harness.positive(p, args, "rounds", "concurrency")
    harness.positive(p, args, "seconds", at_least=0.1)
    harness.main(p, work, report, lambda a: {
        "rounds": a.rounds, "seconds_s": a.seconds, "warmup_s": a.warmup,
        "concurrency": a.concurrency}, args)


if __name__ == "__main__":
    main()
