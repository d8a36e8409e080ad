"""The chatstep exception tree.

::

    ChatstepError
    ├── ConfigError                 a step definition or a value in it is wrong
    │   ├── TemplateError           a template failed to render or left the sandbox
    │   └── SecretNotFound          a secret named by the step is in no provider
    ├── APIError                    the endpoint (or the embedded model) answered with an error
    │   ├── BadRequestError             400 / 422: the request was refused as malformed
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404 (unknown model, unknown file...)
    │   ├── RateLimitError              429
    │   ├── ServerError                 5xx
    │   ├── APITimeoutError             no answer within the step's timeout
    │   └── APIConnectionError          the connection failed or was dropped
    ├── OutputError                 the answer arrived but is not what the step asked for
    │   ├── InvalidJSONError            JSON output (or tool-call arguments) that does not parse
    │   ├── SchemaMismatchError         JSON output that does not match the step's JSON Schema
    │   └── TruncatedOutputError        the model stopped at max_tokens (finish_reason "length")
    └── BackendUnavailableError     a backend cannot be used here (e.g. [local] missing)

Every error carries a message that names the field or the request, what is wrong, and how to fix
it. No message ever contains an API key: messages that may quote user values pass through
:func:`redact`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BackendUnavailableError",
    "BadRequestError",
    "ChatstepError",
    "ConfigError",
    "InvalidJSONError",
    "NotFoundError",
    "OutputError",
    "PermissionDeniedError",
    "RateLimitError",
    "SchemaMismatchError",
    "SecretNotFound",
    "ServerError",
    "TemplateError",
    "TruncatedOutputError",
    "redact",
]

# Shapes of API keys of OpenAI and common OpenAI-compatible vendors, and bearer tokens.
_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-\.=]{8,}"
    r"|(?i:api[_-]?key)\s*[=:]\s*[\"']?[A-Za-z0-9_\-\.]{16,})"
)
_registered_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret value so that :func:`redact` removes it from any text."""
    if len(value) >= 4:
        _registered_secrets.add(value)


def redact(text: str) -> str:
    """Remove known secrets and anything shaped like an API key from ``text``."""
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return _KEY_PATTERNS.sub("***", text)


class ChatstepError(Exception):
    """Base class of every error chatstep raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(ChatstepError):
    """A step definition, or a value rendered into it, is invalid.

    ``field`` is the dotted path of the offending field (``messages[1].role``), ``problem`` says
    what is wrong and ``fix`` how to put it right.
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{field}: " if field else ""
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{where}{problem}{hint}")


class TemplateError(ConfigError):
    """A template failed to parse or render, or tried to reach outside the sandbox."""

    def __init__(self, field: str, problem: str, fix: str = "", line: int | None = None) -> None:
        self.line = line
        at = f" (template line {line})" if line is not None else ""
        super().__init__(field, f"{problem}{at}", fix)


class SecretNotFound(ConfigError):
    """A secret named by the step was found in no secret provider."""

    def __init__(self, name: str, searched: str, field: str = "") -> None:
        self.name = name
        super().__init__(
            field,
            f"secret {name!r} was not found (searched: {searched})",
            f"set the environment variable {name}, add it to a .env file, "
            "or put a file of that name in the secrets directory",
        )


class APIError(ChatstepError):
    """The endpoint answered with an error, or could not be reached.

    The fields form the normalized failure record the retry policy decides on.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body
        super().__init__(message)

    @property
    def is_timeout(self) -> bool:
        return isinstance(self, APITimeoutError)

    @property
    def is_connection(self) -> bool:
        return isinstance(self, APIConnectionError)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_api_error, (type(self), self.message, self.__dict__))


def _rebuild_api_error(cls: type[APIError], message: str, state: dict[str, Any]) -> APIError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class BadRequestError(APIError):
    """400 or 422: the endpoint refused the request as malformed."""


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIError):
    """403: the key may not use this model, project or endpoint."""


class NotFoundError(APIError):
    """404: the model (or another named resource) does not exist for this key."""


class RateLimitError(APIError):
    """429: too many requests or tokens, or quota exhausted."""


class ServerError(APIError):
    """5xx: the endpoint failed."""


class APITimeoutError(APIError):
    """No answer arrived within the step's timeout."""


class APIConnectionError(APIError):
    """The connection could not be made or was dropped."""


class OutputError(ChatstepError):
    """The answer arrived but does not have the shape the step asked for.

    ``result`` keeps what was received, so nothing is lost.
    """

    def __init__(self, message: str, *, result: Any = None) -> None:
        self.result = result
        super().__init__(message)


class InvalidJSONError(OutputError):
    """JSON output or tool-call arguments that do not parse."""


class SchemaMismatchError(OutputError):
    """JSON output that does not match the step's JSON Schema."""


class TruncatedOutputError(OutputError):
    """The model stopped at its token limit, so the output is cut short."""


class BackendUnavailableError(ChatstepError):
    """A backend cannot be used in this environment."""


_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_for_status(status_code: int) -> type[APIError]:
    """The APIError subclass that stands for an HTTP status."""
    if status_code >= 500:
        return ServerError
    return _STATUS_ERRORS.get(status_code, APIError)
