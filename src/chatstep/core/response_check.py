"""What counts as an answer: every 2xx body is shape-checked before anything uses it.

OpenAI-compatible servers do not always say "error" with a status. OpenRouter, vLLM, LiteLLM and
proxies send ``200 {"error": {...}}``; overloaded servers send ``200 {"choices": []}``; vLLM puts
``{"code": 504, "type": "GatewayTimeout"}`` into a stream. :func:`check_response` turns each into
the typed error it stands for, so no such answer is ever returned, cached, journaled or logged as
a success:

- an ``error`` object becomes the :class:`~chatstep.errors.APIStatusError` its ``code`` / ``type``
  names, as if that status had come (502 -> ``InternalServerError``, ``rate_limit_exceeded`` ->
  ``RateLimitError``...); ``status_code`` is the status it stands for and ``body`` keeps it;
- a missing or empty collection (chat ``choices`` each with a ``message``, ``text_completion``
  ``choices`` each with a ``text``, embeddings ``data``, moderation ``results``) is an
  :class:`~chatstep.errors.InvalidResponseError` (retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatstep.errors import APIError, InvalidResponseError, error_for_status, redact

__all__ = ["check_response", "error_from_object", "status_for_error"]

# Error types and codes sent without a usable status, as the status they stand for.
_NAMED_STATUSES: dict[str, int] = {
    "invalid_request_error": 400,
    "invalid_request": 400,
    "bad_request": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "permission_denied": 403,
    "not_found_error": 404,
    "not_found": 404,
    "model_not_found": 404,
    "conflict": 409,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "requests": 429,
    "tokens": 429,
    "insufficient_quota": 429,
    "timeout": 504,
    "gatewaytimeout": 504,
    "gateway_timeout": 504,
    "overloaded": 503,
    "overloaded_error": 503,
    "service_unavailable": 503,
    "serviceunavailable": 503,
    "server_error": 500,
    "internal_error": 500,
    "internal_server_error": 500,
    "internalservererror": 500,
    "api_error": 500,
    "badgateway": 502,
    "bad_gateway": 502,
}

_COLLECTIONS = {"embeddings": "data", "moderations": "results"}


def _as_status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 400 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit() and 400 <= int(value) <= 599:
        return int(value)
    return None


def status_for_error(error: Mapping[str, Any]) -> int:
    """The HTTP status an error object stands for: its numeric code, else its code or type name.

    Unknown names count as 500 (a server that says "error" without saying which failed).
    """
    for key in ("code", "status", "status_code"):
        status = _as_status(error.get(key))
        if status is not None:
            return status
    for key in ("code", "type"):
        name = error.get(key)
        if isinstance(name, str) and name.lower() in _NAMED_STATUSES:
            return _NAMED_STATUSES[name.lower()]
    return 500


def error_from_object(
    error: Any,
    where: str,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
    should_retry: bool | None = None,
) -> APIError:
    """The typed error an ``error`` object found in a 2xx body or a stream event stands for.

    ``where`` names the request (``"POST /chat/completions"``). The error's ``status_code`` is the
    status the object stands for (:func:`status_for_error`); ``code`` is its code as text.
    """
    detail: Mapping[str, Any] = error if isinstance(error, Mapping) else {"message": str(error)}
    status = status_for_error(detail)
    raw_code = detail.get("code")
    code = str(raw_code) if isinstance(raw_code, str | int) and raw_code != "" else None
    if code is None and isinstance(detail.get("type"), str):
        code = str(detail["type"])
    message = detail.get("message")
    text = message if isinstance(message, str) and message else "no message"
    return error_for_status(status)(
        f"{where} -> a success status carrying an error ({code or status}): {redact(text)}",
        status_code=status,
        code=code,
        request_id=request_id,
        retry_after=retry_after,
        should_retry=should_retry,
        body=dict(detail),
    )


def check_response(endpoint: str, body: Any, where: str) -> None:
    """Raise the typed error when a 2xx ``body`` for ``endpoint`` is not a valid answer.

    ``endpoint`` is ``"chat.completions"``, ``"completions"``, ``"embeddings"`` or
    ``"moderations"``.
    Raises :class:`~chatstep.errors.APIStatusError` subclasses (an error object) or
    :class:`~chatstep.errors.InvalidResponseError` (no answer in it).
    """
    if not isinstance(body, Mapping):
        raise InvalidResponseError(f"{where}: the response body is not a JSON object")
    if body.get("error") not in (None, {}, ""):
        raise error_from_object(body["error"], where)
    key = _COLLECTIONS.get(endpoint, "choices")
    items = body.get(key)
    if not isinstance(items, list) or not items:
        shown = "missing" if key not in body else f"{items!r}"[:80]
        raise InvalidResponseError(
            f"{where}: the answer has no {key} ({key} is {shown}); the server sent a success "
            "status without a result, so it is retried",
            body=_clip(body),
        )
    if endpoint == "completions":
        for i, choice in enumerate(items):
            if not isinstance(choice, Mapping) or not isinstance(choice.get("text"), str):
                raise InvalidResponseError(
                    f"{where}: choices[{i}] has no text; the answer is incomplete",
                    body=_clip(body),
                )
    elif key == "choices":
        for i, choice in enumerate(items):
            if not isinstance(choice, Mapping) or not isinstance(choice.get("message"), Mapping):
                raise InvalidResponseError(
                    f"{where}: choices[{i}] has no message object; the answer is incomplete",
                    body=_clip(body),
                )


def _clip(body: Mapping[str, Any]) -> dict[str, Any]:
    # Keep the error's body small: a broken answer can be large.
    return {key: body[key] for key in list(body)[:12] if key != "data"}
