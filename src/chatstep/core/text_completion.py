"""The legacy Completions endpoint on the request path: request bodies and streamed answers.

A :class:`~chatstep.steps.completion.Completion` step becomes a ``/completions`` body; a
streamed answer (``text_completion`` events, each with ``choices[i].text`` pieces) is joined by
:class:`TextChunkAssembler` into exactly the body a non-streamed call returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatstep.backends.base import Backend, TextCompletionBackend
from chatstep.core.request import _merge_extra
from chatstep.core.streaming import Delta, _join_logprobs, _StreamAssembler
from chatstep.errors import ConfigError
from chatstep.steps.completion import Completion, check_completion_fields

__all__ = ["TextChunkAssembler", "completion_body", "text_backend"]

# Typed fields sent as they are when set (None means: the provider's default).
_PARAMS = (
    "suffix",
    "echo",
    "best_of",
    "logprobs",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
)


def text_backend(backend: Backend) -> TextCompletionBackend:
    """``backend`` as one that serves ``/completions``; ConfigError when it cannot."""
    if isinstance(backend, TextCompletionBackend):
        return backend
    name = getattr(backend, "name", type(backend).__name__)
    raise ConfigError(
        "type",
        f"the {name!r} backend does not serve the legacy Completions endpoint",
        "run the completion step on an OpenAI-compatible endpoint or the embedded model",
    )


def completion_body(step: Completion, stream: bool | None) -> dict[str, Any]:
    """The ``/completions`` body of a rendered step; ``stream`` overrides the step's flag.

    Raises ConfigError when a run asks to stream a step whose ``best_of`` cannot stream.
    """
    wants_stream = bool(step.stream) if stream is None else stream
    try:
        check_completion_fields({"best_of": step.best_of, "n": step.n}, stream=wants_stream)
    except ValueError as exc:
        raise ConfigError("best_of", str(exc)) from None
    body: dict[str, Any] = {"model": step.model, "prompt": step.prompt}
    for name in _PARAMS:
        value = getattr(step, name)
        if value is not None:
            body[name] = value
    if wants_stream:
        body["stream"] = True
        options = step.stream_options.model_dump(exclude_none=True) if step.stream_options else {}
        options.setdefault("include_usage", True)
        body["stream_options"] = options
    _merge_extra(body, step.extra_body)
    return body


@dataclass
class _TextChoice:
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TextChunkAssembler(_StreamAssembler[_TextChoice]):
    """Feed ``text_completion`` stream events; get Delta objects back and the whole answer.

    Same contract as :class:`~chatstep.core.streaming.ChunkAssembler` (``add``, ``has_choices``,
    ``finished``, ``chunks``, ``response()``): text pieces are joined per choice, list fields of
    ``logprobs`` (tokens, token_logprobs, top_logprobs, text_offset) are concatenated, ``usage``
    comes from the event that carries it, other fields keep their last non-null value.
    """

    def _merge_meta(self, key: str, value: Any) -> None:
        # A null top-level field of an event is dropped (unlike in chat chunks).
        if value is not None:
            self._meta[key] = value

    def _add_choice(self, choice: dict[str, Any], chunk: dict[str, Any]) -> Delta:
        index = int(choice.get("index") or 0)
        state = self._choices.setdefault(index, _TextChoice())
        text = choice.get("text")
        if isinstance(text, str):
            state.text.append(text)
        state.logprobs = _join_logprobs(state.logprobs, choice.get("logprobs"))
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]
        for key, value in choice.items():
            if key not in ("index", "text", "logprobs", "finish_reason") and value is not None:
                state.extra[key] = value
        return Delta(
            choice=index,
            content=text if isinstance(text, str) else None,
            finish_reason=choice.get("finish_reason"),
            chunk=chunk,
        )

    def response(self) -> dict[str, Any]:
        """The assembled ``text_completion``."""
        choices = [
            {
                **state.extra,
                "text": "".join(state.text),
                "index": index,
                "logprobs": state.logprobs,
                "finish_reason": state.finish_reason,
            }
            for index, state in sorted(self._choices.items())
        ]
        return self._envelope("text_completion", choices)
