"""Default synthetic answers: what the test server says when no test scripted anything.

Every answer is deterministic (same request, same answer apart from ids and timestamps) and
valid against the OpenAI spec:

- chat: ``"echo: <last user message>"``; ``n`` choices; ``response_format`` json_object ->
  ``{"echo": ...}``, json_schema -> an instance of the schema; forced tool use -> a tool call
  whose arguments are an instance of the tool's parameters; legacy forced ``function_call``;
  ``stop`` sequences; ``max_tokens`` cuts the content with ``finish_reason: "length"``;
  ``logprobs``; usage in whitespace-separated words.
- embeddings: unit vectors from a hash of the text (16 dimensions unless ``dimensions``).
- moderations: flagged when the text contains a word from a small per-category list.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping
from typing import Any

from chatstep.testing.completions import (
    build_completion,
    make_choice,
    normalize_function_call,
    normalize_tool_calls,
    word_count,
)
from chatstep.testing.instances import instance_for

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "DEFAULT_MODELS",
    "MODERATION_TERMS",
    "default_chat_completion",
    "default_embeddings",
    "default_moderation",
    "embedding_vector",
    "last_user_text",
    "model_object",
    "prompt_tokens",
    "request_input_words",
]

JSON = dict[str, Any]

DEFAULT_EMBEDDING_DIMENSIONS = 16
DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "omni-moderation-latest",
)
_MODEL_CREATED = 1_700_000_000

MODERATION_TERMS: dict[str, tuple[str, ...]] = {
    "hate": ("hateful", "bigot"),
    "hate/threatening": ("exterminate",),
    "harassment": ("idiot", "loser", "stupid"),
    "harassment/threatening": ("threaten",),
    "illicit": ("shoplift", "steal", "counterfeit"),
    "illicit/violent": ("bomb", "explosive"),
    "self-harm": ("self-harm", "suicide"),
    "self-harm/intent": ("suicidal",),
    "self-harm/instructions": ("overdose",),
    "sexual": ("nsfw", "explicit"),
    "sexual/minors": (),
    "violence": ("kill", "murder", "stab", "attack"),
    "violence/graphic": ("gore", "bloody"),
}
"""Words (matched as word prefixes, case-insensitively) that flag each moderation category."""

# Categories for which the moderation API also scores images.
_IMAGE_CATEGORIES = frozenset(
    {"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence"}
    | {"violence/graphic"}
)
_WORD = re.compile(r"[a-z][a-z\-]*")
_PIECE = re.compile(r"\s*\S+\s*|\s+")


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message: its string content or its text parts joined by spaces."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(part.get("text", "")) for part in content if isinstance(part, Mapping)]
        return " ".join(text for text in texts if text)
    return ""


def last_user_text(body: Mapping[str, Any]) -> str:
    """Text of the last ``user`` message of a chat request ("" if there is none)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message)
    return ""


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Approximate prompt tokens of a chat request: words over all message texts."""
    messages = body.get("messages") or []
    return sum(word_count(message_text(m)) for m in messages if isinstance(m, Mapping))


def _function_tools(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = body.get("tools") or []
    return [
        tool["function"]
        for tool in tools
        if isinstance(tool, Mapping)
        and tool.get("type") == "function"
        and isinstance(tool.get("function"), Mapping)
    ]


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function tool the request forces, if any."""
    tools = _function_tools(body)
    choice = body.get("tool_choice")
    if not tools or choice is None:
        return None
    by_name = {str(tool.get("name")): tool for tool in tools}
    if choice == "required":
        return tools[0]
    if isinstance(choice, Mapping):
        if choice.get("type") == "function":
            name = (choice.get("function") or {}).get("name")
            return by_name.get(str(name))
        allowed = choice.get("allowed_tools")
        if choice.get("type") == "allowed_tools" and isinstance(allowed, Mapping):
            if allowed.get("mode") != "required":
                return None
            for entry in allowed.get("tools") or []:
                name = (
                    (entry.get("function") or {}).get("name")
                    if isinstance(entry, Mapping)
                    else None
                )
                if str(name) in by_name:
                    return by_name[str(name)]
    return None


def _forced_function(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The legacy function a request forces with ``function_call: {"name": ...}``."""
    choice = body.get("function_call")
    if not isinstance(choice, Mapping):
        return None
    for function in body.get("functions") or []:
        if isinstance(function, Mapping) and function.get("name") == choice.get("name"):
            return function
    return None


def _content_for(body: Mapping[str, Any], text: str) -> str:
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_object":
        return json.dumps({"echo": text})
    if kind == "json_schema":
        schema = (response_format or {}).get("json_schema", {}).get("schema", {})
        return json.dumps(instance_for(schema))
    return f"echo: {text}"


def _apply_stop(content: str, stop: Any) -> str:
    sequences = [stop] if isinstance(stop, str) else list(stop or [])
    cut = len(content)
    for sequence in sequences:
        if isinstance(sequence, str) and sequence:
            position = content.find(sequence)
            if position != -1:
                cut = min(cut, position)
    return content[:cut]


def _apply_limit(content: str, limit: Any) -> tuple[str, bool]:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return content, False
    pieces = _PIECE.findall(content)
    if len(content.split()) <= limit:
        return content, False
    return "".join(pieces[:limit]).rstrip(), True


def _logprobs(content: str, top: int) -> JSON:
    entries = []
    for position, token in enumerate(_PIECE.findall(content)):
        logprob = -0.01 * (position % 10 + 1)
        alternatives = [
            {"token": token, "logprob": logprob, "bytes": list(token.encode())},
            *(
                {"token": f"alt{k}", "logprob": logprob - k, "bytes": list(f"alt{k}".encode())}
                for k in range(1, top)
            ),
        ][:top]
        entries.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": alternatives,
            }
        )
    return {"content": entries, "refusal": None}


def _choice(body: Mapping[str, Any], index: int, completion_id: str) -> JSON:
    forced = _forced_tool(body)
    if forced is not None:
        arguments = instance_for(forced.get("parameters") or {"type": "object"})
        calls = normalize_tool_calls(
            [{"name": forced.get("name"), "arguments": arguments}], f"{completion_id}:{index}"
        )
        return make_choice(index, tool_calls=calls)
    legacy = _forced_function(body)
    if legacy is not None:
        arguments = instance_for(legacy.get("parameters") or {"type": "object"})
        call = normalize_function_call({"name": legacy.get("name"), "arguments": arguments})
        return make_choice(index, function_call=call)
    content = _apply_stop(_content_for(body, last_user_text(body)), body.get("stop"))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    content, truncated = _apply_limit(content, limit)
    logprobs = None
    if body.get("logprobs") is True:
        logprobs = _logprobs(content, int(body.get("top_logprobs") or 0))
    return make_choice(
        index, content=content, finish_reason="length" if truncated else "stop", logprobs=logprobs
    )


def default_chat_completion(body: Mapping[str, Any], completion_id: str) -> JSON:
    """The deterministic ``chat.completion`` answering a chat request."""
    count = body.get("n") or 1
    choices = [_choice(body, index, completion_id) for index in range(int(count))]
    tier = body.get("service_tier")
    return build_completion(
        completion_id,
        str(body.get("model", "")),
        choices,
        prompt_tokens=prompt_tokens(body),
        service_tier="default" if tier in ("auto", "default") else tier,
    )


_EMBEDDING_WORD = re.compile(r"\w+")
# Words too common to tell texts apart; left out so that shared content words decide nearness.
_STOP_TEXT = (
    "a an and are as at be by can do does for from has have how i in is it "
    "its of on or our the this to was we what when where which who why will with you your"
)
_STOP_WORDS = frozenset(_STOP_TEXT.split())


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``: a hashed bag of its words.

    Each lower-cased word (but a few stop words) adds +-1 at a position its hash picks, so
    texts sharing words are near (cosine similarity): a question retrieves the chunk that
    uses its words. A text
    with no word gets a vector hashed from its characters (same text, same vector).
    """
    counts = [0.0] * dimensions
    for word in _EMBEDDING_WORD.findall(text.lower()):
        if word in _STOP_WORDS:
            continue
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "big") % dimensions
        counts[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in counts))
    if norm:
        return [v / norm for v in counts]
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    values = [
        (int.from_bytes(raw[i : i + 2], "big") / 65535.0) * 2 - 1 for i in range(0, len(raw), 2)
    ]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(str(v) for v in value)]
    if isinstance(value, list):
        return [v if isinstance(v, str) else " ".join(str(t) for t in v) for v in value]
    return [str(value)]


def request_input_words(value: Any) -> int:
    """Approximate tokens of an embeddings or moderations ``input`` (words, at least 1 each)."""
    if value is None:
        return 0
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return sum(max(1, word_count(str(v.get("text", "")))) for v in value)
    return sum(max(1, word_count(text)) for text in _embedding_inputs(value))


def default_embeddings(body: Mapping[str, Any]) -> JSON:
    """The deterministic embeddings ``list`` answering an embeddings request."""
    texts = _embedding_inputs(body.get("input"))
    dimensions = int(body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS)
    as_base64 = body.get("encoding_format") == "base64"
    data: list[JSON] = []
    for index, text in enumerate(texts):
        vector = embedding_vector(text, dimensions)
        embedding: Any = vector
        if as_base64:
            # The API sends little-endian float32s, base64-encoded.
            embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(max(1, word_count(text)) for text in texts)
    return {
        "object": "list",
        "data": data,
        "model": str(body.get("model", "")),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _moderation_inputs(value: Any) -> list[tuple[str, bool]]:
    """(text, has_image) per moderated input."""
    if isinstance(value, str):
        return [(value, False)]
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        texts = [str(v.get("text", "")) for v in value if v.get("type") == "text"]
        has_image = any(v.get("type") == "image_url" for v in value)
        return [(" ".join(texts), has_image)]
    if isinstance(value, list):
        return [(str(v), False) for v in value]
    return [(str(value), False)]


def _moderation_result(text: str, has_image: bool) -> JSON:
    words = _WORD.findall(text.lower())
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    applied: dict[str, list[str]] = {}
    for category, terms in MODERATION_TERMS.items():
        hits = sum(1 for word in words for term in terms if word.startswith(term))
        categories[category] = hits > 0
        scores[category] = min(0.99, 0.7 + 0.1 * hits) if hits else 0.0001
        kinds = ["text"] if text else []
        if has_image and category in _IMAGE_CATEGORIES:
            kinds.append("image")
        applied[category] = kinds
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    }


def default_moderation(body: Mapping[str, Any], moderation_id: str) -> JSON:
    """The deterministic moderation answer: one result per input."""
    results = [
        _moderation_result(text, image) for text, image in _moderation_inputs(body.get("input"))
    ]
    return {
        "id": moderation_id,
        "model": str(body.get("model") or "omni-moderation-latest"),
        "results": results,
    }


def model_object(model_id: str) -> JSON:
    """A ``model`` object as GET /models returns it."""
    owner = "openai" if model_id.startswith(("text-", "omni-")) else "system"
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": owner}
