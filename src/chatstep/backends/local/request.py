"""Reading OpenAI request bodies for the local model: validation, text turns, tools, grammars.

Everything here is pure (no model needed), so a malformed request fails before it queues for the
model. Each error is a :class:`~chatstep.errors.BadRequestError` (or NotFoundError for an unknown
model) whose message names the field, the problem and the fix, with an OpenAI error body.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

from chatstep.backends.base import JSON
from chatstep.backends.local.model import (
    INSTRUCT_MODEL_ID,
    LOCAL_MODEL_ID,
    LOCAL_MODELS,
    MODEL_PATH_ENV,
    Sampling,
    installed_models,
)
from chatstep.errors import APIError, BadRequestError, NotFoundError

__all__ = [
    "LOCAL_MODEL_ALIASES",
    "ChatRequest",
    "EmbeddingRequest",
    "Mode",
    "Tool",
    "bad_request",
    "choice_grammar",
    "default_model",
    "json_object_grammar",
    "read_chat_request",
    "read_embedding_request",
    "schema_grammar",
]

LOCAL_MODEL_ALIASES = (*LOCAL_MODELS, *(f"local/{name}" for name in LOCAL_MODELS), "local")
Mode = Literal["text", "json", "tool", "function"]
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ANY_OBJECT: JSON = {"type": "object", "properties": {}}
_NON_TEXT_PARTS = frozenset({"image_url", "input_image", "input_audio", "file", "input_file"})

# OpenAI chat parameters that change nothing for a local model.
_IGNORED_PARAMS = frozenset(
    {"model", "messages", "stream", "user", "metadata", "store", "service_tier"}
    | {"parallel_tool_calls", "prompt_cache_key", "safety_identifier", "reasoning_effort"}
    | {"verbosity", "prediction"}
)
_HANDLED_PARAMS = frozenset(
    {"temperature", "top_p", "seed", "n", "max_tokens", "max_completion_tokens", "stop"}
    | {"presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs"}
    | {"response_format", "tools", "tool_choice", "functions", "function_call"}
    | {"stream_options", "modalities", "audio", "web_search_options"}
)


def _error(
    cls: type[APIError], message: str, status: int, param: str | None, code: str | None
) -> APIError:
    # Like errors from the HTTP backend, ``body`` is the OpenAI error object itself.
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return cls(message, status_code=status, code=code, body=body)


def bad_request(message: str, *, param: str | None, code: str | None = None) -> BadRequestError:
    """A 400 error with an OpenAI error body naming ``param``."""
    error = _error(BadRequestError, message, 400, param, code)
    assert isinstance(error, BadRequestError)
    return error


# -- reading the request --------------------------------------------------------------------


def check_model(body: Mapping[str, Any]) -> str | None:
    """The embedded model a body names, or None for ``local`` (the default for its task)."""
    model = body.get("model")
    if model is None:
        raise bad_request(
            f'model: missing (use "local", or one of {", ".join(LOCAL_MODELS)})', param="model"
        )
    if model not in LOCAL_MODEL_ALIASES:
        names = ", ".join(f'"{name}"' for name in LOCAL_MODEL_ALIASES)
        message = (
            f"model: {model!r} does not exist in the local backend; it serves "
            f"{' and '.join(LOCAL_MODELS)} (use one of {names}, or configure an "
            "OpenAI-compatible endpoint)"
        )
        raise _error(NotFoundError, message, 404, "model", "model_not_found")
    return None if model == "local" else str(model).removeprefix("local/")


def default_model(mode: Mode) -> str:
    """The model ``local`` stands for: SmolLM2 135M Instruct when installed, else Gemma 3 270M.

    Chosen from ``bench/local_eval.py``'s figures (the README's table): the instruct model did
    as well or better on every task (free text, triage, the JSON matrix) at a third of the size.
    """
    del mode  # one default for every task, from the figures; kept to choose per task later
    if os.environ.get(MODEL_PATH_ENV):  # one GGUF file stands in for every model
        return LOCAL_MODEL_ID
    if INSTRUCT_MODEL_ID in installed_models():
        return INSTRUCT_MODEL_ID
    return LOCAL_MODEL_ID


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{key}: expected a number, got {value!r}", param=key)
    if not low <= value <= high:
        raise bad_request(
            f"{key}: {value} is out of range (send a number from {low:g} to {high:g})", param=key
        )
    return float(value)


def _integer(body: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key}: expected a whole number, got {value!r}", param=key)
    if value < low or (high is not None and value > high):
        upper = f" to {high}" if high is not None else " or more"
        raise bad_request(f"{key}: {value} is out of range (send {low}{upper})", param=key)
    return value


def _text(content: Any, where: str, *, allow_none: bool = False) -> str:
    """The text of a message's ``content`` (a string or a list of text parts)."""
    if content is None and allow_none:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "refusal" and isinstance(part.get("refusal"), str):
                texts.append(part["refusal"])
            elif kind in _NON_TEXT_PARTS:
                raise bad_request(
                    f"{where}[{j}]: the local model reads text only, got a {kind!r} part "
                    "(send text parts, or use an OpenAI model for images, audio and files)",
                    param=f"{where}[{j}]",
                )
            else:
                raise bad_request(
                    f"{where}[{j}]: expected a text part like "
                    f'{{"type": "text", "text": "..."}}, got {part!r}',
                    param=f"{where}[{j}]",
                )
        return "\n".join(texts)
    raise bad_request(
        f"{where}: expected a string or a list of text parts, got {content!r}", param=where
    )


def _conversation(messages: Any) -> list[dict[str, str]]:
    """OpenAI messages as text turns: system text, then alternating user and assistant turns."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: expected a non-empty list of messages", param="messages")
    tool_names: dict[str, str] = {}
    turns: list[dict[str, str]] = []

    def add(role: str, text: str) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": role, "content": text})

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where}: expected an object, got {message!r}", param=where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            add("system", _text(content, f"{where}.content"))
        elif role == "user":
            add("user", _text(content, f"{where}.content"))
        elif role == "assistant":
            lines = [_text(content, f"{where}.content", allow_none=True)]
            for j, call in enumerate(message.get("tool_calls") or []):
                if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                    raise bad_request(
                        f'{where}.tool_calls[{j}]: expected a tool call like {{"id": ..., '
                        f'"type": "function", "function": {{"name": ..., "arguments": ...}}}}',
                        param=f"{where}.tool_calls[{j}]",
                    )
                function = call["function"]
                name = str(function.get("name", ""))
                tool_names[str(call.get("id", ""))] = name
                lines.append(f"Called {name} with {function.get('arguments', '{}')}")
            if isinstance(message.get("function_call"), dict):
                call = message["function_call"]
                lines.append(f"Called {call.get('name', '')} with {call.get('arguments', '{}')}")
            add("assistant", "\n".join(line for line in lines if line))
        elif role == "tool":
            name = tool_names.get(str(message.get("tool_call_id", "")), "the tool")
            add("user", f"Result of {name}: {_text(content, f'{where}.content')}")
        elif role == "function":
            name = str(message.get("name", "the function"))
            add("user", f"Result of {name}: {_text(content, f'{where}.content')}")
        else:
            raise bad_request(
                f"{where}.role: {role!r} is not a chat role "
                "(use system, developer, user, assistant or tool)",
                param=f"{where}.role",
            )
    # System text is shown with the next user turn; system text after the last one joins it.
    if turns and turns[-1]["role"] == "system":
        text = turns.pop()["content"]
        if turns and turns[-1]["role"] == "user":
            turns[-1]["content"] = f"{text}\n\n{turns[-1]['content']}"
        else:
            turns.append({"role": "user", "content": text})
    first = next((t for t in turns if t["role"] != "system"), None)
    if first is not None and first["role"] == "assistant":
        turns.insert(turns.index(first), {"role": "user", "content": ""})
    return turns


@dataclass(frozen=True)
class Tool:
    """A function the model may be asked to call; ``grammar`` is set once it is forced."""

    name: str
    description: str
    parameters: JSON
    grammar: str | None = None


def _tools(body: Mapping[str, Any]) -> tuple[list[Tool], bool]:
    """The function tools (or legacy functions) of a request, and whether they are legacy."""
    tools, functions = body.get("tools"), body.get("functions")
    if tools and functions:
        raise bad_request(
            "functions: send either tools or the legacy functions, not both", param="functions"
        )
    legacy = bool(functions)
    key = "functions" if legacy else "tools"
    raw = functions if legacy else tools
    if raw is None:
        return [], False
    if not isinstance(raw, list):
        raise bad_request(f"{key}: expected a list, got {raw!r}", param=key)
    found: list[Tool] = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        spec = item if legacy else (item.get("function") if isinstance(item, dict) else None)
        if not legacy and isinstance(item, dict) and item.get("type", "function") != "function":
            raise bad_request(
                f"{where}.type: the local model supports function tools only, "
                f"got {item.get('type')!r}",
                param=f"{where}.type",
            )
        if not isinstance(spec, dict) or not _TOOL_NAME.match(str(spec.get("name", ""))):
            raise bad_request(
                f"{where}: expected a function with a name of letters, digits, _ or - "
                f"(at most 64), got {item!r}",
                param=where,
            )
        parameters = spec.get("parameters") or _ANY_OBJECT
        if not isinstance(parameters, dict):
            raise bad_request(
                f"{where}.parameters: expected a JSON Schema object", param=f"{where}.parameters"
            )
        found.append(Tool(spec["name"], str(spec.get("description") or ""), parameters))
    return found, legacy


def _forced_tools(body: Mapping[str, Any], tools: list[Tool], legacy: bool) -> list[Tool]:
    """The tools one of which must be called (empty: answer in text)."""
    key = "function_call" if legacy else "tool_choice"
    choice = body.get(key)
    if not tools or choice in (None, "auto", "none"):
        if choice == "required" and not tools:
            raise bad_request(f"{key}: 'required' needs at least one tool", param=key)
        return []
    if choice == "required":
        return tools
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {(t.get("function") or {}).get("name") for t in allowed.get("tools", [])}
        subset = [tool for tool in tools if tool.name in names]
        return subset if allowed.get("mode") == "required" else []
    name = None
    if isinstance(choice, dict):
        name = choice.get("name") if legacy else (choice.get("function") or {}).get("name")
    matches = [tool for tool in tools if tool.name == name]
    if not matches:
        known = ", ".join(tool.name for tool in tools)
        raise bad_request(
            f"{key}: {choice!r} names no function in the request (known: {known})", param=key
        )
    return matches


def _response_format(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The grammar for ``response_format`` and the hint that shows the schema to the model."""
    spec = body.get("response_format")
    if spec is None:
        return None, None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "text":
        return None, None
    if kind == "json_object":
        return json_object_grammar(), None
    if kind == "json_schema":
        schema = (spec.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise bad_request(
                "response_format.json_schema.schema: expected a JSON Schema object",
                param="response_format",
            )
        hint = "Answer with JSON matching this JSON Schema:\n" + json.dumps(schema)
        return schema_grammar(schema, "response_format.json_schema.schema"), hint
    raise bad_request(
        f"response_format: expected type text, json_object or json_schema, got {spec!r}",
        param="response_format",
    )


def _stop(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad_request(
            f"stop: expected a string or a list of strings, got {stop!r}", param="stop"
        )
    if len(stops) > 4:
        raise bad_request("stop: at most 4 stop sequences are allowed", param="stop")
    return [s for s in stops if s]


def _check_unsupported(body: Mapping[str, Any]) -> None:
    for key in body:
        if key not in _IGNORED_PARAMS and key not in _HANDLED_PARAMS:
            raise bad_request(
                f"Unrecognized request argument supplied: {key}", param=key, code="unknown_param"
            )
    if body.get("logprobs") or body.get("top_logprobs"):
        raise bad_request(
            "logprobs: the local model does not return log probabilities (omit logprobs and "
            "top_logprobs)",
            param="logprobs",
        )
    modalities = body.get("modalities")
    if body.get("audio") is not None or (modalities and modalities != ["text"]):
        raise bad_request(
            "modalities: the local model answers in text only (omit audio and modalities)",
            param="modalities",
        )
    if body.get("web_search_options") is not None:
        raise bad_request(
            "web_search_options: the local model cannot search the web (omit it)",
            param="web_search_options",
        )


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, before the model tokenizes it.

    ``mode`` says what the answer is: ``text``, ``json`` (content under ``grammar``), ``tool``
    or ``function`` (a call to one of ``tools``, arguments under the tool's grammar). ``hint``
    is shown to the model at the end of the last user turn.
    """

    turns: list[dict[str, str]]
    sampling: Sampling
    model: str
    n: int
    max_tokens: int | None
    stop: list[str]
    mode: Mode
    grammar: str | None = None
    hint: str | None = None
    tools: list[Tool] = field(default_factory=list)
    include_usage: bool = False


def _logit_bias(body: Mapping[str, Any]) -> dict[int, float]:
    logit_bias = body.get("logit_bias") or {}
    if not isinstance(logit_bias, dict):
        raise bad_request("logit_bias: expected an object of token id -> bias", param="logit_bias")
    biases: dict[int, float] = {}
    for key, value in logit_bias.items():
        if not str(key).isdigit() or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_request(
                f"logit_bias: expected token id strings mapped to numbers, got {key!r}: {value!r}",
                param="logit_bias",
            )
        if not -100 <= value <= 100:
            raise bad_request(
                f"logit_bias[{key}]: {value} is out of range (send -100 to 100)", param="logit_bias"
            )
        biases[int(key)] = float(value)
    return biases


def _sampling(body: Mapping[str, Any]) -> Sampling:
    seed = _integer(body, "seed", -(2**63))
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    return Sampling(
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        seed=secrets.randbits(32) if seed is None else seed,
        presence_penalty=_number(body, "presence_penalty", -2, 2) or 0.0,
        frequency_penalty=_number(body, "frequency_penalty", -2, 2) or 0.0,
        logit_bias=_logit_bias(body),
    )


def read_chat_request(body: Any) -> ChatRequest:
    """Validate a ``/chat/completions`` body for the local model."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {body!r}", param=None)
    named = check_model(body)
    _check_unsupported(body)
    turns = _conversation(body.get("messages"))
    sampling = _sampling(body)
    max_completion = _integer(body, "max_completion_tokens", 1)
    max_tokens = max_completion if max_completion is not None else _integer(body, "max_tokens", 1)
    n = _integer(body, "n", 1, 128) or 1
    stop = _stop(body)
    stream_options = body.get("stream_options") or {}
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    tools, legacy = _tools(body)
    forced = _forced_tools(body, tools, legacy)
    if forced:
        key = "functions" if legacy else "tools"
        forced = [
            replace(tool, grammar=schema_grammar(tool.parameters, f"{key}[{tool.name}].parameters"))
            for tool in forced
        ]
        mode: Mode = "function" if legacy else "tool"
        grammar, hint = None, None
    else:
        grammar, hint = _response_format(body)
        mode = "text" if grammar is None else "json"
    return ChatRequest(
        turns=turns,
        sampling=sampling,
        model=named or default_model(mode),
        n=n,
        max_tokens=max_tokens,
        stop=stop,
        mode=mode,
        grammar=grammar,
        hint=hint,
        tools=forced,
        include_usage=include_usage,
    )


@dataclass(frozen=True)
class EmbeddingRequest:
    """A validated ``/embeddings`` request."""

    texts: list[str]
    dimensions: int | None
    base64: bool
    model: str = LOCAL_MODEL_ID


def read_embedding_request(body: Any) -> EmbeddingRequest:
    """Validate an ``/embeddings`` body for the local model."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {body!r}", param=None)
    model = check_model(body) or LOCAL_MODEL_ID
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request(
            "input: expected a string or a non-empty list of strings (token arrays are not "
            "supported by the local model: send the text)",
            param="input",
        )
    if len(texts) > 2048:
        raise bad_request("input: at most 2048 inputs per request", param="input")
    for i, text in enumerate(texts):
        if not text:
            raise bad_request(f"input[{i}]: must not be empty", param="input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request(
            f"encoding_format: expected 'float' or 'base64', got {encoding!r}",
            param="encoding_format",
        )
    return EmbeddingRequest(texts, _integer(body, "dimensions", 1), encoding == "base64", model)


# -- grammars --------------------------------------------------------------------------------


# Integer bounds become an enum of the allowed values when there are at most this many.
MAX_INTEGER_RANGE = 1000
# A grammar larger than this (a maxLength or maxItems in the thousands) is refused: llama.cpp
# expands each repetition into rules, so its size and the time to parse it grow with the bound.
MAX_GRAMMAR_CHARS = 65536
_SCHEMA_MAX_DEPTH = 32
# Keywords the grammar converter does not enforce; refused rather than silently ignored.
_UNENFORCED = ("multipleOf", "minProperties", "maxProperties", "uniqueItems", "not")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


class _Unenforceable(ValueError):
    """A schema keyword the local grammar cannot enforce."""


# Bounds the converter cannot express get a rule of our own: the schema holds a marker const,
# whose literal in the converted grammar is replaced by the rule's name.
_MARKER_RULES = {
    "uint0": '("0" | [1-9] [0-9]{0,15})',  # integer >= 0
    "uint1": "([1-9] [0-9]{0,15})",  # integer >= 1
    "unum0": '("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,15})?',  # number >= 0
    "unit": '("0" ("." [0-9]{1,15})? | "1" ("." "0"{1,15})?)',  # number in [0, 1]
}
_MARKER = "CHATSTEPRULE{}"


def _bounds(schema: Mapping[str, Any]) -> tuple[Any, Any, bool]:
    """(lowest, highest, exclusive?) of a numeric schema; None where unbounded."""
    low, high = schema.get("minimum"), schema.get("maximum")
    exclusive = False
    if isinstance(schema.get("exclusiveMinimum"), (int, float)):
        low, exclusive = schema["exclusiveMinimum"], True
    if isinstance(schema.get("exclusiveMaximum"), (int, float)):
        high, exclusive = schema["exclusiveMaximum"], True
    for value in (low, high):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _Unenforceable(f"bounds must be numbers, got {value!r}")
    return low, high, exclusive


def _bounded_number(schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A schema enforcing a numeric type's bounds: an enum or a marker of one of our rules."""
    low, high, exclusive = _bounds(schema)
    if schema.get("type") == "integer":
        if isinstance(schema.get("exclusiveMinimum"), (int, float)):
            low = math.floor(schema["exclusiveMinimum"]) + 1
        if isinstance(schema.get("exclusiveMaximum"), (int, float)):
            high = math.ceil(schema["exclusiveMaximum"]) - 1
        if low is not None and high is not None and high - low < MAX_INTEGER_RANGE:
            return {"enum": list(range(math.ceil(low), math.floor(high) + 1))}
        if high is None and low in (0, 1):
            return {"const": _MARKER.format(f"uint{low}")}
        raise _Unenforceable(
            f"{where}: integer bounds are enforced as a closed range of at most "
            f"{MAX_INTEGER_RANGE} values, or as minimum 0 or 1 alone (or use an enum)"
        )
    if schema.get("type") == "number" and not exclusive and low == 0 and high in (None, 1):
        return {"const": _MARKER.format("unum0" if high is None else "unit")}
    raise _Unenforceable(
        f"{where}: numeric bounds are enforced on integers, and on numbers only as "
        "minimum 0 (with maximum 1 or none)"
    )


def _enforceable(schema: Any, where: str, depth: int = 0) -> Any:
    """``schema`` with integer ranges turned into enums; _Unenforceable for what the grammar
    cannot enforce (numeric bounds on non-integers, multipleOf, uniqueItems...)."""
    if depth > _SCHEMA_MAX_DEPTH:
        raise _Unenforceable(f"{where}: nested deeper than {_SCHEMA_MAX_DEPTH} levels")
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for keyword in _UNENFORCED:
        if keyword in out:
            raise _Unenforceable(f"{where}.{keyword}: not enforced by the local grammar")
    if any(keyword in out for keyword in _BOUNDS):
        replacement = _bounded_number(out, where)
        for keyword in (*_BOUNDS, "type"):
            out.pop(keyword, None)
        out.update(replacement)
    if isinstance(out.get("properties"), dict) and out["properties"]:
        # The converter's rule for extra keys also matches the declared names, so a model could
        # repeat a declared key with a value of the wrong type (the last one wins when parsed).
        # Declared properties only: the answer still matches the schema.
        out["additionalProperties"] = False
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [
                _enforceable(sub, f"{where}.{key}[{i}]", depth + 1)
                for i, sub in enumerate(out[key])
            ]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {
                name: _enforceable(sub, f"{where}.{key}.{name}", depth + 1)
                for name, sub in out[key].items()
            }
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _enforceable(out[key], f"{where}.{key}", depth + 1)
    return out


@lru_cache(maxsize=64)
def _grammar_for_schema(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar = str(json_schema_to_gbnf(schema_json))
    # The converter's string character allows raw control characters, which JSON forbids (a
    # newline inside a string made the answer unparsable); llama.cpp's own rule excludes them.
    grammar = grammar.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |')
    used = [name for name in _MARKER_RULES if _MARKER.format(name) in grammar]
    for name in used:
        grammar = grammar.replace(f'"\\"{_MARKER.format(name)}\\""', f"chatstep-{name}")
    rules = [f"chatstep-{name} ::= {_MARKER_RULES[name]}" for name in used]
    return "\n".join([grammar.rstrip("\n"), *rules]) + "\n"


def schema_grammar(schema: Mapping[str, Any], param: str) -> str:
    """GBNF text accepting the JSON valid against ``schema``; BadRequestError if it has none.

    Every keyword that constrains the JSON is enforced, or the schema is refused naming it:
    integer ``minimum``/``maximum`` become an enum (ranges of up to 1000 values) or a rule
    (minimum 0 or 1 alone), numbers may have minimum 0 (and maximum 1); other bounds,
    ``multipleOf``, ``uniqueItems``, ``not`` and ``min/maxProperties`` are refused. An object
    with declared properties is answered with those only (extra keys are never generated).
    """
    try:
        enforceable = _enforceable(schema, param)
        # In the schema's own order: a model decides the first properties first.
        grammar = _grammar_for_schema(json.dumps(enforceable))
    except _Unenforceable as exc:
        raise bad_request(
            f"{exc} (the local model's grammar enforces objects, arrays, strings, enums, "
            "numeric ranges and $defs; drop or change that keyword)",
            param=param,
            code="invalid_schema",
        ) from None
    except Exception as exc:  # the converter raises bare Exceptions for unsupported keywords
        raise bad_request(
            f"{param}: this JSON Schema cannot be enforced by the local model's grammar: {exc} "
            "(simplify the schema: objects, arrays, strings, numbers, enums and $defs work)",
            param=param,
            code="invalid_schema",
        ) from exc
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise bad_request(
            f"{param}: this JSON Schema makes a grammar of {len(grammar)} characters, more than "
            f"the local model's limit of {MAX_GRAMMAR_CHARS} (lower large maxLength, maxItems "
            "or minItems bounds, or drop them)",
            param=param,
            code="invalid_schema",
        )
    return grammar


def json_object_grammar() -> str:
    """GBNF text accepting any JSON object."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)


def choice_grammar(tools: Sequence[Tool]) -> str:
    """GBNF text accepting exactly one of the tools' names."""
    # Names are checked against _TOOL_NAME, so they are safe inside GBNF literals.
    return "root ::= " + " | ".join(f'"{tool.name}"' for tool in tools)
