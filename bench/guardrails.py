"""What the guardrails cost Authorize, against the same policy set without them.

    python bench/guardrails.py [--rounds 3] [--seconds 5] [--warmup 1] [--concurrency 1]
                               [--database-url URL | embedded] [--json PATH]

One `warden serve` with the tenant of bench/tenant.py (six policies, four quota leases, every
decision explained) and two keys of its user: one with nothing more, one with two policies at
its own scope: a pii policy that checks every built-in kind (log, and block for secrets) and a
prompt_injection policy (log at 0.5, the user and tool messages). The same prompts go to
both, so the only difference is the guardrails: a customer-support conversation of about
2 KB and of about 32 KB of text (order numbers, dates, amounts, times and one e-mail address,
which is found and logged; no secret, so nothing is blocked). Rounds alternate the four runs
(2 KB and 32 KB, without and with the policy); reported: calls per second, p50 and p99 of
Authorize at --concurrency, and each size's ratio with the policies to without. Every answer
must allow, and with the policies name the e-mail address found and the injection score.
"""

from __future__ import annotations

import asyncio
import random

import grpc
import harness
import tenant
from harness import Bench, num, ratio, table
from load import Call, WrongAnswer, allowed, alternate, medians, problems_of, run_load
from servers import CALL_TIMEOUT, say

from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2, warden_pb2_grpc

SIZES = {"2 KB": 2048, "32 KB": 32768}
POLICY_ID = "bench-key-pii"
INJECTION_ID = "bench-key-injection"
FIGURES = ("ops_per_s", "p50_ms", "p99_ms", "server_cpu_ms")

_LINES = [
    "Hi, I ordered a pair of running shoes last week and they still have not arrived.",
    "The order number is 88412-553 and it was placed on 2026-11-28 at 14:32.",
    "I paid $129.99 with express shipping, which was supposed to take two days.",
    "Could you check where the parcel is and whether it can still arrive before Friday?",
    "Thanks for waiting. I can see the parcel left our warehouse on 30/11 at 09:15.",
    "It is with the carrier now; the last scan was in the regional hub yesterday evening.",
    "Usually it takes 3 to 5 working days from there, so it should reach you by Thursday.",
    "If it is not there by then, we can send a replacement or refund the 12.50 shipping fee.",
    "That would be great. My size is 10.5 and the colour was blue, in case you resend it.",
    "Noted. Is there anything else I can help you with today regarding version 2.1 of the app?",
]


def conversation(size: int) -> list[warden_pb2.ChatMessage]:
    """About `size` characters of a support chat: turns of the lines above, one e-mail."""
    rng = random.Random(size)
    turns = [warden_pb2.ChatMessage(role="system",
                                    content="You are a helpful support agent for a shoe shop.")]
    length = len(turns[0].content)
    while length < size:
        text = " ".join(rng.sample(_LINES, 3))
        turns.append(warden_pb2.ChatMessage(role="user" if len(turns) % 2 else "assistant",
                                            content=text))
        length += len(text)
    turns[1].content += " You can reach me at jo.miller@example.com."
    return turns


async def create_keys(target: str, auth) -> tuple[str, str]:
    """The tenant's key, and a second key of its user whose own scope has the pii policy."""
    plain = await tenant.create(target, auth)
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        guarded = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
            app_id=tenant.APP_ID, user_id=tenant.USER_ID, display_name="bench-pii"),
            metadata=auth)
        await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
            id=POLICY_ID, scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_API_KEY,
                                                id=guarded.api_key.id),
            pii=types_pb2.PiiConfig(action=types_pb2.GUARDRAIL_ACTION_LOG,
                                    entity_actions={"secret": types_pb2.GUARDRAIL_ACTION_BLOCK}))),
            metadata=auth)
        await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
            id=INJECTION_ID, scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_API_KEY,
                                                   id=guarded.api_key.id),
            prompt_injection=types_pb2.PromptInjectionConfig(
                action=types_pb2.GUARDRAIL_ACTION_LOG, threshold=0.5))), metadata=auth)
    return plain, guarded.plaintext


def authorize_call(api_key: str, size: int, guarded: bool) -> Call:
    make = tenant.requests(api_key)
    messages = conversation(size)

    async def call(stub: warden_pb2_grpc.WardenStub, n: int, spans: dict[str, float]) -> int:
        request = make(n)
        request.ClearField("messages")
        request.messages.extend(messages)
        reply = allowed(await stub.Authorize(request, timeout=CALL_TIMEOUT))
        found = [r for r in reply.results if r.policy_id == POLICY_ID]
        scored = [r for r in reply.results if r.policy_id == INJECTION_ID]
        if guarded != bool(found) or (guarded and "email in message 1" not in found[0].message):
            raise WrongAnswer("Authorize", f"the pii result is {found}")
        if guarded != bool(scored) or (guarded and "threshold 0.5" not in scored[0].message):
            raise WrongAnswer("Authorize", f"the prompt_injection result is {scored}")
        return reply.ByteSize()

    return call


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden ...")
    warden = bench.warden(database_url)
    keys = dict(zip(("without", "with"), asyncio.run(create_keys(warden.target, bench.auth)),
                    strict=True))

    def measure(name: str, round_: int) -> dict:
        size, policy = name.split(" / ")
        return run_load([warden.target], authorize_call(keys[policy], SIZES[size],
                                                        policy == "with"),
                        args.concurrency, args.warmup, args.seconds, [warden.pid])

    names = [f"{size} / {policy}" for size in SIZES for policy in keys]
    runs = alternate(args.rounds, names, measure)
    for name, results in runs.items():
        for r in results:
            for p in problems_of(f"round {r['round']}, {name}", r):
                bench.problem(p)
    decisions = sum(r["ops"] for results in runs.values() for r in results)
    harness.check_stored(bench, database_url, {
        "allowed decisions": ("SELECT count(*) FROM requests WHERE decision = 'allow'",
                              decisions)})
    return {"runs": runs,
            "medians": {name: medians(results, FIGURES) for name, results in runs.items()},
            "prompt_chars": {size: sum(len(m.content) for m in conversation(n))
                             for size, n in SIZES.items()}}


def report(context: dict, results: dict) -> None:
    med = results["medians"]
    rows = []
    for size in SIZES:
        without, with_ = med[f"{size} / without"], med[f"{size} / with"]
        for label, m in (("without", without), ("with guardrails", with_)):
            rows.append([f"{size} ({results['prompt_chars'][size]:,} chars)", label,
                         num(m["ops_per_s"], 1), num(m["p50_ms"], 2), num(m["p99_ms"], 2),
                         num(m["server_cpu_ms"], 3)])
        rows.append([size, "**with/without**", ratio(without["ops_per_s"], with_["ops_per_s"]),
                     f"**{ratio(without['p50_ms'], with_['p50_ms'])}**",
                     ratio(without["p99_ms"], with_["p99_ms"]),
                     ratio(without["server_cpu_ms"], with_["server_cpu_ms"])])
    print(table(["prompt", "policy", "calls/s:", "p50 ms:", "p99 ms:", "server CPU ms/op:"],
                rows, f"**Authorize** with and without a pii policy (every kind) and a "
                f"prompt_injection policy, concurrency "
                f"{context['concurrency']}, medians of {context['rounds']} rounds of "
                f"{context['seconds_s']:g} s"))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each run")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds run but not measured before each run")
    p.add_argument("--concurrency", type=int, default=1, help="calls in flight")
    args = p.parse_args()
    harness.positive(p, args, "rounds", "concurrency")
    harness.positive(p, args, "seconds", at_least=0.1)
    harness.main(p, work, report, lambda a: {
        "rounds": a.rounds, "seconds_s": a.seconds, "warmup_s": a.warmup,
        "concurrency": a.concurrency}, args)


if __name__ == "__main__":
    main()
