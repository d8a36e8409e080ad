"""Offline token counting, and the token budget of a request as a rate limiter must see it.

Counting uses ``bpe-openai`` (its o200k and cl100k vocabularies ship inside the wheel, so nothing
is downloaded at run time). Without it, :func:`approximate_tokens` takes over; see its error bound.

The request estimate follows how OpenAI counts a chat prompt: every message costs
:data:`TOKENS_PER_MESSAGE` plus its role, name (+1) and content, and the reply is primed with
:data:`TOKENS_REPLY_PRIMING` more. For plain-text messages this is exact on the o200k models
(gpt-4o, gpt-4.1, gpt-5, o-series) and the cl100k models (gpt-4, gpt-3.5-turbo): it reproduces the
``prompt_tokens`` OpenAI measured in its token-counting cookbook (124 and 129 tokens for the same
six messages). Everything else is an estimate, documented where it is made.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "AUDIO_PART_TOKENS",
    "DEFAULT_COMPLETION_TOKENS",
    "FILE_PART_TOKENS",
    "IMAGE_HIGH_DETAIL_TOKENS",
    "IMAGE_LOW_DETAIL_TOKENS",
    "approximate_tokens",
    "chat_prompt_token_bound",
    "completion_budget",
    "count_tokens",
    "encoding_for_model",
    "estimate_prompt_tokens",
    "estimate_request_tokens",
    "tokenizer_available",
]

O200K = "o200k_base"
CL100K = "cl100k_base"

#: Every chat message is wrapped as ``<|start|>{role}<|message|>{content}<|end|>``: 3 tokens.
TOKENS_PER_MESSAGE = 3
#: A ``name`` on a message costs one token on top of the name's own tokens.
TOKENS_PER_NAME = 1
#: The reply is primed with ``<|start|>assistant<|message|>``.
TOKENS_REPLY_PRIMING = 3
#: An image part with ``detail: "low"``: a flat 85 tokens on the gpt-4o / gpt-4.1 / o-series.
IMAGE_LOW_DETAIL_TOKENS = 85
#: An image at ``detail: "high"`` or ``"auto"`` (we cannot see its size without fetching it): a
#: 1024x1024 image on gpt-4o, 85 + 4 tiles x 170. The true range there is 85..1445; models that
#: price images by 32px patches (gpt-4.1-mini, gpt-4o-mini) report more.
IMAGE_HIGH_DETAIL_TOKENS = 765
#: An ``input_audio`` part: a flat guess of about a minute of speech.
AUDIO_PART_TOKENS = 600
#: A ``file`` part (PDF etc.): a flat guess of a few pages; real files can cost far more.
FILE_PART_TOKENS = 1000
#: Completion budget assumed when a request sets neither ``max_completion_tokens`` nor
#: ``max_tokens``. A limiter should refund the difference once the real usage is known.
DEFAULT_COMPLETION_TOKENS = 1024
#: Tokens a tool call in an assistant message adds beyond its name and arguments (an estimate).
TOOL_CALL_OVERHEAD = 3
#: Fixed cost of declaring tools; JSON-serialized schemas already over-count, so this stays small.
TOOLS_OVERHEAD = 4

_O200K_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
    "omni-moderation",
    "codex",
)
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-", "text-moderation")


def encoding_for_model(model: str) -> str:
    """The BPE encoding name for a model id; unknown and local models get o200k as an estimate."""
    # "openai/gpt-4o" (router style) and "ft:gpt-4o-mini:org::id" (fine-tunes) name their base.
    name = model.strip().lower().rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        name = name[3:]
    if name.startswith(_O200K_PREFIXES):
        return O200K
    if name.startswith(_CL100K_PREFIXES):
        return CL100K
    return O200K


def approximate_tokens(text: str) -> int:
    """Tokens estimated as UTF-8 bytes / 4, used when ``bpe-openai`` is not installed.

    Error bound, measured against o200k: English prose and source code come out between 0.9x and
    1.35x the exact count (long words over-count most), Cyrillic up to 1.5x; digit-heavy text and
    JSON under-count down to 0.5x, base64 or random strings down to 0.35x. Never use it for
    billing.
    """
    if not text:
        return 0
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


_lock = threading.RLock()
_counters: dict[str, Callable[[str], int]] = {}
_bindings_state: list[Any] = []  # [module or None] once the import was attempted
_BINDINGS = "bpe_openai._bindings"


def _load_bindings() -> Any:
    """The Rust extension of bpe-openai, loaded without running its package ``__init__``.

    The package ``__init__`` builds every vocabulary as Python dicts at import (about 1.2 s and
    70 MB); the extension alone loads one vocabulary in about 0.1 s when it is first used.
    """
    if _BINDINGS in sys.modules:
        return sys.modules[_BINDINGS]
    try:
        package = importlib.util.find_spec("bpe_openai")
    except (ImportError, ValueError):
        package = None
    if package is None:
        return None
    for location in package.submodule_search_locations or []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = Path(location) / f"_bindings{suffix}"
            spec = importlib.util.spec_from_file_location(_BINDINGS, candidate)
            if not candidate.is_file() or spec is None or spec.loader is None:
                continue
            try:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except ImportError:
                break
            # Registered, so a later ``import bpe_openai`` reuses it instead of loading it twice.
            return sys.modules.setdefault(_BINDINGS, module)
    try:
        return importlib.import_module(_BINDINGS)
    except ImportError:
        return None


def _bindings() -> Any:
    if not _bindings_state:
        with _lock:
            if not _bindings_state:
                _bindings_state.append(_load_bindings())
    return _bindings_state[0]


def tokenizer_available() -> bool:
    """Whether exact counting (``bpe-openai``) is available here."""
    return _bindings() is not None


def _counter(encoding: str) -> Callable[[str], int]:
    counter = _counters.get(encoding)
    if counter is not None:
        return counter
    with _lock:
        counter = _counters.get(encoding)
        if counter is None:
            bindings = _bindings()
            if bindings is None:
                counter = approximate_tokens
            else:
                # Loading a vocabulary takes about a second; it happens once per process.
                counter = bindings.tokenizer_for_encoding(encoding).count
            _counters[encoding] = counter
    return counter


def count_tokens(text: str, model: str) -> int:
    """The number of tokens ``text`` makes for ``model`` (special tokens count as plain text)."""
    if not text:
        return 0
    return int(_counter(encoding_for_model(model))(text))


@lru_cache(maxsize=512)
def _count_cached(encoding: str, text: str) -> int:
    # Tool and response schemas repeat on every row of a dataset: count each one once.
    return int(_counter(encoding)(text))


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _part_tokens(part: Any, count: Callable[[str], int]) -> int:
    if isinstance(part, str):
        return count(part)
    if not isinstance(part, Mapping):
        return 0
    kind = part.get("type")
    if kind == "text":
        return count(str(part.get("text") or ""))
    if kind == "refusal":
        return count(str(part.get("refusal") or ""))
    if kind == "image_url":
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, Mapping) else None
        return IMAGE_LOW_DETAIL_TOKENS if detail == "low" else IMAGE_HIGH_DETAIL_TOKENS
    if kind == "input_audio":
        return AUDIO_PART_TOKENS
    if kind == "file":
        return FILE_PART_TOKENS
    # An unknown part type: count its JSON so it is not free.
    return count(_compact_json(part))


def _content_tokens(content: Any, count: Callable[[str], int]) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    if isinstance(content, Iterable):
        return sum(_part_tokens(part, count) for part in content)
    return count(str(content))


def _function_call_tokens(call: Any, count: Callable[[str], int]) -> int:
    if not isinstance(call, Mapping):
        return 0
    function = call.get("function", call)
    if not isinstance(function, Mapping):
        return 0
    name = str(function.get("name") or "")
    arguments = function.get("arguments") or ""
    if not isinstance(arguments, str):
        arguments = _compact_json(arguments)
    return TOOL_CALL_OVERHEAD + count(name) + count(arguments)


def _message_tokens(message: Any, count: Callable[[str], int]) -> int:
    if not isinstance(message, Mapping):
        return TOKENS_PER_MESSAGE + _content_tokens(message, count)
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(value, count)
        elif key == "tool_calls":
            if isinstance(value, list):
                total += sum(_function_call_tokens(call, count) for call in value)
        elif key == "function_call":
            total += _function_call_tokens(value, count)
        elif isinstance(value, str):
            # role, name, tool_call_id, refusal: counted as text, as OpenAI's cookbook does.
            total += count(value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _schema_tokens(body: Mapping[str, Any], count: Callable[[str], int]) -> int:
    total = 0
    for key in ("tools", "functions"):
        schemas = body.get(key)
        if schemas:
            total += TOOLS_OVERHEAD + count(_compact_json(schemas))
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping):
        schema = response_format.get("json_schema")
        if schema is not None:
            total += count(_compact_json(schema))
        elif response_format.get("type") == "json_object":
            total += 2
    return total


def _input_tokens(value: Any, count: Callable[[str], int]) -> int:
    """Tokens of an embeddings or moderations ``input``: text, token ids, or content parts."""
    if value is None:
        return 0
    if isinstance(value, str):
        return count(value)
    if isinstance(value, int):
        return 1
    if isinstance(value, Mapping):
        return _part_tokens(value, count)
    if isinstance(value, Iterable):
        items = list(value)
        if items and all(isinstance(item, int) for item in items):
            return len(items)  # already tokenized
        return sum(_input_tokens(item, count) for item in items)
    return count(str(value))


def estimate_prompt_tokens(body: Mapping[str, Any], endpoint: str = "chat.completions") -> int:
    """Input tokens of a request body, as OpenAI would count them.

    Exact for plain-text chat messages on OpenAI's o200k and cl100k models (see the module
    docstring). Estimates elsewhere: tool and function schemas and ``response_format`` schemas are
    counted as compact JSON, which over-counts OpenAI's internal rendering by about 10-40% for
    typical schemas; image parts count :data:`IMAGE_LOW_DETAIL_TOKENS` or
    :data:`IMAGE_HIGH_DETAIL_TOKENS`, audio parts :data:`AUDIO_PART_TOKENS`, file parts
    :data:`FILE_PART_TOKENS`; tool calls in assistant messages count their name and arguments plus
    :data:`TOOL_CALL_OVERHEAD`. Non-OpenAI models are counted with o200k, which can differ from
    their own tokenizer by 10-30% on prose. Without ``bpe-openai`` every text count carries the
    error of :func:`approximate_tokens`.
    """
    encoding = encoding_for_model(str(body.get("model") or ""))
    count = _counter(encoding)
    if endpoint == "chat.completions":
        messages = body.get("messages") or []
        total = sum(_message_tokens(message, count) for message in messages)
        total += TOKENS_REPLY_PRIMING
        return total + _schema_tokens(body, lambda text: _count_cached(encoding, text))
    if endpoint in ("embeddings", "moderations"):
        return _input_tokens(body.get("input"), count)
    if endpoint == "completions":  # the prompt (or prompts), and the suffix once per prompt
        prompts = body.get("prompt")
        times = len(prompts) if isinstance(prompts, list) and prompts else 1
        suffix = _input_tokens(body.get("suffix") or "", count)
        return _input_tokens(prompts, count) + times * suffix
    raise ValueError(
        f"endpoint: {endpoint!r} is not known "
        "(use 'chat.completions', 'completions', 'embeddings' or 'moderations')"
    )


def _utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def chat_prompt_token_bound(body: Mapping[str, Any]) -> int:
    """An upper bound of :func:`estimate_prompt_tokens` for a chat body, without a vocabulary.

    Every BPE token covers at least one UTF-8 byte, so counting bytes where the estimate
    counts tokens can only count more: when this bound fits a context window, the exact count
    does too, and no vocabulary (~70 MB for o200k) needs to load.
    """
    messages = body.get("messages") or []
    total = sum(_message_tokens(message, _utf8_bytes) for message in messages)
    return total + TOKENS_REPLY_PRIMING + _schema_tokens(body, _utf8_bytes)


def completion_budget(
    body: Mapping[str, Any], default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS
) -> int:
    """Output tokens a chat request may produce: its token limit (or the default) times ``n``.

    A legacy ``/completions`` body (it has ``prompt``) may produce ``max_tokens`` (the API's
    default: 16) times ``max(n, best_of)`` per prompt.
    """
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    choices = int(body.get("n") or 1)
    if "prompt" in body and "messages" not in body:
        prompts = body["prompt"]
        per_prompt = max(choices, int(body.get("best_of") or 1))
        count = len(prompts) if isinstance(prompts, list) and prompts else 1
        return int(16 if limit is None else limit) * per_prompt * count
    if limit is None:
        limit = default_completion_tokens
    return int(limit) * choices


def estimate_request_tokens(
    body: Mapping[str, Any],
    endpoint: str = "chat.completions",
    *,
    default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS,
) -> int:
    """Tokens a rate limiter must budget for a request: prompt plus the completion budget.

    For chat, the completion budget is ``max_completion_tokens`` (or ``max_tokens``, or
    ``default_completion_tokens`` when neither is set) times ``n``, which is how OpenAI's limiter
    reserves tokens. Embeddings and moderations produce no completion tokens. The prompt part has
    the error bound of :func:`estimate_prompt_tokens`.
    """
    prompt = estimate_prompt_tokens(body, endpoint)
    if endpoint not in ("chat.completions", "completions"):
        return prompt
    return prompt + completion_budget(body, default_completion_tokens)
