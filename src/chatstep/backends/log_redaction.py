"""A logging filter that keeps API keys out of the HTTP libraries' DEBUG logs.

The OpenAI SDK, httpx/httpx2 and httpcore/httpcore2 log requests at DEBUG; depending on their
versions a record may carry the request options with their headers (``Authorization: Bearer``,
``api-key``) or an error body quoting a masked key. :func:`install_log_redaction` puts
:class:`KeyRedactingFilter` on those libraries' loggers, so every record they emit is passed
through :func:`chatstep.errors.redact` before any handler sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from chatstep.errors import redact

__all__ = ["HTTP_LOGGERS", "KeyRedactingFilter", "install_log_redaction"]

HTTP_LOGGERS: tuple[str, ...] = (
    "openai",
    "openai._base_client",
    "openai._response",
    "openai._legacy_response",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "httpcore2",
    "httpcore2.connection",
    "httpcore2.http11",
    "httpcore2.http2",
    "httpcore2.proxy",
    "httpcore2.socks",
)
"""Loggers filtered, with every other logger under their top-level names at install time."""

_ROOTS = frozenset(name.split(".")[0] for name in HTTP_LOGGERS)
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "openai-api-key"})


class KeyRedactingFilter(logging.Filter):
    """Rewrites a record's message with credentials and key-shaped text redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, Mapping):
            args = _without_secret_headers(args)
        try:
            message = str(record.msg) % args if args else str(record.msg)
        except (TypeError, ValueError, KeyError):
            message = f"{record.msg} {args!r}" if args else str(record.msg)
        record.msg = redact(message)
        record.args = None
        return True


def _without_secret_headers(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: "<redacted>" if str(k).lower() in _SECRET_HEADERS else _without_secret_headers(v)
            for k, v in value.items()
        }
    return value


_FILTER = KeyRedactingFilter()


def install_log_redaction() -> None:
    """Put the redacting filter on the HTTP libraries' loggers (idempotent)."""
    names = set(HTTP_LOGGERS)
    names |= {name for name in logging.root.manager.loggerDict if name.split(".")[0] in _ROOTS}
    for name in sorted(names):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
