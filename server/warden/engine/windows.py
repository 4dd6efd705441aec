"""Sliding windows as buckets: the arithmetic of warden_lease (migrations/0003_quotas.sql) in
Python, for bench/sliding_window.py and for the test that keeps the two in step.

A window of W seconds is split into BUCKETS buckets of W / BUCKETS seconds, aligned on the Unix
epoch. Everything handed out is counted in the bucket it was handed out in; a lease is only
spent while its bucket is current. At time t the counter counts every bucket that overlaps the
window (t - W, t] at any moment while the current bucket lasts: the current bucket and the
BUCKETS before it, the oldest one whole. No window of W ever holds more than the limit; the
price is that capacity frees up to one bucket late (at most 1 / (BUCKETS + 1) of the limit,
under sustained saturation).
"""

from __future__ import annotations

import math

BUCKETS = 120


def bucket_start(t: float, window: float) -> float:
    """Start of the bucket holding time t (seconds since the epoch)."""
    width = window / BUCKETS
    return math.floor(t / width) * width


def counted_from(t: float, window: float) -> float:
    """The oldest bucket start counted at time t."""
    return bucket_start(t, window) - window
