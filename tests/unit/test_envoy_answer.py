"""Check's allowed answer, encoded straight to the wire, decodes to exactly the CheckResponse
protobuf builds field by field from the same parts."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2

from warden.api.envoy_authz import allowed_response

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def built(upstream, downstream, remove, metadata) -> external_auth_pb2.CheckResponse:
    def options(pairs):
        return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v),
                                           append_action=_OVERWRITE) for k, v in pairs]

    answer = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=options(upstream), headers_to_remove=remove,
            response_headers_to_add=options(downstream)))
    answer.dynamic_metadata.update(metadata)
    return answer


CASES = {
    "typical": (
        [("x-warden-request-id", "r-1"), ("x-warden-reservation-id", "ab" * 16),
         ("x-warden-model", "gpt-4o-mini"), ("x-warden-max-tokens", "256")],
        [("x-ratelimit-limit-requests", "1000000000"), ("x-ratelimit-reset-requests", "6m0s"),
         ("ratelimit-policy", '"app-rpm";q=100;w=60'), ("ratelimit", '"app-rpm";r=99;t=60')],
        ["authorization", "x-api-key", "x-warden-provider"],
        {"decision_id": "d" * 32, "org_id": "acme", "model": "gpt-4o-mini", "reason": ""}),
    "not an LLM call": ([("x-warden-request-id", "r-2")], [], ["authorization"], {}),
    "long and non-ASCII values": (
        [("x-warden-model", "modèle-" + "m" * 300)], [("x", "")], [],
        {"model": "模型" * 100, "request_id": "x" * 128}),
}


@pytest.mark.parametrize("case", CASES)
def test_the_encoded_answer_is_the_built_one(case):
    upstream, downstream, remove, metadata = CASES[case]
    encoded = external_auth_pb2.CheckResponse.FromString(
        allowed_response(upstream, downstream, remove, metadata))
    assert encoded == built(upstream, downstream, remove, metadata)
    assert encoded.ok_response.headers[0].header.key == upstream[0][0]
