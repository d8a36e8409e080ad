"""The legacy Completions step (``type: completion``): text in, text out, on ``/v1/completions``.

For instruct-style models (``gpt-3.5-turbo-instruct``, ``davinci-002``, ``babbage-002``) and the
many OpenAI-compatible servers (vLLM, llama.cpp, Ollama) that still serve ``/v1/completions``. The
answer is ``choices[i].text``; ``StepResult.content`` is the first choice's text.

Rules the API enforces are checked when the step loads (and again after rendering), each a
ConfigError naming the field: ``best_of`` >= ``n``; ``best_of`` > 1 cannot stream; ``echo`` and
``suffix`` cannot be combined; ``max_tokens: 0`` only with ``echo: true``; an empty prompt is
refused (a missing input column would otherwise be sent and paid for as ``""``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from annotated_types import Len
from pydantic import Field, field_validator, model_validator

from chatstep.steps.definitions import StepBase, StreamOptions
from chatstep.steps.fields import (
    NonNegativeInt,
    Penalty,
    Probability,
    StopList,
    Temperature,
    Templated,
    looks_like_template,
)

__all__ = ["MAX_PROMPTS", "Completion"]

MAX_PROMPTS = 128
"""The most prompts one completion step sends in one request."""


class Completion(StepBase):
    """A legacy text completion: ``prompt`` (a template, or a list of them) continued by the model.

    With a list of prompts the answer holds ``n`` choices per prompt, prompt after prompt
    (choice ``i * n + j`` is the ``j``-th completion of prompt ``i``), as the API answers.
    """

    kind: ClassVar[str] = "completion"
    type_names: ClassVar[tuple[str, ...]] = ("completion", "chatstep.completion")

    prompt: str | Annotated[list[str], Len(min_length=1, max_length=MAX_PROMPTS)]
    """The text to continue (a template), or a list of them (each a template)."""
    suffix: str | None = None
    """Text that comes after the completion (insertion); not with ``echo``."""
    echo: Templated[bool] | None = None
    """Return the prompt before the completion in each choice's text."""
    best_of: Templated[Annotated[int, Field(ge=1, le=20)]] | None = Field(
        default=None, alias="bestOf"
    )
    """Candidates generated server-side per prompt, the ``n`` best returned (>= n; no stream)."""
    logprobs: Templated[Annotated[int, Field(ge=0, le=5)]] | None = None
    """Log probabilities of the chosen token and this many most likely ones (0-5)."""
    max_tokens: Templated[NonNegativeInt] | None = Field(default=None, alias="maxTokens")
    """Tokens the completion may have; the API's default is 16. 0 only with ``echo``."""
    temperature: Templated[Temperature] | None = None
    top_p: Templated[Probability] | None = Field(default=None, alias="topP")
    n: Templated[Annotated[int, Field(ge=1, le=128)]] | None = None
    """Completions per prompt."""
    stop: str | StopList | None = None
    presence_penalty: Templated[Penalty] | None = Field(default=None, alias="presencePenalty")
    frequency_penalty: Templated[Penalty] | None = Field(default=None, alias="frequencyPenalty")
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = Field(
        default=None, alias="logitBias"
    )
    """Token id (as text) -> bias from -100 to 100 (whole numbers, as the API takes them)."""
    seed: Templated[int] | None = None
    user: str | None = None
    stream: Templated[bool] | None = None
    stream_options: StreamOptions | None = Field(default=None, alias="streamOptions")
    extra_body: dict[str, Any] | None = Field(default=None, alias="extraBody")
    """Vendor-specific body fields (vLLM's ``top_k``...), sent as-is."""

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | list[str]) -> str | list[str]:
        for i, text in enumerate([value] if isinstance(value, str) else value):
            if not text.strip():
                where = "is empty" if isinstance(value, str) else f"prompt[{i}] is empty"
                raise ValueError(
                    f"{where}; the model would continue nothing (check the input "
                    "it is rendered from)"
                )
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for key in value or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias key {key!r} is not a token id (a whole number)")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Completion:
        fields = {name: getattr(self, name) for name in _RULE_FIELDS}
        check_completion_fields(fields, stream=None)
        return self


_RULE_FIELDS = ("n", "best_of", "stream", "echo", "suffix", "max_tokens")


def _set(value: Any) -> Any:
    """A value the rules can judge: None for unset or a template not rendered yet."""
    if isinstance(value, str) and looks_like_template(value):
        return None
    return value


def check_completion_fields(fields: dict[str, Any], *, stream: bool | None) -> None:
    """Raise ValueError (as pydantic expects) when fields break a rule the API enforces.

    ``stream`` overrides the step's own ``stream`` (a run asked to stream). Template values are
    judged after rendering.
    """
    n, best_of = _set(fields.get("n")), _set(fields.get("best_of"))
    streams = bool(_set(fields.get("stream"))) if stream is None else stream
    if best_of is not None and best_of < (n or 1):
        raise ValueError(
            f"best_of ({best_of}) must be at least n ({n or 1}): best_of candidates are generated "
            "and the n best returned; raise best_of or lower n"
        )
    if best_of is not None and best_of > 1 and streams:
        raise ValueError(
            f"best_of ({best_of}) cannot be streamed (the API ranks whole candidates); drop "
            "stream, or best_of"
        )
    echo = _set(fields.get("echo"))
    if echo and fields.get("suffix") is not None:
        raise ValueError("echo and suffix cannot be used together; drop one of them")
    if _set(fields.get("max_tokens")) == 0 and not echo:
        raise ValueError(
            "max_tokens is 0: the answer would be empty; set max_tokens >= 1, or echo: true "
            "to score the prompt only"
        )
