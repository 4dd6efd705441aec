"""How far Warden's bucketed sliding window is from an exact sliding log.

    python bench/sliding_window.py [--seed 1] [--windows 20] [--json PATH]

A rate limit of L per window W (60 s here) is enforced in Postgres by counting buckets
(`warden_lease` in migrations/0003_quotas.sql; the same arithmetic in
server/warden/engine/windows.py): at time t a request of amount a is admitted iff the amounts
admitted in the buckets starting in [counted_from(t, W), bucket_start(t, W)], plus a, are at
most L, and it is then counted in bucket_start(t, W). The oldest bucket is counted whole, so
no window (t - W, t] should ever hold more than L; the price is capacity freed up to one bucket
late. The reference is an exact sliding log: admit iff the amounts admitted in (t - W, t], plus
a, are at most L.

Both see the same seeded traffic, --windows windows long, in four shapes: Poisson at 3x the
limit rate; on/off bursts at 10x; a rise from 0.2x to 3x and back; and bursts of requests of
1..4,000 tokens against 1,000,000 tokens a minute. For each shape, with BUCKETS (120, from
windows.py) and with 60 buckets for comparison, it prints the requests offered, the amounts
admitted by each (requests or tokens), the relative error |bucketed - exact| / exact, the
share of requests decided differently, and the most the bucketed counter admitted in any
window (t - W, t], evaluated at every admission (the sum only grows at admissions).

Under saturation from an empty start, admissions come in clusters that the buckets delay by
up to a bucket per window without dropping any; the delay reaches the totals only once it has
built up past the run's end, so 20 windows can show 0% where --windows 200 shows the steady
state (about 1 / (buckets + 1) under sustained saturation). Short runs of bursty traffic are
noisy the other way: one burst ending just before a late bucket frees capacity is lost.

Exits 1 if, with BUCKETS buckets, some window holds more than L, or if the local bucket
helper used for the comparison row disagrees with windows.py. Pure Python, deterministic for
a given --seed and --windows; under half a second for 20 windows on the development machine.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import harness
from harness import Bench, table

from warden.engine.windows import BUCKETS, bucket_start, counted_from

WINDOW = 60.0
COMPARED_BUCKETS = 60
# 2026-01-01T00:00:00Z: buckets are aligned on the Unix epoch, so simulate at real timestamps
# (with their float rounding) rather than near zero.
START = 1_767_225_600.0
REQUEST_LIMIT = 600
TOKEN_LIMIT = 1_000_000
MAX_TOKENS = 4_000
BURST_RATE = 10.0
BURST_SECONDS = (2.0, 6.0)
GAP_SECONDS = (5.0, 30.0)

BucketFn = Callable[[float, float], float]


@dataclass(frozen=True)
class Traffic:
    shape: str
    limit: int
    times: list[float]
    amounts: list[int]


@dataclass(frozen=True)
class Row:
    shape: str
    buckets: int
    offered: int
    exact: int
    bucketed: int
    disagree: int
    max_window: int
    limit: int

    @property
    def error(self) -> float:
        return abs(self.bucketed - self.exact) / self.exact if self.exact else 0.0


def arrivals(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    """A homogeneous Poisson process of `rate` per second on [start, end)."""
    out = []
    t = start + rng.expovariate(rate)
    while t < end:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def bursts(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    """Poisson at `rate` during bursts of 2-6 s, nothing in the 5-30 s gaps between them."""
    out = []
    t = start + rng.uniform(*GAP_SECONDS)
    while t < end:
        stop = min(t + rng.uniform(*BURST_SECONDS), end)
        out += arrivals(rng, rate, t, stop)
        t = stop + rng.uniform(*GAP_SECONDS)
    return out


def rise_and_fall(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    """Poisson whose rate goes from 0.2x `rate` up to 3x at mid-run and back (by thinning)."""
    peak = 3.0 * rate
    span = end - start

    def rate_at(t: float) -> float:
        return rate * (0.2 + 2.8 * (1.0 - math.cos(2.0 * math.pi * (t - start) / span)) / 2.0)

    return [t for t in arrivals(rng, peak, start, end) if rng.random() * peak < rate_at(t)]


def traffic(seed: int, windows: int) -> list[Traffic]:
    end = START + windows * WINDOW
    request_rate = REQUEST_LIMIT / WINDOW
    token_request_rate = TOKEN_LIMIT / ((1 + MAX_TOKENS) / 2) / WINDOW

    def rng(shape: str) -> random.Random:
        # A str seed is hashed with SHA-512, not Python's randomized hash: stable across runs.
        return random.Random(f"{seed}:{shape}")

    shapes = []
    for shape, times in (
        ("poisson 3x", arrivals(rng("poisson"), 3.0 * request_rate, START, end)),
        ("bursts 10x", bursts(rng("bursts"), BURST_RATE * request_rate, START, end)),
        ("ramp 0.2x-3x-0.2x", rise_and_fall(rng("ramp"), request_rate, START, end)),
    ):
        shapes.append(Traffic(shape, REQUEST_LIMIT, times, [1] * len(times)))
    r = rng("tokens")
    times = bursts(r, BURST_RATE * token_request_rate, START, end)
    amounts = [r.randint(1, MAX_TOKENS) for _ in times]
    shapes.append(Traffic("tokens, bursts 10x", TOKEN_LIMIT, times, amounts))
    return shapes


def bucket_fns(buckets: int) -> tuple[BucketFn, BucketFn]:
    """windows.py's bucket_start and counted_from for another bucket count."""

    def start(t: float, window: float) -> float:
        width = window / buckets
        return math.floor(t / width) * width

    def counted(t: float, window: float) -> float:
        return start(t, window) - window

    return start, counted


def helper_disagreements(shapes: Sequence[Traffic]) -> int:
    start, counted = bucket_fns(BUCKETS)
    return sum(
        start(t, WINDOW) != bucket_start(t, WINDOW) or counted(t, WINDOW) != counted_from(t, WINDOW)
        for s in shapes
        for t in s.times
    )


def exact_log(times: Sequence[float], amounts: Sequence[int], limit: int) -> list[bool]:
    log: deque[tuple[float, int]] = deque()
    used = 0
    admitted = []
    for t, a in zip(times, amounts, strict=True):
        edge = t - WINDOW
        while log and log[0][0] <= edge:
            used -= log.popleft()[1]
        ok = used + a <= limit
        if ok:
            log.append((t, a))
            used += a
        admitted.append(ok)
    return admitted


def bucketed(
    times: Sequence[float],
    amounts: Sequence[int],
    limit: int,
    start_of: BucketFn,
    counted_from_of: BucketFn,
) -> list[bool]:
    # Counted buckets, oldest first, as [start, amount]; times only grow, so buckets leave the
    # counted range from the left and the current one is always last.
    counted: deque[list] = deque()
    used = 0
    admitted = []
    for t, a in zip(times, amounts, strict=True):
        current = start_of(t, WINDOW)
        oldest = counted_from_of(t, WINDOW)
        while counted and counted[0][0] < oldest:
            used -= counted.popleft()[1]
        ok = used + a <= limit
        if ok:
            if counted and counted[-1][0] == current:
                counted[-1][1] += a
            else:
                counted.append([current, a])
            used += a
        admitted.append(ok)
    return admitted


def max_in_any_window(
    times: Sequence[float], amounts: Sequence[int], admitted: Sequence[bool]
) -> int:
    """The largest sum admitted in a window (t - W, t], over every admission time t."""
    log: deque[tuple[float, int]] = deque()
    used = 0
    most = 0
    for t, a, ok in zip(times, amounts, admitted, strict=True):
        if not ok:
            continue
        edge = t - WINDOW
        while log and log[0][0] <= edge:
            used -= log.popleft()[1]
        log.append((t, a))
        used += a
        most = max(most, used)
    return most


def admitted_sum(amounts: Sequence[int], admitted: Sequence[bool]) -> int:
    return sum(a for a, ok in zip(amounts, admitted, strict=True) if ok)


def measure(s: Traffic) -> list[Row]:
    exact = exact_log(s.times, s.amounts, s.limit)
    rows = []
    for buckets, (start_of, counted_from_of) in (
        (BUCKETS, (bucket_start, counted_from)),
        (COMPARED_BUCKETS, bucket_fns(COMPARED_BUCKETS)),
    ):
        got = bucketed(s.times, s.amounts, s.limit, start_of, counted_from_of)
        rows.append(
            Row(
                shape=s.shape,
                buckets=buckets,
                offered=len(s.times),
                exact=admitted_sum(s.amounts, exact),
                bucketed=admitted_sum(s.amounts, got),
                disagree=sum(e != b for e, b in zip(exact, got, strict=True)),
                max_window=max_in_any_window(s.times, s.amounts, got),
                limit=s.limit,
            )
        )
    return rows


def work(bench: Bench) -> dict:
    args = bench.args
    began = time.perf_counter()
    shapes = traffic(args.seed, args.windows)
    if mismatched := helper_disagreements(shapes):
        bench.problem(f"the local bucket helper disagrees with windows.py at {mismatched} "
                      "times")
    rows = [row for s in shapes for row in measure(s)]
    for r in rows:
        if r.buckets == BUCKETS and r.max_window > r.limit:
            bench.problem(f"{r.shape}: {r.max_window:,} admitted in one window, over the "
                          f"limit {r.limit:,}")
    return {"rows": [{**asdict(r), "error": r.error} for r in rows],
            "seconds": round(time.perf_counter() - began, 2)}


def report(context: dict, results: dict) -> None:
    print(table(["shape", "buckets:", "requests offered:", "exact admitted:",
                 "bucketed admitted:", "error %:", "disagreement %:", "max in any window / L:"],
                [[r["shape"], r["buckets"], f"{r['offered']:,}", f"{r['exact']:,}",
                  f"{r['bucketed']:,}", f"{100 * r['error']:.2f}",
                  f"{100 * r['disagree'] / r['offered']:.2f}",
                  f"{r['max_window']:,} / {r['limit']:,}"] for r in results["rows"]],
                f"W = {WINDOW:g} s, {context['windows']} windows, seed {context['seed']}; "
                "admitted in the limit's unit (requests, or tokens for the token shape)"))
    print(f"\n{results['seconds']:.1f} s")


def main() -> None:
    p = harness.parser(__doc__, database=False)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--windows", type=int, default=20, help="run length, in windows of 60 s")
    args = p.parse_args()
    harness.positive(p, args, "windows")
    harness.main(p, work, report, lambda a: {"seed": a.seed, "windows": a.windows}, args)


if __name__ == "__main__":
    main()
