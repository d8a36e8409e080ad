"""The shape check and the retry decision on the failure records it makes (issue 10)."""

from __future__ import annotations

from typing import Any

import pytest

from chatstep.core.response_check import check_response, error_from_object, status_for_error
from chatstep.core.retry import RetryPolicy
from chatstep.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    InvalidResponseError,
    RateLimitError,
)

POLICY = RetryPolicy()


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (
            {"message": "overloaded", "type": "server_error", "code": "overloaded"},
            503,
            InternalServerError,
        ),
        ({"message": "Provider returned error", "code": 502}, 502, InternalServerError),
        ({"code": 504, "type": "GatewayTimeout", "object": "error"}, 504, InternalServerError),
        ({"code": "504"}, 504, InternalServerError),
        ({"type": "server_error"}, 500, InternalServerError),
        ({"code": "rate_limit_exceeded", "type": "requests"}, 429, RateLimitError),
        ({"type": "invalid_request_error"}, 400, BadRequestError),
        ({"code": "invalid_api_key"}, 401, AuthenticationError),
        ({"message": "something"}, 500, InternalServerError),
        ("a bare string", 500, InternalServerError),
    ],
)
def test_error_objects_are_typed_by_code_and_type(error: Any, status: int, kind: type) -> None:
    made = error_from_object(error, "POST /chat/completions")
    assert type(made) is kind
    assert made.status_code == status
    assert made.body is not None
    if isinstance(error, dict):
        assert status_for_error(error) == status


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("chat.completions", {"choices": []}),
        ("chat.completions", {"id": "x"}),
        ("chat.completions", {"choices": [{"index": 0}]}),
        ("chat.completions", {"choices": None}),
        ("embeddings", {"object": "list", "data": []}),
        ("moderations", {"id": "m"}),
        ("chat.completions", []),
    ],
)
def test_a_body_without_an_answer_is_invalid(endpoint: str, body: Any) -> None:
    with pytest.raises(InvalidResponseError):
        check_response(endpoint, body, "POST /x")


def test_a_valid_body_passes() -> None:
    check_response("chat.completions", {"choices": [{"message": {"content": None}}]}, "w")
    check_response("embeddings", {"data": [{"embedding": [0.1]}]}, "w")
    check_response("moderations", {"results": [{"flagged": False}]}, "w")
    check_response("chat.completions", {"choices": [{"message": {}}], "error": None}, "w")


def test_policy_retries_invalid_responses_and_honours_x_should_retry() -> None:
    assert POLICY.is_retryable(InvalidResponseError("x"))
    assert POLICY.is_retryable(error_from_object({"code": 502}, "w"))
    assert not POLICY.is_retryable(error_from_object({"type": "invalid_request_error"}, "w"))
    assert POLICY.is_retryable(BadRequestError("x", status_code=400, should_retry=True))
    assert not POLICY.is_retryable(InternalServerError("x", status_code=503, should_retry=False))
    assert not POLICY.is_retryable(InvalidResponseError("x", should_retry=False))
    assert POLICY.is_retryable(APIError("x", should_retry=True))
    assert POLICY.delay_for(InvalidResponseError("x"), 1) is not None
