"""The chatstep exception tree.

::

    ChatstepError
    ├── ConfigError                     a step definition or a value in it is wrong (.field)
    │   ├── TemplateError                   a template failed to render or left the sandbox
    │   ├── SecretNotFoundError             a secret named by the step is in no provider
    │   ├── JournalMismatchError            a map journal belongs to another step or dataset
    │   └── TrainingDataError               fine-tuning examples that a job would refuse (.problems)
    ├── APIError                        the endpoint (or the embedded model) failed the request
    │   ├── APIStatusError                  it answered with an HTTP error status (.status_code)
    │   │   ├── BadRequestError                 400
    │   │   ├── AuthenticationError             401
    │   │   ├── PermissionDeniedError           403
    │   │   ├── NotFoundError                   404 (unknown model, unknown file...)
    │   │   ├── ConflictError                   409
    │   │   ├── UnprocessableEntityError        422
    │   │   ├── RateLimitError                  429
    │   │   └── InternalServerError             5xx
    │   ├── APIConnectionError              the connection failed or was dropped
    │   │   └── APITimeoutError                 no answer within the step's timeout
    │   └── InvalidResponseError            a success status whose body is not a valid answer
    ├── OutputError                     the answer arrived but is not what the step asked for
    │   ├── InvalidJSONError                JSON output (or tool-call arguments) that does not parse
    │   ├── SchemaMismatchError             JSON output that does not match the step's JSON Schema
    │   ├── TruncatedOutputError            the model stopped at max_tokens (finish_reason "length")
    │   ├── MapRowsFailedError              rows of a flow's map task failed
    │   └── FlaggedContentError             a guarded step's input or answer was flagged (.stage)
    ├── BudgetExceededError             the next request would pass the run's cost cap (max_cost)
    ├── StorageError                    a file chatstep writes (output, journal...) failed (.path)
    │   └── ShardLeaseError                 a map shard is leased elsewhere, or its lease was lost
    └── BackendUnavailableError         a backend cannot be used here (e.g. [local] missing)

The API errors mirror the ``openai`` SDK's names and nesting, so ``except`` clauses written for
the SDK read the same here. Every error pickles with its fields (Prefect, Flyte and
multiprocessing send exceptions between processes). Every message names the field or the
request, what is wrong, and how to fix it; no message ever contains an API key: messages pass
through :func:`redact`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BackendUnavailableError",
    "BadRequestError",
    "BudgetExceededError",
    "ChatstepError",
    "ConfigError",
    "ConflictError",
    "FlaggedContentError",
    "InternalServerError",
    "InvalidJSONError",
    "InvalidResponseError",
    "JournalMismatchError",
    "MapRowsFailedError",
    "NotFoundError",
    "OutputError",
    "PermissionDeniedError",
    "RateLimitError",
    "SchemaMismatchError",
    "SecretNotFoundError",
    "ShardLeaseError",
    "StorageError",
    "TemplateError",
    "TrainingDataError",
    "TruncatedOutputError",
    "UnprocessableEntityError",
    "error_for_status",
    "may_hold_secret",
    "redact",
    "redact_data",
    "redact_secrets",
    "register_secret",
]

# Shapes of API keys of OpenAI and common OpenAI-compatible vendors, and bearer tokens.
_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-\.=]{8,}"
    r"|(?i:api[_-]?key)\s*[=:]\s*[\"']?[A-Za-z0-9_\-\.]{16,})"
)
# A masked key keeps its ends around a mask: ``sk-abc1****6789``, ``sk-...6789``, ``abcd…wxyz``.
# Ends are bounded so a long token without a mask costs linear time, not quadratic.
_MASKED = re.compile(r"([A-Za-z0-9_\-]{0,64})(\*{2,}|…|\.{3})([A-Za-z0-9_\-]{0,64})")
_MASK_MARKERS = ("**", "…", "...")
_MIN_FRAGMENT = 4
"""Prefixes and suffixes of a registered secret this long or longer are redacted next to a mask."""
_registered_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret value so that :func:`redact` removes it, and its masked ends, from text."""
    if len(value) >= _MIN_FRAGMENT:
        _registered_secrets.add(value)


def _is_key_end(token: str, *, before_mask: bool) -> bool:
    """Whether ``token`` (next to a mask) ends in a prefix, or starts with a suffix, of a secret."""
    for secret in _registered_secrets:
        for size in range(_MIN_FRAGMENT, min(len(token), len(secret)) + 1):
            edge = token[-size:] if before_mask else token[:size]
            if edge in (secret[:size], secret[-size:]):
                return True
    return False


def _masked_key(match: re.Match[str]) -> str:
    left, mask, right = match.groups()
    if left.startswith(("sk-", "pk-", "rk-")) or (mask.startswith("****") and left and right):
        return "***"
    if (left and _is_key_end(left, before_mask=True)) or (
        right and _is_key_end(right, before_mask=False)
    ):
        return "***"
    return match.group(0)


def may_hold_secret(text: str) -> bool:
    """Whether :func:`redact_secrets` could change ``text`` (a quick test before a deep walk)."""
    if not _registered_secrets:
        return False
    # "\\u2026" is "…" escaped in JSON text.
    return any(secret in text for secret in _registered_secrets) or any(
        marker in text for marker in (*_MASK_MARKERS, "\\u2026")
    )


def redact_secrets(text: str) -> str:
    """``text`` without registered secrets or their masked ends (``sk-abc1****6789``).

    Unlike :func:`redact`, text merely shaped like a key is kept: this is for answers (a model's
    output may legitimately say ``sk-...``), where only the real secrets must go.
    """
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    if _registered_secrets and any(m in text for m in _MASK_MARKERS):
        text = _MASKED.sub(_masked_key, text)
    return text


def redact(text: str) -> str:
    """Remove known secrets, masked keys and anything shaped like an API key from ``text``."""
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    if any(m in text for m in _MASK_MARKERS):
        text = _MASKED.sub(_masked_key, text)
    return _KEY_PATTERNS.sub("***", text)


def redact_data(value: Any, *, shapes: bool = True) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted.

    With ``shapes`` (the default) strings go through :func:`redact`; without, through
    :func:`redact_secrets`. Dicts and lists are copied; other values are returned as they are.
    """
    if isinstance(value, str):
        return redact(value) if shapes else redact_secrets(value)
    if isinstance(value, dict):
        return {
            redact_data(k, shapes=shapes): redact_data(v, shapes=shapes) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_data(v, shapes=shapes) for v in value]
    return value


def _rebuild(cls: type[ChatstepError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ChatstepError(Exception):
    """Base class of every error chatstep raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take their fields as keyword or extra arguments, so the default pickling
        # (``cls(*args)``) cannot rebuild them: restore the message and the fields directly.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


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


class SecretNotFoundError(ConfigError):
    """A secret named by the step was found in no secret provider (``.name``)."""

    def __init__(self, name: str, searched: str, field: str = "") -> None:
        self.name = name
        super().__init__(
            field,
            f"secret {name!r} was not found (searched: {searched})",
            f"set the environment variable {name}, add it to a .env file, "
            "or put a file of that name in the secrets directory",
        )


class JournalMismatchError(ConfigError):
    """The map journal was started for another step definition or another input."""


class TrainingDataError(ConfigError):
    """Fine-tuning examples a job would refuse or learn nothing from; ``problems`` lists each
    (``rows[3].messages[1].role: is 'robot' (use one of: ...)``), the first 20 in the message."""

    def __init__(
        self, field: str, problem: str, fix: str = "", problems: list[str] | None = None
    ) -> None:
        self.problems = list(problems or [])
        super().__init__(field, problem, fix)
        shown = self.problems[:20]
        listing = "".join(f"\n  {line}" for line in shown)
        if len(self.problems) > len(shown):
            listing += f"\n  ... and {len(self.problems) - len(shown)} more"
        if listing:
            self.args = (redact(self.args[0] + listing),)


class APIError(ChatstepError):
    """The endpoint failed the request: an error status, no connection, or an invalid answer.

    The fields form the normalized failure record the retry policy decides on: ``status_code``
    (``None`` when no status arrived; for an error object in a 2xx body or a stream, the status
    its code or type stands for), ``code`` (the body's error code), ``request_id``,
    ``retry_after`` (seconds, from ``retry-after-ms`` / ``retry-after``), ``should_retry`` (the
    ``x-should-retry`` header: ``True``/``False``, or ``None`` when absent), ``body`` (the
    error body, redacted) and ``rate_limits`` (the answer's ``x-ratelimit-*`` headers, names in
    lower case, or None: a 429 tells the limits and what is left of them too). ``result`` is what
    was received and paid for before the failure (a stream cut midway: its usage counted
    locally), else None.
    """

    result: Any = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        body: Any = None,
        rate_limits: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.rate_limits = rate_limits
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.should_retry = should_retry
        # Redacted before it is stored, so vars(), pickling and logs carry no key an endpoint
        # echoed into its error body.
        self.body = redact_data(body)
        super().__init__(message)

    @property
    def is_timeout(self) -> bool:
        return isinstance(self, APITimeoutError)

    @property
    def is_connection(self) -> bool:
        return isinstance(self, APIConnectionError)


class APIStatusError(APIError):
    """The endpoint answered with an HTTP error status (``status_code``)."""


class BadRequestError(APIStatusError):
    """400: the endpoint refused the request as malformed."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model, project or endpoint."""


class NotFoundError(APIStatusError):
    """404: the model (or another named resource) does not exist for this key."""


class ConflictError(APIStatusError):
    """409: the resource is in a conflicting state."""


class UnprocessableEntityError(APIStatusError):
    """422: the request parsed but could not be processed."""


class RateLimitError(APIStatusError):
    """429: too many requests or tokens, or quota exhausted."""


class InternalServerError(APIStatusError):
    """5xx: the endpoint failed."""


class APIConnectionError(APIError):
    """The connection could not be made or was dropped."""


class APITimeoutError(APIConnectionError):
    """No answer arrived within the step's timeout."""


class InvalidResponseError(APIError):
    """A success status whose body is not a valid answer (no choices, an error object...).

    Retried: a provider that sends an empty or half-formed answer usually sends a good one next.
    """


class OutputError(ChatstepError):
    """The answer arrived but does not have the shape the step asked for.

    ``result`` keeps what was received (usage and cost included), so nothing is lost.
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


class MapRowsFailedError(OutputError):
    """Rows of a flow's map task failed (each row's error is in the task's output ``rows``)."""


class FlaggedContentError(OutputError):
    """A chat step's ``guard`` found its input or its answer flagged by the Moderation API.

    ``stage`` is ``"input"`` (nothing was sent to the chat model) or ``"output"`` (the answer,
    paid for, is in ``result``); ``categories`` lists the flagged categories, ``scores`` maps
    each of them to its highest score (0..1) over the moderated texts; ``model`` is the
    moderation model.
    """

    def __init__(
        self,
        message: str,
        *,
        stage: str,
        categories: list[str],
        scores: dict[str, float],
        model: str | None = None,
        result: Any = None,
    ) -> None:
        self.stage = stage
        self.categories = categories
        self.scores = scores
        self.model = model
        super().__init__(message, result=result)


class BudgetExceededError(ChatstepError):
    """The next request could pass the run's cost cap, so it was not sent.

    ``spent`` is what the run has cost so far and ``limit`` the cap, both in USD; ``next_cost``
    is the worst-case estimate of the request that was refused (``None`` when the cap was passed
    by an answer's actual cost).
    """

    def __init__(
        self, message: str, *, spent: float, limit: float, next_cost: float | None = None
    ) -> None:
        self.spent = spent
        self.limit = limit
        self.next_cost = next_cost
        super().__init__(message)


class StorageError(ChatstepError):
    """A file chatstep reads or writes for the run (output, journal, history) failed (``path``).

    Raised for a read-only directory, a full disk, or a file another run holds; the run's journal
    stays consistent, so the same command resumes once the cause is fixed.
    """

    def __init__(self, path: str, problem: str, fix: str = "") -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{path}: {problem}{hint}")


class ShardLeaseError(StorageError):
    """A shard of a scaled-out map is leased by another live worker, or this worker lost its
    lease (``path`` names the shard): it sends nothing more for that shard."""


class BackendUnavailableError(ChatstepError):
    """A backend cannot be used in this environment."""


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_for_status(status_code: int) -> type[APIStatusError]:
    """The :class:`APIStatusError` subclass that stands for an HTTP status."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_ERRORS.get(status_code, APIStatusError)
