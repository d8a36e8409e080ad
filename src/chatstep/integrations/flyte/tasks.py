"""Flyte tasks that run one chatstep step: the drop-in ``ChatGPTTask`` and ``ChatStepTask``.

Both serialize a chatstep step definition (never a key) into the task template, and one sync
connector (task type ``chatstep``) runs it through chatstep's pipeline: locally, the task calls
the connector in process; on a cluster, Flyte's connector service does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional, TypedDict

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager
from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.extend import TypeEngine
from flytekit.extend.backend.base_connector import (
    ConnectorRegistry,
    Resource,
    SyncConnectorBase,
    SyncConnectorExecutorMixin,
)

from chatstep.errors import (
    APIConnectionError,
    APITimeoutError,
    ChatstepError,
    ConfigError,
    InternalServerError,
    RateLimitError,
    redact,
)
from chatstep.secrets import SecretStore, default_secret_store
from chatstep.steps.definitions import ChatCompletion, Step
from chatstep.steps.fields import looks_like_template
from chatstep.steps.loading import load_step, step_from_dict

__all__ = [
    "FLYTE_KEY_SECRET",
    "ChatGPTConfig",
    "ChatGPTTask",
    "ChatStepConnector",
    "ChatStepTask",
    "FlyteSecrets",
    "flyte_secret_store",
    "register_connectors",
]

TASK_TYPE = "chatstep"
#: The Flyte secret flytekit's OpenAI plugin reads the key from; chatstep reads it first.
FLYTE_KEY_SECRET = "FLYTE_OPENAI_API_KEY"


class FlyteSecrets:
    """Secrets from Flyte's secret manager; ``OPENAI_API_KEY`` is ``FLYTE_OPENAI_API_KEY`` first."""

    @property
    def name(self) -> str:
        return "Flyte secrets"

    def find(self, name: str) -> str | None:
        import flytekit

        names = [FLYTE_KEY_SECRET, name] if name == "OPENAI_API_KEY" else [name]
        for candidate in names:
            try:
                value = flytekit.current_context().secrets.get(key=candidate)
            except Exception:  # flytekit raises ValueError, or others outside a task context
                continue
            if value and value.strip():
                return str(value).strip()
        return None

    def __repr__(self) -> str:
        return "FlyteSecrets()"


def flyte_secret_store(extra: Mapping[str, str] | None = None) -> SecretStore:
    """Flyte's secrets first, then chatstep's chain (environment, .env, secrets directory)."""
    flyte = SecretStore([FlyteSecrets(), *default_secret_store().providers])
    return flyte.in_front(extra or {})


def _portable_step(step: Step, where: str) -> dict[str, Any]:
    """The step as JSON for the task template; a literal key would be registered with Flyte."""
    if step.api_key and not looks_like_template(step.api_key):
        raise ConfigError(
            f"{where}.api_key",
            "holds a literal key, which would be stored in Flyte's task template",
            f"set the Flyte secret {FLYTE_KEY_SECRET} (or OPENAI_API_KEY), or write "
            "api_key: \"{{ secret('NAME') }}\"",
        )
    data: dict[str, Any] = step.model_dump(mode="json", exclude_unset=True, by_alias=False)
    data["type"] = step.kind
    return data


class ChatGPTConfig(TypedDict, total=False):
    """Keys of ``chatgpt_config``: OpenAI chat parameters, plus chatstep's step fields."""

    model: str
    temperature: float
    max_tokens: int
    top_p: float
    messages: list[dict[str, Any]]
    system_message: str
    timeout: float
    max_retries: int
    base_url: str
    backend: str


def chatgpt_step(chatgpt_config: Mapping[str, Any], organization: str | None) -> ChatCompletion:
    """The chat step a ``chatgpt_config`` describes: its fields, and the message as the prompt."""
    if "model" not in chatgpt_config:
        raise ValueError(
            "chatgpt_config: the 'model' key is required (for example "
            "chatgpt_config={'model': 'gpt-4o-mini'})"
        )
    data = dict(chatgpt_config)
    if "prompt" in data:
        raise ConfigError(
            "chatgpt_config.prompt",
            "is set, but the task's input `message` is the prompt",
            "remove it; put earlier messages under messages or system_message",
        )
    if "api_key" in data or "apiKey" in data:
        raise ConfigError(
            "chatgpt_config.api_key",
            "would store the key in Flyte's task template",
            f"set the Flyte secret {FLYTE_KEY_SECRET} or OPENAI_API_KEY instead",
        )
    data["prompt"] = "{{ inputs.message }}"
    if organization:
        data.setdefault("organization", organization)
    step = step_from_dict(data, prefix="chatgpt_config")
    assert isinstance(step, ChatCompletion)
    return step


class _StepTask(SyncConnectorExecutorMixin, PythonTask):  # type: ignore[misc]
    """A Flyte task whose template holds a chatstep step; the ``chatstep`` connector runs it."""

    def __init__(
        self, name: str, step: Step, interface: Interface, outputs: list[str], **kwargs: Any
    ) -> None:
        self._step_data = _portable_step(step, name)
        self._outputs = outputs
        super().__init__(
            task_type=TASK_TYPE,
            name=name,
            task_config={"step": self._step_data},
            interface=interface,
            **kwargs,
        )

    @property
    def step(self) -> Step:
        return load_step(self._step_data)

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        return {"step": self._step_data, "outputs": list(self._outputs)}


class ChatGPTTask(_StepTask):
    """flytekit's ``ChatGPTTask`` (``message: str`` -> ``o0: str``), run through chatstep.

    Change the import and nothing else; the task gains chatstep's timeout (60 s, or
    ``chatgpt_config["timeout"]``), retries, ``base_url``, ``system_message`` and, with no key,
    the embedded local model. The key comes from the Flyte secret ``FLYTE_OPENAI_API_KEY``, else
    ``OPENAI_API_KEY``.
    """

    def __init__(
        self,
        name: str,
        chatgpt_config: Mapping[str, Any],
        openai_organization: str | None = None,
        **kwargs: Any,
    ) -> None:
        step = chatgpt_step(chatgpt_config, openai_organization or None)
        self.chatgpt_config = dict(chatgpt_config)
        self.openai_organization = openai_organization
        super().__init__(
            name,
            step,
            Interface(inputs={"message": str}, outputs={"o0": str}),
            ["o0"],
            **kwargs,
        )


class ChatStepTask(_StepTask):
    """Any chatstep step as a Flyte task.

    Inputs are the step's template variables (``inputs.x``), typed ``str`` unless
    ``input_types`` says otherwise; those read only under ``| default`` are optional. Outputs:
    ``o0``, the first choice's text ("" when the answer is only tool calls), and ``response``,
    the whole response as a dict (tool calls, usage, ...).
    """

    def __init__(
        self,
        name: str,
        step: Step | str | Mapping[str, Any],
        *,
        input_types: Mapping[str, type] | None = None,
        **kwargs: Any,
    ) -> None:
        from chatstep.templating.variables import collect_input_names

        definition = load_step(step)
        data = definition.model_dump(exclude_unset=True, by_alias=False)
        every = collect_input_names(data, field=name)
        required = collect_input_names(data, required_only=True, field=name)
        types = dict(input_types or {})
        unknown = sorted(set(types) - every)
        if unknown:
            raise ConfigError(
                f"{name}.input_types",
                f"names inputs the step does not read: {', '.join(unknown)}",
                f"the step reads: {', '.join(sorted(every)) or 'no inputs'}",
            )
        inputs: dict[str, Any] = {}
        for input_name in sorted(every):
            python_type = types.get(input_name, str)
            inputs[input_name] = (
                python_type if input_name in required else (Optional[python_type], None)  # noqa: UP045
            )
        super().__init__(
            name,
            definition,
            Interface(inputs=inputs, outputs={"o0": str, "response": dict}),
            ["o0", "response"],
            **kwargs,
        )


def _phase_for(exc: ChatstepError) -> int:
    # Errors that retrying later may fix let Flyte's own task retries try again.
    retryable = (RateLimitError, InternalServerError, APITimeoutError, APIConnectionError)
    return int(
        TaskExecution.RETRYABLE_FAILED if isinstance(exc, retryable) else TaskExecution.FAILED
    )


class ChatStepConnector(SyncConnectorBase):  # type: ignore[misc]
    """Runs a ``chatstep`` task: renders the step with the task's inputs and calls the model."""

    name = "chatstep connector"

    def __init__(self) -> None:
        super().__init__(task_type_name=TASK_TYPE)

    async def do(
        self,
        task_template: Any,
        output_prefix: str = "",
        inputs: Any = None,
        **kwargs: Any,
    ) -> Resource:
        from chatstep.core.runner import AsyncRunner

        ctx = FlyteContextManager.current_context()
        values: dict[str, Any] = {}
        if inputs is not None and inputs.literals:
            # TypeEngine's public async converters (its LiteralMap -> kwargs helper is private).
            declared = task_template.interface.inputs
            for name, literal in inputs.literals.items():
                python_type = TypeEngine.guess_python_type(declared[name].type)
                values[name] = await TypeEngine.async_to_python_value(ctx, literal, python_type)
        values = {k: v for k, v in values.items() if v is not None}
        custom = task_template.custom
        step = load_step(custom["step"])
        try:
            async with AsyncRunner(secrets=flyte_secret_store()) as runner:
                result = await runner.run(step, values)
        except ChatstepError as exc:
            return Resource(phase=_phase_for(exc), message=f"{type(exc).__name__}: {exc}")
        response = json.loads(redact(json.dumps(result.response)))
        content = getattr(result, "content", None)
        produced = {"o0": content if isinstance(content, str) else "", "response": response}
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            outputs={k: produced[k] for k in custom.get("outputs", ["o0"])},
        )


def register_connectors() -> None:
    """Register the chatstep connector (idempotent)."""
    ConnectorRegistry.register(ChatStepConnector(), override=True)
