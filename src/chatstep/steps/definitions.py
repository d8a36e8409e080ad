"""Step definitions: typed, validated, templated descriptions of one API call.

A step is built in Python (``ChatCompletion(model="gpt-4o-mini", prompt="...")``) or loaded from
YAML/JSON (:func:`chatstep.steps.loading.load_step`). Unknown keys are errors. Kestra's camelCase
property names are accepted as aliases. ``None`` always means "the provider's default": chatstep
sends only what the step sets.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chatstep.errors import ConfigError, register_secret
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
    "Completion",
    "Embedding",
    "JSONSchemaFormat",
    "Moderation",
    "ResponseFormat",
    "Retrieve",
    "Step",
    "StreamOptions",
]

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")

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
    """Any OpenAI-compatible endpoint; default: ``OPENAI_BASE_URL``, else OpenAI.

    A query string (``?api-version=2024-10-21``) becomes query parameters of every request."""
    api_version: str | None = Field(default=None, alias="apiVersion")
    """Azure OpenAI ``api-version``; default: the base URL's, else ``OPENAI_API_VERSION``.

    Setting it (or an Azure base URL with one) selects the Azure client: the key goes in the
    ``api-key`` header and ``model`` names the deployment unless the base URL already does."""
    extra_query: dict[str, str] | None = Field(default=None, alias="extraQuery")
    """Query parameters added to every request (gateways, Azure)."""
    timeout: Templated[PositiveFloat] = Field(default=DEFAULT_TIMEOUT, alias="clientTimeout")
    """Seconds one attempt may take in total (Kestra: ``clientTimeout``).

    A streamed attempt may instead wait this long between two events; ``stream_timeout`` caps
    its total."""
    stream_timeout: Templated[PositiveFloat] | None = Field(default=None, alias="streamTimeout")
    """Seconds a streamed attempt may take in total; None: no total, only ``timeout`` per gap."""
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

    @model_validator(mode="after")
    def _literal_secret_names(self, info: ValidationInfo) -> Any:
        from chatstep.errors import ConfigError
        from chatstep.templating.variables import check_secret_names

        if isinstance(info.context, dict) and info.context.get("rendered"):
            return self  # rendered values are data (never rendered again), not templates

        for name in type(self).model_fields:
            try:
                check_secret_names(_plain(getattr(self, name)), name)
            except ConfigError as exc:
                # Pydantic turns a ValueError into a ValidationError naming the field.
                raise ValueError(f"{exc.field}: {exc.problem} ({exc.fix})") from None
        return self

    @field_validator("extra_headers")
    @classmethod
    def _sendable_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # Checked here, not at send time, where a bad header is a UnicodeEncodeError or a
        # connection error retried until the retries run out.
        for name, header in (value or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"header name {name!r} is not a valid HTTP header name "
                    "(letters, digits and !#$%&'*+-.^_`|~ only; no spaces, CR or LF)"
                )
            if not _HEADER_VALUE.fullmatch(header):
                raise ValueError(
                    f"the value of header {name!r} holds a character HTTP headers cannot carry "
                    "(only printable ASCII and tabs; no CR, LF or non-ASCII text)"
                )
        return value

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model is empty; name a model such as gpt-4o-mini")
        return value


def _plain(value: Any) -> Any:
    """Nested models as dicts (by field name), for walking every string of a step."""
    if isinstance(value, BaseModel):
        return {k: _plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
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


class Retrieve(StrictModel):
    """Search an index before rendering: the best chunks become ``{{ retrieved }}``."""

    index: str = Field(min_length=1)
    """An index name (``$CHATSTEP_HOME/indexes/NAME.db``) or a path to an index file."""
    query: str = Field(min_length=1)
    """What to search with: a template over the inputs, e.g. ``"{{ inputs.question }}"``."""
    top_k: Annotated[int, Field(ge=1, le=100)] = Field(default=4, alias="topK")
    """How many chunks to retrieve (1 to 100)."""


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
    retrieve: Retrieve | None = None
    """Chunks of an index put into the templates as ``retrieved`` (``chatstep index build``)."""
    _retrieved: list[dict[str, Any]] | None = PrivateAttr(default=None)
    # The chunks a rendered step was given (set by the runner; copied onto its result).
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
        self._check_schemas(names)
        return self

    def _check_schemas(self, names: list[str]) -> None:
        # What the API would refuse after the request is made, refused now (a ConfigError,
        # raised through pydantic with its own field path).
        from chatstep.steps.schemas import check_schema, check_tool_choice

        fmt = self.response_format.json_schema if self.response_format else None
        if fmt is not None:
            check_schema(fmt.schema_, "response_format.json_schema.schema", strict=bool(fmt.strict))
        for i, tool in enumerate(self.tools or []):
            fn = tool.function
            if isinstance(fn.parameters, dict):
                check_schema(
                    fn.parameters, f"tools[{i}].function.parameters", strict=bool(fn.strict)
                )
        for i, function in enumerate(self.functions or []):
            if isinstance(function.parameters, dict):
                field = f"functions[{i}].parameters"
                check_schema(function.parameters, field, strict=bool(function.strict))
        if isinstance(self.tool_choice, NamedToolChoice):
            check_tool_choice(self.tool_choice.model_dump(), names, "tool_choice")
        elif self.tool_choice == "required" and not names:
            raise ConfigError(
                "tool_choice", "is 'required' but the step defines no tools", "add tools"
            )
        if self.function_call is not None:
            check_tool_choice(self.function_call, names, "function_call")


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


from chatstep.steps.completion import Completion  # noqa: E402  (it builds on StepBase above)

Step: TypeAlias = ChatCompletion | Moderation | Embedding | Completion
"""Any step definition."""
