"""Authorize's answer encoded from a compiled set's pre-encoded parts (api/answer.py) decodes to
exactly the message the plain path builds (convert.decision_to_proto), for every engine case:
allowed and denied, capped and lowered, static denials, cost caps, retry_after."""

from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.engine_cases import CASES, run
from warden.api import convert
from warden.api.answer import authorize_response
from warden.authorizer import Authorization
from warden.v1 import warden_pb2

DECIDED = [p for p in CASES if run(p).decision is not None]


def plain(a: Authorization) -> warden_pb2.AuthorizeResponse:
    reply = convert.decision_to_proto(a.decision, a.compiled.identity)
    reply.reservation_id = a.reservation_id
    return reply


@pytest.mark.parametrize("path", DECIDED, ids=[p.stem for p in DECIDED])
def test_the_encoded_answer_is_the_plain_one(path: Path) -> None:
    ran = run(path)
    a = Authorization(ran.compiled, ran.plan, ran.decision, "0123456789abcdef" * 2)
    first = authorize_response(a)
    assert warden_pb2.AuthorizeResponse.FromString(first) == plain(a)
    assert authorize_response(a) == first  # again, from the parts kept with the set


def test_limits_without_reset_or_remaining_encode_as_the_plain_path_does() -> None:
    ran = next(r for r in map(run, DECIDED) if r.decision.limits)
    limits = [replace(o, remaining=None, reset_time=None) for o in ran.decision.limits]
    limits[0] = replace(limits[0], remaining=-5)
    a = Authorization(ran.compiled, ran.plan, replace(ran.decision, limits=limits), "r" * 32)
    assert warden_pb2.AuthorizeResponse.FromString(authorize_response(a)) == plain(a)


def test_there_are_cases_of_every_kind() -> None:
    decisions = [run(p).decision for p in DECIDED]
    assert any(d.allowed for d in decisions) and any(not d.allowed for d in decisions)
    assert any(d.retry_after for d in decisions) and any(d.limits for d in decisions)
    assert any(run(p).compiled.route is None for p in DECIDED)  # a static denial
