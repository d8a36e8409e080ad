"""Chat messages and content parts, as the Chat Completions API takes them."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from chatstep.steps.strict import StrictModel

__all__ = [
    "AudioPart",
    "ContentPart",
    "FilePart",
    "FunctionCall",
    "ImagePart",
    "ImageURL",
    "Message",
    "MessageToolCall",
    "TextPart",
]


class TextPart(StrictModel):
    """A text content part."""

    type: Literal["text"] = "text"
    text: str


class ImageURL(StrictModel):
    """An image reference: an https URL or a ``data:`` URL."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(StrictModel):
    """An image content part."""

    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class FileRef(StrictModel):
    """A file given by uploaded id or inline base64 data."""

    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FileRef:
        if self.file_id is None and self.file_data is None:
            raise ValueError("a file part needs file_id or file_data")
        return self


class FilePart(StrictModel):
    """A file content part (PDFs and other documents)."""

    type: Literal["file"] = "file"
    file: FileRef


class InputAudio(StrictModel):
    """Base64 audio data and its format."""

    data: str
    format: Literal["wav", "mp3"]


class AudioPart(StrictModel):
    """An audio content part."""

    type: Literal["input_audio"] = "input_audio"
    input_audio: InputAudio


ContentPart = Annotated[
    TextPart | ImagePart | FilePart | AudioPart,
    Field(discriminator="type"),
]


class FunctionCall(StrictModel):
    """A function name and its arguments (a JSON string, or an object that is encoded)."""

    name: str
    arguments: str | dict[str, Any] = "{}"

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


class MessageToolCall(StrictModel):
    """A tool call carried by an assistant message in the history."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(StrictModel):
    """One chat message; ``content`` is a string or a list of parts."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers)")
        if self.role == "function" and not self.name:
            raise ValueError("a function message needs name (the function that produced it)")
        if self.role != "assistant" and (self.tool_calls or self.function_call):
            raise ValueError("only assistant messages carry tool_calls or function_call")
        if self.role != "tool" and self.tool_call_id:
            raise ValueError("tool_call_id belongs on tool messages only")
        has_call = bool(self.tool_calls) or self.function_call is not None
        if self.content is None and not (self.role == "assistant" and (has_call or self.refusal)):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def to_api(self) -> dict[str, Any]:
        """The message as the API takes it (tool-call arguments as JSON strings)."""
        out: dict[str, Any] = {"role": self.role}
        if isinstance(self.content, list):
            out["content"] = [p.model_dump(exclude_none=True) for p in self.content]
        elif self.content is not None or self.role == "assistant":
            out["content"] = self.content
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments_json()},
                }
                for c in self.tool_calls
            ]
        if self.function_call is not None:
            out["function_call"] = {
                "name": self.function_call.name,
                "arguments": self.function_call.arguments_json(),
            }
        if self.refusal is not None:
            out["refusal"] = self.refusal
        return out
