"""Chat jobs on the local model: token prompts, the run on the worker thread, OpenAI shapes.

A validated :class:`~chatstep.backends.local.request.ChatRequest` becomes a :class:`ChatJob`
(prompts tokenized and checked against the context window, on the caller's side), which
:func:`run_chat_job` executes on the model's worker thread, optionally emitting stream events
that :class:`ChunkBuilder` turns into ``chat.completion.chunk`` bodies.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from chatstep.backends.base import JSON
from chatstep.backends.local.model import (
    N_CTX_ENV,
    Generation,
    LocalModel,
)
from chatstep.backends.local.request import (
    ChatRequest,
    Mode,
    Tool,
    bad_request,
    choice_grammar,
)
from chatstep.errors import BadRequestError

__all__ = [
    "ChatJob",
    "ChatOutcome",
    "ChunkBuilder",
    "Emit",
    "completion_body",
    "plan_chat_job",
    "response_head",
    "run_chat_job",
    "token_usage",
]

# Tool names are short; a choice needs no more tokens than this.
_CHOICE_MAX_TOKENS = 24

# A stream event: ("start", index, tool, call_id) | ("text", index, text) | ("end", index, reason)
Emit = Callable[[tuple[Any, ...]], None]


# -- prompts (caller side) -------------------------------------------------------------------


def _with_instruction(turns: list[dict[str, str]], instruction: str | None) -> list[dict[str, str]]:
    """The turns with ``instruction`` closing the last user turn (or as a new user turn)."""
    if not instruction:
        return turns
    turns = [dict(turn) for turn in turns]
    if turns and turns[-1]["role"] == "user":
        turns[-1]["content"] += "\n\n" + instruction
    else:
        turns.append({"role": "user", "content": instruction})
    return turns


def _call_instruction(tool: Tool) -> str:
    about = f" ({tool.description})" if tool.description else ""
    return (
        f"Call the function {tool.name}{about}. Answer with its arguments as JSON matching "
        f"this JSON Schema:\n{json.dumps(tool.parameters)}"
    )


def _choose_instruction(tools: list[Tool]) -> str:
    lines = [f"- {t.name}: {t.description}" if t.description else f"- {t.name}" for t in tools]
    return "Choose the function to call. Answer with its name only.\n" + "\n".join(lines)


def _context_error(prompt: int, n_ctx: int, max_tokens: int | None) -> BadRequestError | None:
    fix = f"shorten the messages, or raise {N_CTX_ENV}"
    if prompt >= n_ctx:
        return bad_request(
            f"messages: the prompt is {prompt} tokens but the local model's context window is "
            f"{n_ctx} tokens ({fix})",
            param="messages",
            code="context_length_exceeded",
        )
    if max_tokens is not None and prompt + max_tokens > n_ctx:
        return bad_request(
            f"max_tokens: the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) is "
            f"{prompt + max_tokens} tokens, more than the local model's context window of "
            f"{n_ctx} tokens (lower max_tokens to at most {n_ctx - prompt}, or {fix})",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return None


@dataclass(frozen=True)
class _Step:
    """One generation: its prompt tokens, its grammar, and the tool it calls (if any)."""

    prompt: list[int]
    grammar: str | None
    tool: Tool | None = None


@dataclass
class ChatJob:
    """A chat request turned into token prompts, ready for the worker thread.

    With ``tool_choice`` ``"required"`` and several tools, ``step`` is None: ``choose`` picks the
    tool's name first, then the matching entry of ``tool_steps`` runs.
    """

    request: ChatRequest
    step: _Step | None
    choose: _Step | None = None
    tool_steps: dict[str, _Step] = field(default_factory=dict)

    @property
    def longest_prompt(self) -> int:
        steps = [self.step] if self.step else [self.choose, *self.tool_steps.values()]
        return max(len(step.prompt) for step in steps if step is not None)


def plan_chat_job(model: LocalModel, request: ChatRequest) -> ChatJob:
    """Tokenize the request's prompts and check that they fit the context window."""
    for token in request.sampling.logit_bias:
        if token >= model.n_vocab:
            raise bad_request(
                f"logit_bias: token id {token} does not exist (the local model's token ids "
                f"go from 0 to {model.n_vocab - 1})",
                param="logit_bias",
            )

    def prompt(instruction: str | None) -> list[int]:
        try:
            return model.chat_prompt(_with_instruction(request.turns, instruction))
        except Exception as exc:  # a GGUF's own chat template may refuse a conversation shape
            raise bad_request(
                f"messages: the model's chat template refused the conversation: {exc}",
                param="messages",
            ) from exc

    if request.mode in ("tool", "function"):
        steps = {
            tool.name: _Step(prompt(_call_instruction(tool)), tool.grammar, tool)
            for tool in request.tools
        }
        if len(steps) == 1:
            job = ChatJob(request, next(iter(steps.values())))
        else:
            choose = _Step(
                prompt(_choose_instruction(request.tools)), choice_grammar(request.tools)
            )
            job = ChatJob(request, None, choose, steps)
    else:
        job = ChatJob(request, _Step(prompt(request.hint), request.grammar))
    error = _context_error(job.longest_prompt, model.n_ctx, request.max_tokens)
    if error is not None:
        raise error
    return job


# -- running (worker thread) -----------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """One choice: the generation and, for a tool call, the tool and the call id."""

    generation: Generation
    tool: Tool | None
    call_id: str | None


@dataclass(frozen=True)
class ChatOutcome:
    """Every choice of a job, and its real token counts."""

    answers: list[_Answer]
    prompt_tokens: int
    completion_tokens: int


def run_chat_job(
    model: LocalModel, job: ChatJob, cancel: threading.Event, emit: Emit | None = None
) -> ChatOutcome:
    """Generate every choice of ``job`` (on the worker thread); ``emit`` gets stream events.

    Choice ``i`` samples with ``seed + i``, so choices differ at temperature > 0 and every
    choice is reproducible.
    """
    request = job.request
    answers: list[_Answer] = []
    prompt_tokens = completion_tokens = 0
    for index in range(request.n):
        if cancel.is_set():
            break
        sampling = replace(request.sampling, seed=request.sampling.seed + index)
        step = job.step
        if step is None:
            assert job.choose is not None
            picked = model.generate(
                job.choose.prompt,
                sampling,
                max_tokens=_CHOICE_MAX_TOKENS,
                grammar=job.choose.grammar,
                cancel=cancel,
            )
            completion_tokens += picked.completion_tokens
            step = job.tool_steps.get(picked.text.strip()) or next(iter(job.tool_steps.values()))
        call_id = f"call_{uuid.uuid4().hex[:24]}" if step.tool is not None else None
        on_text = None
        if emit is not None:
            emit(("start", index, step.tool, call_id))
            on_text = _text_emitter(emit, index)
        generation = model.generate(
            step.prompt,
            sampling,
            max_tokens=request.max_tokens or model.n_ctx - len(step.prompt),
            stop=request.stop if step.tool is None else (),
            grammar=step.grammar,
            cancel=cancel,
            on_text=on_text,
            strip_trailing_space=step.grammar is not None,
        )
        prompt_tokens = prompt_tokens or len(step.prompt)
        completion_tokens += generation.completion_tokens
        answers.append(_Answer(generation, step.tool, call_id))
        if emit is not None:
            emit(("end", index, _finish_reason(request.mode, generation)))
    return ChatOutcome(answers, prompt_tokens or job.longest_prompt, completion_tokens)


def _text_emitter(emit: Emit, index: int) -> Callable[[str], None]:
    return lambda text: emit(("text", index, text))


def _finish_reason(mode: Mode, generation: Generation) -> str:
    if generation.finish_reason == "length":
        return "length"
    return {"tool": "tool_calls", "function": "function_call"}.get(mode, "stop")


# -- OpenAI shapes ---------------------------------------------------------------------------


def response_head(id_prefix: str, kind: str, model: str) -> JSON:
    """``id`` (``<id_prefix>-<hex>``), ``object``, ``created`` and ``model`` of a response, or
    of every chunk of one streamed response (one id shared)."""
    return {
        "id": f"{id_prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


def token_usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    """``usage``'s token counts: prompt, completion and their total."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _usage(outcome: ChatOutcome) -> JSON:
    return {
        **token_usage(outcome.prompt_tokens, outcome.completion_tokens),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _message(mode: Mode, answer: _Answer) -> JSON:
    message: JSON = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    text = answer.generation.text
    if answer.tool is None:
        message["content"] = text
    elif mode == "function":
        message["function_call"] = {"name": answer.tool.name, "arguments": text}
    else:
        function = {"name": answer.tool.name, "arguments": text}
        message["tool_calls"] = [{"id": answer.call_id, "type": "function", "function": function}]
    return message


def completion_body(job: ChatJob, outcome: ChatOutcome) -> JSON:
    """The ``chat.completion`` body of a finished job."""
    mode = job.request.mode
    choices = [
        {
            "index": index,
            "message": _message(mode, answer),
            "logprobs": None,
            "finish_reason": _finish_reason(mode, answer.generation),
        }
        for index, answer in enumerate(outcome.answers)
    ]
    return {
        **response_head("chatcmpl", "chat.completion", job.request.model),
        "choices": choices,
        "usage": _usage(outcome),
    }


class ChunkBuilder:
    """Turns a job's stream events into ``chat.completion.chunk`` bodies sharing one id."""

    def __init__(self, job: ChatJob) -> None:
        self._mode = job.request.mode
        self._include_usage = job.request.include_usage
        self._base = response_head("chatcmpl", "chat.completion.chunk", job.request.model)
        self._tools: dict[int, Tool | None] = {}

    def _chunk(self, index: int, delta: JSON, finish_reason: str | None = None) -> JSON:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        # With include_usage every chunk carries "usage": null until the last one.
        usage: JSON = {"usage": None} if self._include_usage else {}
        return {**self._base, "choices": [choice], **usage}

    def event(self, event: tuple[Any, ...]) -> JSON:
        """The chunk for a ``start``, ``text`` or ``end`` event."""
        kind, index = event[0], event[1]
        if kind == "start":
            tool, call_id = event[2], event[3]
            self._tools[index] = tool
            return self._chunk(index, self._start_delta(tool, call_id))
        if kind == "text":
            return self._chunk(index, self._text_delta(self._tools.get(index), event[2]))
        return self._chunk(index, {}, event[2])

    def usage(self, outcome: ChatOutcome) -> JSON | None:
        """The closing usage chunk (empty ``choices``), when the request asked for one."""
        if not self._include_usage:
            return None
        return {**self._base, "choices": [], "usage": _usage(outcome)}

    def _start_delta(self, tool: Tool | None, call_id: str | None) -> JSON:
        if tool is None:
            return {"role": "assistant", "content": "", "refusal": None}
        call = {"name": tool.name, "arguments": ""}
        if self._mode == "function":
            return {"role": "assistant", "content": None, "function_call": call}
        entry = {"index": 0, "id": call_id, "type": "function", "function": call}
        return {"role": "assistant", "content": None, "tool_calls": [entry]}

    def _text_delta(self, tool: Tool | None, text: str) -> JSON:
        if tool is None:
            return {"content": text}
        if self._mode == "function":
            return {"function_call": {"arguments": text}}
        return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
