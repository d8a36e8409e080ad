"""HTTP statuses of a step service's failures, and the error bodies it sends.

======================================================  ======  ===========================
failure                                                 status  ``error.code``
======================================================  ======  ===========================
body not a JSON object, bad ``?stream=``                400     invalid_body, invalid_query
no such step                                            404     step_not_found
body over ``max_body_bytes``                            413     body_too_large
missing / unknown input, a value the step cannot take   422     missing_input, unknown_input,
                                                                invalid_input
the upstream refused the request built from the inputs  422     the upstream's code
  (400 or 422: too long for the model...)
input flagged by the step's moderation ``guard``        422     input_flagged
``max_cost`` cannot cover the request                   402     budget_exceeded
upstream 429 after chatstep's retries                   429     the upstream's code;
                                                                ``Retry-After`` always set
server busy (``concurrency`` + ``max_queue`` taken)     503     server_busy, ``Retry-After``
upstream 5xx or unreachable after retries               503     upstream_unavailable
backend unavailable here (no [local] extra)             503     backend_unavailable
upstream answered but unusably (invalid body, output    502     invalid_response,
  not JSON / not the schema / cut at max_tokens, answer         invalid_output, output_flagged,
  flagged, upstream 401/403/404: the server's key or            upstream_refused
  model is wrong, not the caller's)
upstream timed out                                      504     upstream_timeout
anything else (logged, never shown)                     500     server_error / step_misconfigured
======================================================  ======  ===========================

402 for the budget, not 429: the cap is the server's and does not refill with time, so a
client's retry loop would wait in vain. Upstream 401/403 become 502 so that a client never
mistakes the server's bad upstream key for its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chatstep.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BackendUnavailableError,
    BudgetExceededError,
    ChatstepError,
    ConfigError,
    FlaggedContentError,
    InvalidResponseError,
    OutputError,
    RateLimitError,
    SecretNotFoundError,
    redact,
)

if TYPE_CHECKING:
    from chatstep.mapping.ratelimit import RateLimiter
    from chatstep.serving.catalog import ServedStep

__all__ = ["RequestProblem", "error_response_parts", "render_problem"]

_logger = logging.getLogger("chatstep.serving")
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "budget_exceeded",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class RequestProblem(Exception):
    """A request the service refuses, with its status and error fields.

    Control flow inside the service, like an HTTP exception: it always becomes an error response
    (:func:`error_response_parts`) and never reaches a caller of chatstep.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        details: Sequence[RequestProblem] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.details = list(details)

    @classmethod
    def combine(cls, problems: Sequence[RequestProblem]) -> RequestProblem:
        """One problem standing for several (the first one's fields, all listed in details)."""
        first = problems[0]
        if len(problems) == 1:
            return first
        message = "; ".join(p.message for p in problems)
        return cls(first.status, message, param=first.param, code=first.code, details=problems)


def render_problem(exc: ConfigError, served: ServedStep) -> RequestProblem:
    """A ConfigError from rendering ``served`` for some inputs, as the 422 naming the input."""
    if isinstance(exc, SecretNotFoundError):
        # The server's configuration, not the caller's input: no secret name to the caller.
        _logger.error("step %s cannot be sent: %s", served.id, exc)
        return RequestProblem(
            500,
            f"step {served.id!r} is misconfigured on the server (see the server log)",
            code="step_misconfigured",
        )
    if exc.field and (exc.field == "retrieve" or exc.field.startswith("retrieve.index")):
        # A missing or empty index, or one of another dimension: the server's, not the input's.
        _logger.error("step %s cannot be sent: %s", served.id, exc)
        return RequestProblem(
            500,
            f"step {served.id!r} is misconfigured on the server (see the server log)",
            code="step_misconfigured",
        )
    names = served.inputs_of(exc.field) if exc.field else []
    param = names[0] if len(names) == 1 else None
    via = f"input {', '.join(names)}: " if names else ""
    return RequestProblem(422, f"{via}{exc}", param=param, code="invalid_input")


def _retry_after(exc: APIError, limiter: RateLimiter | None) -> int:
    wait = exc.retry_after
    if wait is None and limiter is not None:
        wait = limiter.paused_for or None
    return max(1, math.ceil(wait)) if wait is not None and math.isfinite(wait) else 1


def _classify(exc: BaseException, limiter: RateLimiter | None) -> RequestProblem:
    """The status, code and message standing for ``exc``."""
    if isinstance(exc, RequestProblem):
        return exc
    message = redact(str(exc)) if isinstance(exc, ChatstepError) else ""
    if isinstance(exc, BudgetExceededError):
        return RequestProblem(402, message, code="budget_exceeded")
    if isinstance(exc, FlaggedContentError):
        stage = "input" if exc.stage == "input" else "output"
        return RequestProblem(422 if stage == "input" else 502, message, code=f"{stage}_flagged")
    if isinstance(exc, OutputError):
        return RequestProblem(502, message, code="invalid_output")
    if isinstance(exc, BackendUnavailableError):
        return RequestProblem(503, message, code="backend_unavailable")
    if isinstance(exc, APIError):
        return _upstream(exc, message, limiter)
    if isinstance(exc, ConfigError):
        _logger.error("a step failed on the server's configuration: %s", exc)
        return RequestProblem(
            500,
            "the step is misconfigured on the server (see the server log)",
            code="step_misconfigured",
        )
    _logger.error("unexpected error while serving a step", exc_info=exc)
    return RequestProblem(
        500,
        "the server failed while handling the request (see the server log)",
        code="server_error",
    )


def _upstream(exc: APIError, message: str, limiter: RateLimiter | None) -> RequestProblem:
    status = exc.status_code
    if isinstance(exc, RateLimitError) or status == 429:
        return RequestProblem(
            429, message, code=exc.code or "rate_limited", retry_after=_retry_after(exc, limiter)
        )
    if isinstance(exc, APITimeoutError):
        return RequestProblem(504, message, code="upstream_timeout")
    if isinstance(exc, InvalidResponseError):
        return RequestProblem(502, message, code="invalid_response")
    if isinstance(exc, APIConnectionError) or (status is not None and status >= 500):
        retry = _retry_after(exc, None) if exc.retry_after is not None else None
        return RequestProblem(503, message, code="upstream_unavailable", retry_after=retry)
    if status in (400, 422):
        return RequestProblem(422, message, code=exc.code or "upstream_rejected_input")
    return RequestProblem(502, message, code="upstream_refused")


def error_response_parts(
    exc: BaseException, limiter: RateLimiter | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers) of the error response for ``exc``."""
    problem = _classify(exc, limiter)
    status = problem.status
    error: dict[str, Any] = {
        "message": redact(problem.message),
        "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": problem.param,
        "code": problem.code,
    }
    if problem.details:
        error["details"] = [
            {"param": d.param, "code": d.code, "message": redact(d.message)}
            for d in problem.details
        ]
    headers = {}
    if problem.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(problem.retry_after)))
    return status, {"error": error}, headers
