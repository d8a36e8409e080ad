"""The OpenAPI 3.1 document of a step service, generated from the served steps.

Each step's request body is an object with one property per input its templates read (required
unless read only under ``| default`` / ``is defined``; no other property allowed). Input values
may be any JSON: a template renders whatever it is given, and a value a field cannot take (a
``temperature`` of ``"hot"``) is a 422 naming the input. The response is the step result; a step
with a ``json_schema`` output format gives ``parsed`` that schema.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from chatstep.serving.catalog import ServedStep
from chatstep.steps.definitions import ChatCompletion

__all__ = ["openapi_document", "step_summary"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "param": {"type": ["string", "null"]},
                            "code": {"type": ["string", "null"]},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "name", "arguments"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "arguments": {"type": "object", "description": "The decoded JSON arguments."},
    },
}
_RESULT_PROPERTIES: dict[str, Any] = {
    "step_id": {"type": "string"},
    "content": {"type": ["string", "null"], "description": "The first choice's text."},
    "parsed": {"description": "The first choice's JSON output (JSON output formats), or null."},
    "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}},
    "usage": {"type": "object", "description": "The endpoint's token counts."},
    "cost": {"type": ["number", "null"], "description": "USD; null for an unpriced model."},
    "cost_breakdown": {"type": ["object", "null"]},
    "usage_estimated": {"type": "boolean"},
    "cached": {"type": "boolean"},
    "latency_ms": {"type": ["number", "null"]},
    "attempts": {"type": "integer"},
    "answered_by": {
        "type": "object",
        "description": "The endpoint that answered: candidate (step or fallbacks[i]), model, "
        "base_url (local for the embedded model).",
        "properties": {
            "candidate": {"type": "string"},
            "model": {"type": ["string", "null"]},
            "base_url": {"type": ["string", "null"]},
        },
    },
    "fallback_errors": {"type": "array", "items": {"type": "object"}},
    "response": {"type": "object", "description": "The endpoint's whole response body."},
}
_ERROR_STATUSES = {
    "400": "The body is not a JSON object.",
    "401": "The API key is missing or wrong.",
    "402": "The server's --max-cost budget cannot cover this request.",
    "404": "No such step.",
    "413": "The body is larger than the server accepts.",
    "422": "An input is missing, unknown, or not a value the step can take.",
    "429": "The upstream endpoint's rate limit (Retry-After says when to try again).",
    "500": "The server failed (its log says why).",
    "502": "The upstream endpoint answered, but not with a usable answer.",
    "503": "The upstream endpoint is unavailable, or the server is busy (Retry-After).",
    "504": "The upstream endpoint did not answer in time.",
}


def step_summary(served: ServedStep) -> dict[str, Any]:
    """What ``GET /steps`` says about one step."""
    step = served.step
    return {
        "id": served.id,
        "path": f"/steps/{served.id}",
        "type": type(step).kind,
        "model": step.model,
        "description": step.description,
        "inputs": {
            "required": sorted(served.required_inputs),
            "optional": sorted(served.optional_inputs),
        },
        "streams": served.streams,
        "output": _output_kind(served),
    }


def _output_kind(served: ServedStep) -> str:
    step = served.step
    if not isinstance(step, ChatCompletion):
        return "response"
    if step.response_format is None:
        return "text"
    return step.response_format.type


def openapi_document(
    steps: Sequence[ServedStep], *, title: str = "chatstep steps", version: str = "0.1.0"
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for ``POST /steps/{id}`` of every step, and ``GET /steps``."""
    schemas: dict[str, Any] = {"Error": _ERROR, "ToolCall": _TOOL_CALL}
    paths: dict[str, Any] = {
        "/steps": {
            "get": {
                "operationId": "list_steps",
                "summary": "The served steps and their inputs.",
                "responses": {
                    "200": {
                        "description": "One entry per step.",
                        "content": {"application/json": {"schema": {"type": "array"}}},
                    },
                    **_errors(("401",)),
                },
            }
        }
    }
    for served in steps:
        name = _component_name(served.id)
        schemas[f"{name}Inputs"] = _inputs_schema(served)
        output = _output_schema(served, f"#/components/schemas/{name}Output")
        if output is not None:
            schemas[f"{name}Output"] = output
        schemas[f"{name}Result"] = _result_schema(name, output is not None)
        paths[f"/steps/{served.id}"] = {"post": _operation(served, name)}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _component_name(step_id: str) -> str:
    # Component names allow letters, digits, '.', '-' and '_': a step id already fits.
    return step_id


def _errors(statuses: Sequence[str]) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {
        status: {
            "description": _ERROR_STATUSES[status],
            "content": {"application/json": {"schema": ref}},
        }
        for status in statuses
    }


def _operation(served: ServedStep, name: str) -> dict[str, Any]:
    step = served.step
    summary = step.description or f"Run step {served.id} ({type(step).kind}, {step.model})"
    parameters = []
    if served.streams:
        parameters.append(
            {
                "name": "stream",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": "Answer with server-sent events: delta and tool_call events "
                "while the model writes, then one result (or error) event.",
            }
        )
    ok: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}Result"}}
    }
    if served.streams:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "operationId": f"run_{served.id}".replace("-", "_").replace(".", "_"),
        "summary": summary.strip().splitlines()[0][:200] if summary.strip() else served.id,
        "parameters": parameters,
        "requestBody": {
            "required": bool(served.required_inputs),
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{name}Inputs"}}
            },
        },
        "responses": {
            "200": {"description": "The step result.", "content": ok},
            **_errors(tuple(_ERROR_STATUSES)),
        },
    }


def _inputs_schema(served: ServedStep) -> dict[str, Any]:
    properties = {
        input_name: {
            "description": f"Any JSON value; read by the step's {', '.join(fields)}.",
        }
        for input_name, fields in sorted(served.readers.items())
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if served.required_inputs:
        schema["required"] = sorted(served.required_inputs)
    return schema


def _output_schema(served: ServedStep, where: str) -> dict[str, Any] | None:
    step = served.step
    if not isinstance(step, ChatCompletion) or step.response_format is None:
        return None
    fmt = step.response_format
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        # Local references (#/$defs/x) point into the step's schema, which now lives at `where`.
        schema: dict[str, Any] = _rebase_refs(copy.deepcopy(fmt.json_schema.schema_), where)
        return schema
    if fmt.type == "json_object":
        return {"type": "object"}
    return None


def _rebase_refs(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#"):
                out[key] = where + item[1:]
            else:
                out[key] = _rebase_refs(item, where)
        return out
    if isinstance(value, list):
        return [_rebase_refs(item, where) for item in value]
    return value


def _result_schema(name: str, typed_output: bool) -> dict[str, Any]:
    properties = dict(_RESULT_PROPERTIES)
    if typed_output:
        properties["parsed"] = {
            "description": "The first choice's JSON output, validated against the step's schema.",
            "$ref": f"#/components/schemas/{name}Output",
        }
    return {"type": "object", "properties": properties}
