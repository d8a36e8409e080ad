"""Tools, legacy functions, Kestra-style functions, and their translation to ``tools``.

Kestra's ChatCompletion task describes functions with a flat parameter list::

    functions:
      - name: respond_to_review
        parameters:
          - {name: response_urgency, type: string, required: true,
             enumValues: [reply_immediately, reply_later]}

chatstep accepts that form, OpenAI's legacy form (``parameters`` is a JSON Schema) and modern
``tools``. Legacy and Kestra functions are sent as ``tools`` (the ``functions`` parameter is
deprecated and refused by newer models); ``function_call`` becomes ``tool_choice``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from chatstep.steps.strict import StrictModel

__all__ = [
    "FunctionDef",
    "KestraParameter",
    "NamedToolChoice",
    "Tool",
    "function_call_to_tool_choice",
    "functions_to_tools",
]

_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
_JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")


class KestraParameter(StrictModel):
    """One parameter of a Kestra-style function."""

    name: str = Field(pattern=_NAME_PATTERN)
    type: str
    description: str | None = None
    required: bool = False
    enum_values: list[Any] | None = Field(default=None, alias="enumValues")

    @field_validator("type")
    @classmethod
    def _json_type(cls, value: str) -> str:
        lowered = value.lower()
        if lowered not in _JSON_TYPES:
            raise ValueError(
                f"unknown parameter type {value!r}; use one of {', '.join(_JSON_TYPES)}"
            )
        return lowered

    def to_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.description:
            schema["description"] = self.description
        if self.enum_values is not None:
            schema["enum"] = list(self.enum_values)
        if self.type == "array":
            schema["items"] = {}
        return schema


class FunctionDef(StrictModel):
    """A function the model may call; ``parameters`` is a JSON Schema or a Kestra list."""

    name: str = Field(pattern=_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | list[KestraParameter] | None = None
    strict: bool | None = None

    def parameters_schema(self) -> dict[str, Any]:
        if self.parameters is None:
            return {"type": "object", "properties": {}}
        if isinstance(self.parameters, dict):
            return self.parameters
        return {
            "type": "object",
            "properties": {p.name: p.to_schema() for p in self.parameters},
            "required": [p.name for p in self.parameters if p.required],
        }

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["parameters"] = self.parameters_schema()
        if self.strict is not None:
            out["strict"] = self.strict
        return out


class Tool(StrictModel):
    """A tool the model may call (only function tools exist in Chat Completions)."""

    type: Literal["function"] = "function"
    function: FunctionDef

    def to_api(self) -> dict[str, Any]:
        return {"type": "function", "function": self.function.to_api()}


class _FunctionName(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    """Force a call to one named function."""

    type: Literal["function"] = "function"
    function: _FunctionName


def functions_to_tools(functions: list[FunctionDef]) -> list[dict[str, Any]]:
    """Legacy or Kestra functions as ``tools`` entries."""
    return [{"type": "function", "function": f.to_api()} for f in functions]


def function_call_to_tool_choice(function_call: str | dict[str, Any]) -> str | dict[str, Any]:
    """``function_call`` ("auto", "none", a name, or {"name"}) as a ``tool_choice``."""
    if isinstance(function_call, dict):
        return {"type": "function", "function": {"name": function_call["name"]}}
    if function_call in ("auto", "none"):
        return function_call
    return {"type": "function", "function": {"name": function_call}}
