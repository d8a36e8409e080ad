"""Step definitions: typed, validated, templated descriptions of one API call.

A step is built in Python (``ChatCompletion(model="gpt-4o-mini", prompt="...")``) or loaded from
YAML/JSON (:func:`chatstep.steps.loading.load_step`). Unknown keys are errors. Kestra's camelCase
property names are accepted as aliases. ``None`` always means "the provider's default": chatstep
sends only what the step sets.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from chatstep.errors import register_secret
from chatstep.steps.fields import (
    NonNegativeInt,
    Penalty,
    PositiveFloat,
    PositiveInt,
    Probability,
    StopList,
    Temperature,
    Templated,
    looks_like_template,
)
from chatstep.steps.messages import Message
from chatstep.steps.strict import StrictModel
from chatstep.steps.tools import FunctionDef, NamedToolChoice, Tool

__all__ = [
    "ChatCompletion",
    "Embedding",
    "JSONSchemaFormat",
    "Moderation",
    "ResponseFormat",
    "Step",
    "StreamOptions",
]

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5


class JSONSchemaFormat(StrictModel):
    """Structured Outputs: the JSON Schema the answer must match."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "schema": self.schema_}
        if self.description is not None:
            out["description"] = self.description
        if self.strict is not None:
            out["strict"] = self.strict
        return out


class ResponseFormat(StrictModel):
    """``text``, ``json_object`` (JSON mode) or ``json_schema`` (Structured Outputs)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"json_schema is only used with type json_schema, not {self.type}")
        return self

    def to_api(self) -> dict[str, Any]:
        if self.json_schema is None:
            return {"type": self.type}
        return {"type": "json_schema", "json_schema": self.json_schema.to_api()}


class StreamOptions(StrictModel):
    """Options for streamed answers."""

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class StepBase(StrictModel):
    """Fields every step has: identity and connection."""

    kind: ClassVar[str] = ""
    type_names: ClassVar[tuple[str, ...]] = ()

    id: str | None = None
    """The step's id: names it in flows, history and ``outputs``."""
    description: str | None = None
    model: str
    """The model id (``gpt-4o-mini``, ``local/gemma-3-270m``...). Required."""

    api_key: str | None = Field(default=None, alias="apiKey", repr=False)
    """API key; default: the secret ``OPENAI_API_KEY``. Prefer ``{{ secret('NAME') }}``."""
    organization: str | None = None
    """OpenAI organization id; default: ``OPENAI_ORG_ID``."""
    project: str | None = None
    """OpenAI project id; default: ``OPENAI_PROJECT_ID``."""
    base_url: str | None = Field(default=None, alias="baseUrl")
    """Any OpenAI-compatible endpoint; default: ``OPENAI_BASE_URL``, else OpenAI."""
    timeout: Templated[PositiveFloat] = Field(default=DEFAULT_TIMEOUT, alias="clientTimeout")
    """Seconds to wait for one attempt (Kestra: ``clientTimeout``)."""
    max_retries: Templated[NonNegativeInt] = Field(default=DEFAULT_MAX_RETRIES, alias="maxRetries")
    """Retries on connection errors, timeouts, 408, 409, 429 and 5xx."""
    backend: Literal["auto", "openai", "local"] = "auto"
    """``auto``: OpenAI-compatible HTTP when a key or base URL is set, else the embedded model."""
    extra_headers: dict[str, str] | None = None
    """Extra HTTP headers (e.g. ``api-key`` routing for gateways)."""
    cache: bool | None = None
    """Cache this step's answers: True or False; None lets the run decide (off by default)."""
    cache_ttl: Templated[PositiveFloat] | None = Field(default=None, alias="cacheTtl")
    """Seconds a cached answer stays valid; None: forever."""

    @model_validator(mode="before")
    @classmethod
    def _drop_type(cls, data: Any) -> Any:
        # ``type`` selects the step class when loading; it is not a field of the step itself.
        if isinstance(data, dict) and "type" in data:
            if data["type"] not in cls.type_names:
                raise ValueError(
                    f"type {data['type']!r} does not name a {cls.__name__} step; "
                    f"use one of {', '.join(cls.type_names)}"
                )
            data = {k: v for k, v in data.items() if k != "type"}
        return data

    @field_validator("api_key")
    @classmethod
    def _remember_key(cls, value: str | None) -> str | None:
        if value and not looks_like_template(value):
            register_secret(value)
        return value

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model is empty; name a model such as gpt-4o-mini")
        return value


class Fallback(StrictModel):
    """Where to send a chat step when its primary endpoint stays unavailable: a partial override.

    Unset fields keep the step's own value; ``backend: local`` runs on the embedded model.
    """

    model: str | None = None
    base_url: str | None = Field(default=None, alias="baseUrl")
    api_key: str | None = Field(default=None, alias="apiKey", repr=False)
    """Prefer ``{{ secret('NAME') }}``; unset: the step's key (or ``OPENAI_API_KEY``)."""
    organization: str | None = None
    project: str | None = None
    backend: Literal["auto", "openai", "local"] | None = None
    extra_headers: dict[str, str] | None = None
    timeout: PositiveFloat | None = Field(default=None, alias="clientTimeout")
    max_retries: NonNegativeInt | None = Field(default=None, alias="maxRetries")
    context_window: PositiveInt | None = Field(default=None, alias="contextWindow")

    @field_validator("api_key")
    @classmethod
    def _remember_key(cls, value: str | None) -> str | None:
        if value and not looks_like_template(value):
            register_secret(value)
        return value

    def overrides(self) -> dict[str, Any]:
        """The fields this fallback sets, by field name."""
        return self.model_dump(exclude_none=True, by_alias=False)


class Guard(StrictModel):
    """Moderate a chat step's user input before the call and its answer after it.

    A flagged text raises :class:`~chatstep.errors.FlaggedContentError`. The moderation calls go
    to the step's own endpoint unless ``base_url`` / ``api_key`` say otherwise (the embedded
    model cannot moderate).
    """

    input: bool = True
    """Moderate the text of the user messages (rendered) before sending."""
    output: bool = True
    """Moderate every choice's answer; a streamed answer is held until it passed."""
    model: str = "omni-moderation-latest"
    base_url: str | None = Field(default=None, alias="baseUrl")
    api_key: str | None = Field(default=None, alias="apiKey", repr=False)

    @field_validator("api_key")
    @classmethod
    def _remember_key(cls, value: str | None) -> str | None:
        if value and not looks_like_template(value):
            register_secret(value)
        return value


class ChatCompletion(StepBase):
    """A chat completion: ``prompt``, or ``messages``, or system_message + chat_history + prompt.

    Messages are composed in the order system_message, chat_history, messages, prompt.
    """

    kind: ClassVar[str] = "chat"
    type_names: ClassVar[tuple[str, ...]] = (
        "chat",
        "chatstep.chat",
        "io.kestra.plugin.openai.ChatCompletion",
    )

    system_message: str | None = Field(default=None, alias="systemMessage")
    chat_history: Templated[list[Message]] | None = Field(default=None, alias="chatHistory")
    messages: Templated[list[Message]] | None = None
    prompt: str | None = None

    temperature: Templated[Temperature] | None = None
    top_p: Templated[Probability] | None = Field(default=None, alias="topP")
    n: Templated[Annotated[int, Field(ge=1, le=128)]] | None = None
    stop: str | StopList | None = None
    max_tokens: Templated[PositiveInt] | None = Field(default=None, alias="maxTokens")
    max_completion_tokens: Templated[PositiveInt] | None = Field(
        default=None, alias="maxCompletionTokens"
    )
    context_window: Templated[PositiveInt] | None = Field(default=None, alias="contextWindow")
    """The model's context window in tokens, when the built-in table or the price file is wrong
    or does not know it; a prompt plus max_tokens that cannot fit fails before sending."""
    presence_penalty: Templated[Penalty] | None = Field(default=None, alias="presencePenalty")
    frequency_penalty: Templated[Penalty] | None = Field(default=None, alias="frequencyPenalty")
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, alias="logitBias"
    )
    seed: Templated[int] | None = None
    user: str | None = None
    logprobs: Templated[bool] | None = None
    top_logprobs: Templated[Annotated[int, Field(ge=0, le=20)]] | None = Field(
        default=None, alias="topLogprobs"
    )
    response_format: ResponseFormat | None = Field(default=None, alias="responseFormat")
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, alias="toolChoice"
    )
    parallel_tool_calls: Templated[bool] | None = Field(default=None, alias="parallelToolCalls")
    functions: list[FunctionDef] | None = None
    function_call: str | dict[str, str] | None = Field(default=None, alias="functionCall")
    stream: Templated[bool] | None = None
    stream_options: StreamOptions | None = Field(default=None, alias="streamOptions")
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = Field(
        default=None, alias="serviceTier"
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        Field(default=None, alias="reasoningEffort")
    )
    verbosity: Literal["low", "medium", "high"] | None = None
    metadata: dict[str, str] | None = None
    store: Templated[bool] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    extra_body: dict[str, Any] | None = Field(default=None, alias="extraBody")
    """Vendor-specific body fields (vLLM's ``top_k``, Ollama's ``options``...), sent as-is."""
    guard: Guard | None = None
    """Moderation of the input before the call and of the answer after it."""
    fallbacks: Annotated[list[Fallback], Field(max_length=8)] | None = None
    """Tried in order when the endpoint stays unavailable after its retries (5xx, timeouts,
    connection errors, 429 beyond the wait limit) or refuses the prompt for context length."""

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias key {key!r} is not a token id (an integer)")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > 16:
            raise ValueError(f"metadata has {len(value)} keys; OpenAI allows at most 16")
        return value

    @field_validator("function_call")
    @classmethod
    def _function_call_shape(cls, value: str | dict[str, str] | None) -> Any:
        if isinstance(value, dict) and set(value) != {"name"}:
            raise ValueError('function_call as an object takes exactly {"name": ...}')
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> ChatCompletion:
        if (
            self.prompt is None
            and self.messages is None
            and self.chat_history is None
            and self.system_message is None
        ):
            raise ValueError(
                "the step has no input: set prompt, messages, or system_message/chat_history/prompt"
            )
        if self.top_logprobs is not None and self.logprobs is False:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.function_call is not None and not self.functions:
            raise ValueError("function_call needs functions")
        names = [t.function.name for t in self.tools or []]
        names += [f.name for f in self.functions or []]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tool/function names must be unique; repeated: {', '.join(dupes)}")
        if self.function_call is not None and self.tool_choice is not None:
            raise ValueError("set tool_choice or function_call, not both")
        return self


class Moderation(StepBase):
    """Classify text for policy categories: per input flagged, categories, scores."""

    kind: ClassVar[str] = "moderation"
    type_names: ClassVar[tuple[str, ...]] = ("moderation", "chatstep.moderation")

    model: str = "omni-moderation-latest"
    input: Templated[list[str]] | str


class Embedding(StepBase):
    """Embed text: one vector per input."""

    kind: ClassVar[str] = "embedding"
    type_names: ClassVar[tuple[str, ...]] = ("embedding", "chatstep.embedding")

    input: Templated[list[str]] | str
    dimensions: Templated[PositiveInt] | None = None
    encoding_format: Literal["float", "base64"] | None = Field(default=None, alias="encodingFormat")
    user: str | None = None


Step = ChatCompletion | Moderation | Embedding
"""Any step definition."""
