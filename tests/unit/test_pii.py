"""The PII detectors on a labelled corpus (tests/unit/pii_corpus.py): precision and recall per
kind, printed, with the targets asserted; and the cost of crafted messages, which must stay
linear."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.unit.pii_corpus import corpus
from warden.guardrails.pii import KINDS, compile_custom, redact, scan

PRECISION, RECALL = 0.97, 0.95


def evaluate() -> dict[str, tuple[float, float, int, int, int]]:
    """Per kind: (precision, recall, true positives, false positives, false negatives). A
    finding is right when a labelled item of its kind overlaps it."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for text, labels in corpus():
        found = [(f.kind, f.start, f.end) for f in scan([text], KINDS)]
        for kind, start, end in found:
            if any(k == kind and s < end and start < e for k, s, e in labels):
                tp[kind] += 1
            else:
                fp[kind] += 1
        for kind, start, end in labels:
            if not any(k == kind and s < end and start < e for k, s, e in found):
                fn[kind] += 1
    return {kind: (tp[kind] / ((tp[kind] + fp[kind]) or 1), tp[kind] / ((tp[kind] + fn[kind]) or 1),
                   tp[kind], fp[kind], fn[kind]) for kind in KINDS}


def test_the_corpus_is_large_and_mostly_clean():
    messages = corpus()
    clean = sum(1 for _, labels in messages if not labels)
    assert len(messages) >= 500 and clean >= len(messages) - clean
    assert {kind for _, labels in messages for kind, _, _ in labels} == set(KINDS)


def test_precision_and_recall_per_kind(capsys):
    scores = evaluate()
    with capsys.disabled():
        print("\nPII detectors on the labelled corpus (kind: precision recall, tp fp fn)")
        for kind, (p, r, tp, fp, fn) in scores.items():
            print(f"  {kind:12} {p:.3f} {r:.3f}  {tp} {fp} {fn}")
    for kind, (p, r, *_) in scores.items():
        assert p >= PRECISION and r >= RECALL, (kind, p, r)


def test_redaction_replaces_each_span_with_its_kind():
    text = "Mail alice@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111."
    findings = scan([text], KINDS)
    assert [f.kind for f in findings] == ["email", "phone", "credit_card"]
    assert redact(text, findings) == "Mail [EMAIL] or call [PHONE], card [CREDIT_CARD]."


def test_a_custom_pattern_runs_on_re2_and_a_bad_one_is_refused():
    employee = compile_custom("employee_id", r"EMP-\d{6}")
    findings = scan(["badge EMP-004211 lost"], (), [employee])
    assert [(f.kind, f.start, f.end) for f in findings] == [("employee_id", 6, 16)]
    for bad in ("", "(a", r"(a)\1", "(?=x)y"):
        with pytest.raises(ValueError):
            compile_custom("bad", bad)


@pytest.mark.parametrize("crafted", [
    "1" * 32768, "1-" * 16384, "a@" * 16384, "a." * 16384, "+1 " * 10000,
    ("x" * 60 + "@") * 500, "key " * 8000, "-----BEGIN PRIVATE KEY-----" + "A" * 30000,
    ":" * 32768, "1." * 16384, "AKIA" * 8000, "eyJ" + "a" * 20000 + ".eyJ" + "b" * 10000,
])
def test_no_crafted_message_takes_the_detectors_more_than_50_ms(crafted):
    scan([crafted], KINDS)  # warm
    start = time.perf_counter()
    scan([crafted], KINDS)
    assert time.perf_counter() - start < 0.05
