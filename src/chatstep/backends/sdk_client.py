"""The one place chatstep builds an ``openai`` SDK client and translates the SDK's exceptions.

The HTTP backend and the Batch API client both call :func:`make_client` and :func:`call_sdk`, so
a connection means the same thing to both: the SDK's retries off (chatstep's policy decides),
``base_url``'s query as default query parameters, and Azure OpenAI through the SDK's own
``AsyncAzureOpenAI`` (key in the ``api-key`` header, ``api-version`` on every request, the model
as the deployment) when the connection has an ``api_version``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from chatstep.core.response_check import error_from_object
from chatstep.core.retry import parse_retry_after
from chatstep.errors import APIConnectionError, APIError, APITimeoutError, error_for_status, redact

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from chatstep.core.connection import Connection

__all__ = ["call_sdk", "error_from_sdk", "make_client", "should_retry_header"]

T = TypeVar("T")


def make_client(conn: Connection, *, timeout: float | None = None) -> AsyncOpenAI:
    """An ``AsyncOpenAI`` (or ``AsyncAzureOpenAI``) client for ``conn``, with retries off."""
    from chatstep.core.connection import NO_KEY_PLACEHOLDER

    common: dict[str, Any] = {
        "api_key": conn.api_key or NO_KEY_PLACEHOLDER,
        "organization": conn.organization,
        "project": conn.project,
        "max_retries": 0,
        "default_headers": dict(conn.headers),
        "default_query": dict(conn.query) or None,
    }
    if timeout is not None:
        common["timeout"] = timeout
    if conn.api_version is not None and conn.base_url is not None:
        from openai import AsyncAzureOpenAI

        return AsyncAzureOpenAI(base_url=conn.base_url, api_version=conn.api_version, **common)
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=conn.base_url, **common)


def should_retry_header(headers: Any) -> bool | None:
    """The ``x-should-retry`` header as True / False, or None when absent or unreadable."""
    value = str(headers.get("x-should-retry") or "").strip().lower()
    return {"true": True, "false": False}.get(value)


def error_from_sdk(exc: Exception, method: str, path: str) -> APIError:
    """An OpenAI SDK exception as the chatstep error it stands for."""
    import openai

    where = f"{method} {path}"
    if isinstance(exc, openai.APITimeoutError):
        return APITimeoutError(f"{where}: no answer within the step's timeout")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        body = exc.body if isinstance(exc.body, dict) else {}
        raw_code = body.get("code")
        code = str(raw_code) if isinstance(raw_code, str | int) and raw_code != "" else None
        detail = body.get("message") if isinstance(body.get("message"), str) else exc.message
        label = f"{status} {code}" if code else str(status)
        return error_for_status(status)(
            f"{where} -> {label}: {redact(str(detail))}",
            status_code=status,
            code=code,
            request_id=headers.get("x-request-id"),
            retry_after=parse_retry_after(headers),
            should_retry=should_retry_header(headers),
            body=body or None,
            # A 429 tells the limits and what is left of them too: the limiter reads them.
            rate_limits={
                k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")
            }
            or None,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return APIConnectionError(f"{where}: connection failed: {type(cause).__name__}: {cause}")
    if isinstance(exc, openai.APIError) and exc.body is not None:
        # An error object in a stream event (the SDK raises a bare APIError for it).
        return error_from_object(exc.body, where)
    return APIError(f"{where}: {type(exc).__name__}: {redact(str(exc))}")


async def call_sdk(method: str, path: str, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Await one SDK call, its exceptions translated by :func:`error_from_sdk`."""
    import openai

    try:
        return await make()
    except openai.OpenAIError as exc:
        raise error_from_sdk(exc, method, path) from None
