"""The error tree: every error pickles and deep-copies with its fields; retry and exit codes."""

from __future__ import annotations

import ast
import copy
import pickle
from pathlib import Path
from typing import Any

import pytest

import chatstep
from chatstep import errors
from chatstep.cli.common import EXIT_CODES, exit_code_for
from chatstep.core.retry import RetryPolicy

SRC = Path(chatstep.__file__).parent

_API_FIELDS: dict[str, Any] = {
    "status_code": 409,
    "code": "conflict",
    "request_id": "req_123",
    "retry_after": 1.5,
    "should_retry": True,
    "body": {"error": {"message": "busy", "code": "conflict"}},
}


def _sample(cls: type[errors.ChatstepError]) -> errors.ChatstepError:
    """An instance of ``cls`` with every field set to a recognizable value."""
    if issubclass(cls, errors.SecretNotFoundError):
        return cls("MY_SECRET", "env, .env", field="api_key")
    if issubclass(cls, errors.TemplateError):
        return cls("prompt", "undefined variable 'x'", "pass -i x=...", line=3)
    if issubclass(cls, errors.ConfigError):
        return cls("messages[1].role", "is not a role", "use user or system")
    if issubclass(cls, errors.APIError):
        return cls("POST /chat/completions: busy", **_API_FIELDS)
    if issubclass(cls, errors.FlaggedContentError):
        return cls(
            "guard.input: flagged",
            stage="input",
            categories=["violence"],
            scores={"violence": 0.8},
            model="omni-moderation-latest",
        )
    if issubclass(cls, errors.OutputError):
        return cls("not JSON", result={"content": "oops", "usage": {"total_tokens": 3}})
    if issubclass(cls, errors.BudgetExceededError):
        return cls("over budget", spent=1.25, limit=1.0, next_cost=0.5)
    if issubclass(cls, errors.StorageError):
        return cls("out/rows.jsonl", "disk full", "free some space")
    return cls("the [local] extra is missing")


ERROR_CLASSES = [
    obj
    for name in errors.__all__
    if isinstance(obj := getattr(errors, name), type) and issubclass(obj, BaseException)
]


def test_every_error_class_is_sampled() -> None:
    assert len(ERROR_CLASSES) == 29
    assert all(issubclass(cls, errors.ChatstepError) for cls in ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_error_round_trips_with_fields(cls: type[errors.ChatstepError], how: str) -> None:
    original = _sample(cls)
    assert type(original) is cls
    copied = pickle.loads(pickle.dumps(original)) if how == "pickle" else copy.deepcopy(original)
    assert type(copied) is cls
    assert str(copied) == str(original)
    assert copied.message == original.message
    assert copied.args == original.args
    assert vars(copied) == vars(original)
    if cls not in (errors.ChatstepError, errors.BackendUnavailableError):  # the two without fields
        assert vars(original)  # so the comparison above is not empty-vs-empty
    if isinstance(original, errors.APIError):
        assert isinstance(copied, errors.APIError)
        assert copied.status_code == 409
        assert copied.body == _API_FIELDS["body"]


def test_redaction_survives_pickling() -> None:
    err = errors.APIError("bad key sk-abcdefghijklmnopqrstuvwxyz123456", status_code=401)
    assert "sk-abc" not in str(pickle.loads(pickle.dumps(err)))


def test_no_module_defines_an_error_outside_errors_py() -> None:
    # Jinja raises its own UndefinedError and SecurityError subclasses internally; the sandbox
    # turns them into a TemplateError before anything leaves chatstep.templating.
    allowed = {
        ("templating/sandbox.py", "_UndefinedUse"),
        ("templating/bounds.py", "TemplateBoundError"),
        # Control flow inside the local schema converter; it becomes a 400 before leaving it.
        ("backends/local/request.py", "_Unenforceable"),
        # Control flow inside the steps service; it becomes an HTTP error response there.
        ("serving/problems.py", "RequestProblem"),
    }
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
                if any(b.endswith(("Error", "Exception", "Warning")) for b in bases):
                    found.add((rel, node.name))
    assert found == allowed


def test_sdk_shaped_nesting() -> None:
    assert issubclass(errors.APITimeoutError, errors.APIConnectionError)
    for cls in (errors.ConflictError, errors.UnprocessableEntityError, errors.RateLimitError):
        assert issubclass(cls, errors.APIStatusError)
    assert errors.error_for_status(409) is errors.ConflictError
    assert errors.error_for_status(422) is errors.UnprocessableEntityError
    assert errors.error_for_status(503) is errors.InternalServerError
    assert errors.error_for_status(418) is errors.APIStatusError


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (errors.ConflictError("busy", status_code=409), True),
        (errors.APITimeoutError("slow"), True),
        (errors.APIConnectionError("reset"), True),
        (errors.InvalidResponseError("no choices", status_code=200), True),
        (errors.InternalServerError("down", status_code=503), True),
        (errors.RateLimitError("slow down", status_code=429), True),
        (errors.RateLimitError("quota", status_code=429, code="insufficient_quota"), False),
        (errors.UnprocessableEntityError("bad", status_code=422), False),
        (errors.InternalServerError("no", status_code=501), False),
        (errors.BadRequestError("bad", status_code=400), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_retry_policy_classifies_the_tree(error: errors.APIError, retried: bool) -> None:
    assert RetryPolicy().is_retryable(error) is retried
    assert (RetryPolicy().delay_for(error, 1) is not None) is retried


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.APITimeoutError("slow"), "api_unavailable"),
        (errors.APIConnectionError("reset"), "api_unavailable"),
        (errors.InvalidResponseError("no choices", status_code=200), "api_unavailable"),
        (errors.RateLimitError("slow down", status_code=429), "api_unavailable"),
        (errors.InternalServerError("down", status_code=500), "api_unavailable"),
        (errors.ConflictError("busy", status_code=409), "api_refused"),
        (errors.UnprocessableEntityError("bad", status_code=422), "api_refused"),
        (errors.APIStatusError("teapot", status_code=418), "api_refused"),
        (errors.BudgetExceededError("cap", spent=2.0, limit=1.0), "budget"),
        (errors.StorageError("out.jsonl", "read-only directory"), "storage"),
        (errors.SecretNotFoundError("KEY", "env"), "config"),
        (errors.JournalMismatchError("journal", "another step"), "config"),
        (errors.MapRowsFailedError("2 rows failed"), "output"),
        (errors.BackendUnavailableError("no [local]"), "backend"),
        (RuntimeError("bug"), "unexpected"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_exit_codes_classify_the_tree(error: BaseException, code: str) -> None:
    assert exit_code_for(error) == EXIT_CODES[code]


def test_exit_codes_are_documented_in_the_readme() -> None:
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    for number in EXIT_CODES.values():
        assert f"\n| {number} | " in readme
