"""What the decision log costs Authorize, measured closely enough to compare with the audit
issue's target (under 5%). bench/quotas.py measures it once per run, and on this shared
2-core machine one 10 s run of each varies by more than the effect; this bench alternates the
two settings on one sidecar and reports medians.

    python bench/decision_log.py [--rounds 4] [--seconds 8] [--warmup 2]
                                 [--database-url URL | embedded]

One `warden serve` on a fresh database, with bench/quotas.py's tenant (six policies, four of
them quotas). Authorize at --concurrency 32, --rounds rounds, each running the three settings
of the org's decision log in turn (the order rotates from round to round): every decision
explained (the default), 10% of allowed calls explained (the audit issue's example: its
setting explains every denial too, and the bench has none), and none explained. An audit
policy is created and deleted between runs. A first run of the default setting warms the
sidecar and database up and is not reported. Each run reports Authorize/s and the server's CPU
per call (from /proc); the summary gives each setting's medians and its cost against "none".
Every call must be allowed, and Postgres must hold exactly the explanations the settings
call for (a call is sampled by a hash of its request id); otherwise exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

# authorize and quotas: beside this file, which is on sys.path when run as
# `python bench/decision_log.py`.
from authorize import (
    free_ports,
    fresh_database,
    machine,
    secrets_env,
    start_server,
    unwind_on_signals,
    warden_command,
)
from quotas import (
    HOST,
    add_database_url,
    add_quotas,
    authorize_call,
    cpu_seconds,
    create_tenant,
    database_kind,
    decision_log,
    drive,
    on_database_server,
    request_factory,
    stored_explanations,
    stored_rows,
)

from warden.engine.audit import sampled

# name, allow_sample_rate, deny_sample_rate
SETTINGS = (("every decision", 1.0, 1.0), ("10% of allows", 0.1, 1.0), ("none", 0.0, 0.0))


def run(args: argparse.Namespace, base_url: str, tmp: Path, problems: list[str]) -> list[dict]:
    (port,) = free_ports(1)
    target = f"{HOST}:{port}"
    admin_token, env = secrets_env()
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(base_url))
        proc = start_server(stack, "warden", warden_command(target, tmp / "warden",
                                                            database_url),
                            target, tmp / "warden.log", env)
        api_key = asyncio.run(create_tenant(target, admin_token))
        asyncio.run(add_quotas(target, admin_token))
        runs, logged, allowed = [], 0, 0
        # Round 0, not reported: a new sidecar and database's first seconds cost more (plans,
        # autovacuum's first passes over the new tables), and round 1 always starts with the
        # same setting.
        schedule = [(0, SETTINGS[0])] + [
            (round_ + 1, setting) for round_ in range(args.rounds)
            for setting in SETTINGS[round_ % 3:] + SETTINGS[:round_ % 3]]
        for round_, (name, allow_rate, deny_rate) in schedule:
            print(f"round {round_}: {name} explained ...", file=sys.stderr)
            asyncio.run(decision_log(target, admin_token, allow_rate, deny_rate))
            make, request_ids = recording(request_factory(api_key))
            cpu = cpu_seconds([proc.pid])
            r = asyncio.run(drive([target], authorize_call(make), args.concurrency,
                                  args.warmup, args.seconds))
            r["server_cpu_ms"] = (cpu_seconds([proc.pid]) - cpu) * 1000 / max(r["ops"], 1)
            if round_:
                runs.append({"round": round_, "setting": name, **r})
            logged += sum(sampled(allow_rate, i) for i in request_ids)
            allowed += len(request_ids)
            if r["errors"]:
                problems.append(f"round {round_}, {name}: {r['errors']} errors "
                                f"{r['error_codes']}, first: {r['first_error']}")
        asyncio.run(stored_rows(database_url, allowed, 0))  # the journal has been applied
        explained = asyncio.run(stored_explanations(database_url))
        if explained != logged:
            problems.append(f"{explained} decisions explained in audit_events; the settings "
                            f"call for {logged}")
    return runs


def recording(make):
    """The request factory, and the list of request ids it made (every call is answered)."""
    made: list[str] = []

    def make_and_record(n: int):
        request = make(n)
        made.append(request.request_id)
        return request

    return make_and_record, made


def report(context: dict, runs: list[dict]) -> None:
    print("  ".join(f"{k}={v}" for k, v in context.items()))
    print("\n| round | explained | Authorize/s | p50 ms | server CPU ms/call |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for r in runs:
        print(f"| {r['round']} | {r['setting']} | {r['ops_per_s']:,.1f} | {r['p50_ms']} | "
              f"{r['server_cpu_ms']:.3f} |")
    medians = {name: (statistics.median(r["ops_per_s"] for r in runs if r["setting"] == name),
                      statistics.median(r["server_cpu_ms"] for r in runs
                                        if r["setting"] == name))
               for name, _, _ in SETTINGS}
    base_ops, base_cpu = medians["none"]
    print("\n| explained | median Authorize/s | median CPU ms/call | **throughput cost** | "
          "CPU per call |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (ops, cpu) in medians.items():
        print(f"| {name} | {ops:,.1f} | {cpu:.3f} | **{(1 - ops / base_ops) * 100:+.1f}%** | "
              f"{(cpu / base_cpu - 1) * 100:+.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="runs of each setting")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds run but not measured before each run")
    add_database_url(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.concurrency < 1 or args.warmup < 0 or not 0 < args.seconds <= 300:
        parser.error("--rounds and --concurrency must be >= 1, --warmup >= 0, --seconds in "
                     "(0, 300]")
    unwind_on_signals()
    context = {"utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), **machine(),
               "database": database_kind(args.database_url),
               "rounds": args.rounds, "concurrency": args.concurrency,
               "seconds_s": args.seconds, "warmup_s": args.warmup}
    problems: list[str] = []
    runs = on_database_server(args.database_url,
                              lambda base_url, tmp: run(args, base_url, tmp, problems))
    report(context, runs)
    if problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
