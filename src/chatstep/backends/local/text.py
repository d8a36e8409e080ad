"""Legacy text completions (``/completions``) on the embedded model: raw prompt in, text out.

The prompt is tokenized as plain text (with the model's BOS token, no chat template) and
continued by :meth:`~chatstep.backends.local.model.LocalModel.generate` on the model's worker
thread: the same queue, sampler (no llama.cpp grammar path, so nothing can abort the process)
and stop-at-the-next-token cancellation as chat. What it does with a request:

- ``prompt``: a string or a list of strings (token arrays are refused: send text); each prompt
  gets ``n`` choices, choice ``i * n + j`` being prompt ``i``'s ``j``-th (seed ``seed + j``).
  A prompt is refused before tokenizing when it has more than ``32 x`` the context window in
  characters, and after when its tokens plus ``max_tokens`` do not fit
  (``context_length_exceeded``, naming both sizes).
- ``max_tokens``: the API's default of 16 when unset; ``echo`` puts the prompt before the text.
- ``temperature``, ``top_p``, ``seed``, ``stop``, ``presence_penalty``, ``frequency_penalty``,
  ``logit_bias`` as in chat; ``user`` is ignored; ``best_of`` equal to ``n`` (or 1) is accepted.
- Refused with a 400 naming the field: ``suffix`` (the model cannot insert), ``logprobs`` (it
  returns none), ``best_of`` above ``n`` (it does not rank candidates).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from chatstep.backends.base import JSON
from chatstep.backends.local.chat import Emit, response_head, token_usage
from chatstep.backends.local.model import N_CTX_ENV, LocalModel, Sampling
from chatstep.backends.local.request import (
    _integer,
    _sampling,
    _stop,
    bad_request,
    check_model,
    default_model,
)

__all__ = [
    "TextChunkBuilder",
    "TextJob",
    "TextOutcome",
    "TextRequest",
    "plan_text_job",
    "read_text_request",
    "run_text_job",
    "text_completion_body",
]

# Characters a prompt may have per token of the context window before it is refused untokenized
# (tokenizing megabytes to learn they do not fit costs memory and time on the model's thread).
_CHARS_PER_TOKEN_BOUND = 32
_DEFAULT_MAX_TOKENS = 16  # the API's default for /completions
_MAX_PROMPTS = 128

_IGNORED = frozenset({"model", "prompt", "stream", "user"})
_HANDLED = frozenset(
    {"temperature", "top_p", "seed", "n", "max_tokens", "stop", "presence_penalty"}
    | {"frequency_penalty", "logit_bias", "echo", "best_of", "stream_options"}
)


@dataclass(frozen=True)
class TextRequest:
    """A validated ``/completions`` request, before the model tokenizes it."""

    prompts: list[str]
    sampling: Sampling
    model: str
    n: int
    max_tokens: int
    stop: list[str]
    echo: bool
    include_usage: bool


def _prompts(body: JSON) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise bad_request(
            f"prompt: expected a string or a list of strings, got {str(prompt)[:80]!r} (the local "
            "model takes text, not token arrays)",
            param="prompt",
        )
    if len(prompts) > _MAX_PROMPTS:
        raise bad_request(
            f"prompt: {len(prompts)} prompts is more than {_MAX_PROMPTS} in one request "
            "(split them)",
            param="prompt",
        )
    return prompts


def read_text_request(body: Any) -> TextRequest:
    """Validate a ``/completions`` body for the local model (BadRequestError naming the field)."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {body!r}", param=None)
    named = check_model(body)
    for key in body:
        if key not in _IGNORED and key not in _HANDLED and body[key] is not None:
            if key in ("suffix", "logprobs"):
                what = "insert text" if key == "suffix" else "return log probabilities"
                raise bad_request(f"{key}: the local model does not {what} (omit {key})", param=key)
            raise bad_request(
                f"Unrecognized request argument supplied: {key}", param=key, code="unknown_param"
            )
    prompts = _prompts(body)
    n = _integer(body, "n", 1, 128) or 1
    best_of = _integer(body, "best_of", 1, 20)
    if best_of is not None and best_of > n:
        raise bad_request(
            f"best_of: {best_of} candidates for n={n}: the local model does not rank candidates "
            f"(omit best_of, or set it to n)",
            param="best_of",
        )
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise bad_request(f"echo: expected true or false, got {echo!r}", param="echo")
    max_tokens = _integer(body, "max_tokens", 0)
    if max_tokens == 0 and not echo:
        raise bad_request("max_tokens: 0 is allowed only with echo: true", param="max_tokens")
    options = body.get("stream_options") or {}
    return TextRequest(
        prompts=prompts,
        sampling=_sampling(body),
        model=named or default_model("text"),
        n=n,
        max_tokens=_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        stop=_stop(body),
        echo=bool(echo),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


@dataclass(frozen=True)
class TextJob:
    """A text request with its prompts tokenized and checked against the context window."""

    request: TextRequest
    tokens: list[list[int]]


def plan_text_job(model: LocalModel, request: TextRequest) -> TextJob:
    """Tokenize each prompt and check that it fits the context window with ``max_tokens``."""
    for token in request.sampling.logit_bias:
        if token >= model.n_vocab:
            raise bad_request(
                f"logit_bias: token id {token} does not exist (the local model's token ids "
                f"go from 0 to {model.n_vocab - 1})",
                param="logit_bias",
            )
    fix = f"shorten the prompt, or raise {N_CTX_ENV}"
    tokens = []
    for i, prompt in enumerate(request.prompts):
        where = "prompt" if len(request.prompts) == 1 else f"prompt[{i}]"
        if len(prompt) > model.n_ctx * _CHARS_PER_TOKEN_BOUND:
            raise bad_request(
                f"{where}: {len(prompt)} characters cannot fit the local model's context window "
                f"of {model.n_ctx} tokens ({fix})",
                param="prompt",
                code="context_length_exceeded",
            )
        ids = model.tokenize(prompt, add_bos=True)
        if len(ids) + request.max_tokens > model.n_ctx:
            raise bad_request(
                f"{where}: the prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) "
                f"is more than the local model's context window of {model.n_ctx} tokens ({fix}, "
                "or lower max_tokens)",
                param="prompt",
                code="context_length_exceeded",
            )
        tokens.append(ids)
    return TextJob(request, tokens)


@dataclass(frozen=True)
class TextOutcome:
    """Every choice's text and finish reason, and the real token counts."""

    choices: list[tuple[str, str]]
    prompt_tokens: int
    completion_tokens: int


def run_text_job(
    model: LocalModel, job: TextJob, cancel: threading.Event, emit: Emit | None = None
) -> TextOutcome:
    """Generate ``n`` choices per prompt (on the worker thread); ``emit`` gets stream events."""
    request = job.request
    choices: list[tuple[str, str]] = []
    completion_tokens = 0
    for p, (prompt, ids) in enumerate(zip(request.prompts, job.tokens, strict=True)):
        for j in range(request.n):
            if cancel.is_set():
                break
            index = p * request.n + j
            head = prompt if request.echo else ""
            if emit is not None and head:
                emit(("text", index, head))
            on_text = None if emit is None else (lambda text, i=index: emit(("text", i, text)))
            generation = model.generate(
                ids,
                replace(request.sampling, seed=request.sampling.seed + j),
                max_tokens=request.max_tokens,
                stop=request.stop,
                cancel=cancel,
                on_text=on_text,
            )
            completion_tokens += generation.completion_tokens
            choices.append((head + generation.text, generation.finish_reason))
            if emit is not None:
                emit(("end", index, generation.finish_reason))
    prompt_tokens = sum(len(ids) for ids in job.tokens)
    return TextOutcome(choices, prompt_tokens, completion_tokens)


def _usage(outcome: TextOutcome) -> JSON:
    return token_usage(outcome.prompt_tokens, outcome.completion_tokens)


def text_completion_body(job: TextJob, outcome: TextOutcome) -> JSON:
    """The ``text_completion`` body of a finished job."""
    choices = [
        {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
        for index, (text, reason) in enumerate(outcome.choices)
    ]
    return {
        **response_head("cmpl", "text_completion", job.request.model),
        "choices": choices,
        "usage": _usage(outcome),
    }


class TextChunkBuilder:
    """Turns a text job's stream events into ``text_completion`` events sharing one id."""

    def __init__(self, job: TextJob) -> None:
        self._include_usage = job.request.include_usage
        self._base = response_head("cmpl", "text_completion", job.request.model)

    def event(self, event: tuple[Any, ...]) -> JSON:
        """The event for a ``text`` or ``end`` stream event."""
        kind, index = event[0], event[1]
        text, reason = (event[2], None) if kind == "text" else ("", event[2])
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
        return {**self._base, "choices": [choice]}

    def usage(self, outcome: TextOutcome) -> JSON | None:
        """The closing usage event (empty ``choices``), when the request asked for one."""
        if not self._include_usage:
            return None
        return {**self._base, "choices": [], "usage": _usage(outcome)}
