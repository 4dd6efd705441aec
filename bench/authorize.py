"""Throughput of Warden's Authorize, and of Authorize + RecordUsage pairs, over localhost gRPC
against the no-op baseline, at a fixed concurrency.

    python bench/authorize.py [--rounds 3] [--seconds 8] [--warmup 2] [--concurrency 32]
                              [--replay] [--database-url URL | embedded] [--json PATH]

One `warden serve` on a fresh database with the tenant of bench/tenant.py (six policies, four
quota leases per call, every decision explained in the decision log: the default), and
bench/noop_server.py. Before measuring, the bench captures Warden's answers to one call and
stops unless the no-op's answer has the same shape (results, limits, route, identity) and
size; with --replay the no-op answers with those very bytes instead.

Two modes: `Authorize` alone, and pairs (Authorize, then RecordUsage of the same request with
its reservation: one operation; on the no-op too). Rounds alternate the servers: in each
round, Authorize on the no-op, then on Warden, then pairs on each. Every answer is checked,
warm-up included: Authorize must allow, RecordUsage must return the price's cost and no
duplicate; at the end the database must hold every allowed decision, usage row and
explanation Warden acknowledged. Exits 1 otherwise.
"""

from __future__ import annotations

import asyncio

import harness
import tenant
from harness import Bench, check_stored, num, ratio, spread, table
from load import WrongAnswer, alternate, medians, problems_of, run_load
from servers import BenchError, cache_hit_ratios, say

MODES = {"Authorize": tenant.authorize_call, "pair": tenant.pair_call}
SERVERS = ("no-op", "Warden")
OPS = {"Authorize": "one op = one call", "pair": "one op = Authorize + RecordUsage"}
FIGURES = ("ops_per_s", "p50_ms", "p99_ms", "server_cpu_ms", "client_cpu_pct", "rest_cpu_pct")


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden ...")
    warden = bench.warden(database_url)
    key = asyncio.run(tenant.create(warden.target, bench.auth))
    try:
        answers = asyncio.run(tenant.capture(warden.target, key))
        tenant.check_like_noop(answers)
    except WrongAnswer as exc:
        raise BenchError(str(exc)) from None
    servers = {"no-op": bench.noop(answers if args.replay else None), "Warden": warden}

    def measure(name: str, round_: int) -> dict:
        mode, server = name.split(" / ")
        s = servers[server]
        return run_load([s.target], MODES[mode](key), args.concurrency, args.warmup,
                        args.seconds, [s.pid])

    runs = alternate(args.rounds, [f"{m} / {s}" for m in MODES for s in SERVERS], measure)
    for name, results in runs.items():
        for r in results:
            for p in problems_of(f"round {r['round']}, {name}", r):
                bench.problem(p)
    # The capture's call, then every call Warden answered.
    decisions = 1 + sum(r["ops"] for m in MODES for r in runs[f"{m} / Warden"])
    recorded = 1 + sum(r["ops"] for r in runs["pair / Warden"])
    check_stored(bench, database_url, {
        "allowed decisions": ("SELECT count(*) FROM requests WHERE decision = 'allow'",
                              decisions),
        "usage rows": ("SELECT count(*) FROM usage", recorded),
        "explanations": ("SELECT count(*) FROM audit_events"
                         " WHERE action = 'authorize.decision'", decisions)})
    return {"runs": runs,
            "medians": {name: medians(results, FIGURES) for name, results in runs.items()},
            "cache_hit_ratio": cache_hit_ratios(warden.scrape()),
            "answer_bytes": {m: len(a) for m, a in answers.items()}}


def report(context: dict, results: dict) -> None:
    print(f"\nWarden's policies on each call: {', '.join(r[0] for r in tenant.RESULTS)}; "
          f"usage {tenant.USAGE.input_tokens}/{tenant.USAGE.output_tokens}/"
          f"{tenant.USAGE.cached_input_tokens} tokens = {tenant.EXPECTED_COST} micros; "
          f"no-op {'replaying Warden' if context['replay'] else 'fixed'} answers; "
          f"Warden answers {results['answer_bytes']['Authorize']} B")
    runs, med = results["runs"], results["medians"]
    for mode in MODES:
        noop, warden = med[f"{mode} / no-op"], med[f"{mode} / Warden"]
        rows = [[server, num(m["ops_per_s"], 1),
                 spread([r["ops_per_s"] for r in runs[f"{mode} / {server}"]]),
                 num(m["p50_ms"], 2), num(m["p99_ms"], 2), num(m["server_cpu_ms"], 3),
                 f"{num(m['client_cpu_pct'])}%", f"{num(m['rest_cpu_pct'])}%"]
                for server, m in (("no-op", noop), ("Warden", warden))]
        rows.append(["**Warden/no-op**", f"**{ratio(noop['ops_per_s'], warden['ops_per_s'])}**",
                     "", ratio(noop["p50_ms"], warden["p50_ms"]),
                     ratio(noop["p99_ms"], warden["p99_ms"]),
                     ratio(noop["server_cpu_ms"], warden["server_cpu_ms"]), "", ""])
        print(table(["server", "ops/s:", "ops/s range:", "p50 ms:", "p99 ms:",
                     "server CPU ms/op:", "client CPU:", "rest of machine:"], rows,
                    f"**{mode}** ({OPS[mode]}), "
                    f"concurrency {context['concurrency']}, medians of "
                    f"{context['rounds']} rounds of {context['seconds_s']:g} s"))
    print(table(["round", "mode / server", "ops/s:", "p50 ms:", "p99 ms:", "server CPU ms/op:"],
                [[r["round"], name, num(r["ops_per_s"], 1), num(r["p50_ms"], 2),
                  num(r["p99_ms"], 2), num(r["server_cpu_ms"], 3)]
                 for r, name in sorted(((r, name) for name, rs in runs.items() for r in rs),
                                       key=lambda x: x[0]["round"])], "Each round"))
    print("\nWarden's cache hit ratio since start: " + ", ".join(
        f"{cache} {'n/a' if r is None else f'{r:.2%}'}"
        for cache, r in results["cache_hit_ratio"].items()))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each mode and server")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds run but not measured before each run")
    p.add_argument("--concurrency", type=int, default=32, help="operations in flight")
    p.add_argument("--replay", action="store_true",
                   help="the no-op answers with Warden's own answer bytes, captured once")
    args = p.parse_args()
    harness.positive(p, args, "rounds", "concurrency")
    harness.positive(p, args, "seconds", at_least=0.1)
    harness.main(p, work, report, lambda a: {
        "rounds": a.rounds, "seconds_s": a.seconds, "warmup_s": a.warmup,
        "concurrency": a.concurrency, "replay": a.replay}, args)


if __name__ == "__main__":
    main()
