"""``chatstep index build``: embed what changed in DOCS into an index, through the pipeline.

Each changed or new file (by content digest) is chunked; chunks are embedded in batches of at
most ``batch_size`` inputs and :data:`MAX_BATCH_CHARS` characters, one request at a time through
:class:`~chatstep.core.runner.AsyncRunner` (cache, retries with 429 back-off, history, cost).
After each request, the files whose chunks all have vectors are written (one transaction), so
an interrupted build keeps what it paid for. Unchanged files are not sent again; files no
longer in DOCS are dropped.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.errors import ConfigError
from chatstep.retrieval.chunking import (
    Chunk,
    ChunkSettings,
    Document,
    find_documents,
    split_document,
)
from chatstep.retrieval.store import VectorIndex
from chatstep.steps.definitions import Embedding
from chatstep.steps.fields import looks_like_template
from chatstep.steps.loading import StepSource, load_step, step_from_dict

if TYPE_CHECKING:
    from chatstep.core.runner import AsyncRunner

__all__ = [
    "MAX_BATCH_CHARS",
    "MAX_CHUNKS",
    "BuildReport",
    "abuild_index",
    "build_index",
    "check_answered_by",
    "embedding_step_for",
    "update_index",
]

MAX_CHUNKS = 200_000
"""The most chunks one index holds."""
MAX_BATCH_CHARS = 200_000
"""Characters per embeddings request at most (well under the API's 300,000-token cap)."""
_TEXTS = "{{ inputs.texts }}"  # chunk text is data: passed as an input, never rendered


@dataclass
class BuildReport:
    """What a build did; ``requests`` counts embeddings calls (cache hits included)."""

    index: str
    files: int = 0
    embedded_files: int = 0
    unchanged_files: int = 0
    removed_files: int = 0
    skipped_files: int = 0
    embedded_chunks: int = 0
    chunks: int = 0
    requests: int = 0
    model: str = ""
    dimensions: int | None = None
    cost: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stored_step(step: Embedding) -> dict[str, Any]:
    """The embedding step as the index keeps it: no ``input``, no literal API key."""
    data = step.model_dump(exclude_unset=True, by_alias=False, exclude={"input"})
    key = data.get("api_key")
    if key is not None and not looks_like_template(str(key)):
        del data["api_key"]  # never stored; the query uses the default key (OPENAI_API_KEY)
    data["type"] = "embedding"
    return data


def embedding_step_for(stored: dict[str, Any]) -> Embedding:
    """An embedding step over ``inputs.texts`` from a stored step."""
    step = step_from_dict({**stored, "input": _TEXTS})
    assert isinstance(step, Embedding)
    return step


def as_floats(vector: Any, where: str) -> list[float]:
    """A vector from an embeddings answer: floats, or base64 little-endian float32."""
    if isinstance(vector, str):
        raw = base64.b64decode(vector)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(vector, list) and vector and all(isinstance(x, int | float) for x in vector):
        return [float(x) for x in vector]
    raise ConfigError(where, "the endpoint sent no usable vector", "check the embedding model")


def _load_embedding_step(step: StepSource) -> Embedding:
    loaded = load_step(step)
    if not isinstance(loaded, Embedding):
        raise ConfigError(
            "--step",
            f"is a {loaded.kind} step; an index is built with an embedding step",
            "give a step with type: embedding (its input is replaced by the chunks)",
        )
    return loaded


def _check_same_embedding(index: VectorIndex, step: Embedding) -> None:
    fix = "build with the index's own embedding step, or start the index over with --rebuild"
    if index.model is not None and index.model != step.model:
        raise ConfigError(
            "--step",
            f"embeds with model {step.model!r}, but {index.path} was built with {index.model!r}",
            fix,
        )
    dims = step.dimensions if isinstance(step.dimensions, int) else None
    if dims is not None and index.dimensions is not None and dims != index.dimensions:
        raise ConfigError(
            "--step",
            f"asks for {dims} dimensions, but {index.path} holds {index.dimensions}",
            fix,
        )


def _batches(chunks: Sequence[Chunk], size: int) -> list[list[Chunk]]:
    out: list[list[Chunk]] = []
    current: list[Chunk] = []
    chars = 0
    for chunk in chunks:
        if current and (len(current) >= size or chars + len(chunk.text) > MAX_BATCH_CHARS):
            out.append(current)
            current, chars = [], 0
        current.append(chunk)
        chars += len(chunk.text)
    if current:
        out.append(current)
    return out


async def update_index(
    runner: AsyncRunner,
    docs: Sequence[str | Path],
    step: StepSource,
    path: Path,
    *,
    settings: ChunkSettings | None = None,
    batch_size: int = 64,
    rebuild: bool = False,
) -> BuildReport:
    """Bring the index at ``path`` up to date with ``docs``; see the module docstring.

    Raises ConfigError (bad DOCS, a file too large or not UTF-8, another embedding model or
    dimension than the index's, too many chunks) before anything is sent where it can, and
    APIError when the endpoint fails after its retries.
    """
    settings = settings or ChunkSettings()
    if not 1 <= batch_size <= 2048:
        raise ConfigError("--batch-size", f"{batch_size} is out of range", "give 1 to 2048")
    from chatstep.storage.files import ExclusiveLock

    embed = _load_embedding_step(step)
    documents, skipped = find_documents(docs, settings)
    lock = ExclusiveLock(
        path,
        what="this index",
        fix="wait for the other build of it to finish, then build again (only what changed "
        "is embedded)",
    )
    with lock.held():
        return await _update_locked(
            runner, documents, skipped, embed, path, settings, batch_size, rebuild
        )


async def _update_locked(
    runner: AsyncRunner,
    documents: Sequence[Document],
    skipped: int,
    embed: Embedding,
    path: Path,
    settings: ChunkSettings,
    batch_size: int,
    rebuild: bool,
) -> BuildReport:
    """:func:`update_index` under the index's lock (one build of an index at a time)."""
    if rebuild and path.exists():
        path.unlink()
    report = BuildReport(index=str(path), files=len(documents), skipped_files=skipped)
    with VectorIndex.create(path) as index:
        _check_same_embedding(index, embed)
        known = {f.source: f.digest for f in index.files()}
        changed = [d for d in documents if known.get(d.source) != d.digest]
        current = {d.source for d in documents}
        removed = sorted(source for source in known if source not in current)
        report.unchanged_files = len(documents) - len(changed)
        report.removed_files = len(removed)
        index.remove(removed)
        per_file = [(doc, split_document(doc, settings)) for doc in changed]
        total = (
            index.chunk_count()
            - sum(f.chunks for f in index.files() if f.source in {d.source for d in changed})
            + sum(len(chunks) for _, chunks in per_file)
        )
        if total > MAX_CHUNKS:
            raise ConfigError(
                "DOCS",
                f"would give {total:,} chunks; an index holds at most {MAX_CHUNKS:,}",
                "index fewer files, or raise --chunk-size",
            )
        index.set_meta(
            model=embed.model,
            embedding_step=json.dumps(stored_step(embed)),
            chunking=settings.key(),
        )
        await _embed_files(runner, index, embed, per_file, batch_size, report)
        report.chunks = index.chunk_count()
        report.model = embed.model
        report.dimensions = index.dimensions
    return report


async def _embed_files(
    runner: AsyncRunner,
    index: VectorIndex,
    embed: Embedding,
    per_file: list[tuple[Any, list[Chunk]]],
    batch_size: int,
    report: BuildReport,
) -> None:
    from chatstep.core.result import EmbeddingResult

    step = embed.model_copy(update={"input": _TEXTS})
    remaining: dict[str, int] = {doc.source: len(chunks) for doc, chunks in per_file}
    blank = [(doc.source, doc.digest, chunks) for doc, chunks in per_file if not chunks]
    index.replace(blank)  # blank files: known (not read again), nothing to embed
    report.embedded_files += len(blank)
    owners = {doc.source: (doc, chunks) for doc, chunks in per_file}
    cost = 0.0
    flat = [chunk for _, chunks in per_file for chunk in chunks]
    for batch in _batches(flat, batch_size):
        result = await runner.run(step, {"texts": [c.text for c in batch]})
        assert isinstance(result, EmbeddingResult)
        report.requests += 1
        cost += result.cost or 0.0
        check_answered_by(index, result.response.get("model"), "--step")
        vectors = result.vectors
        if len(vectors) != len(batch):
            raise ConfigError(
                "--step",
                f"the endpoint sent {len(vectors)} vectors for {len(batch)} chunks",
                "check the embedding endpoint",
            )
        done: list[tuple[str, str, list[Chunk]]] = []
        for chunk, vector in zip(batch, vectors, strict=True):
            chunk.vector = as_floats(vector, "--step")
            _check_dimensions(index, len(chunk.vector))
            remaining[chunk.source] -= 1
            if remaining[chunk.source] == 0:
                doc, chunks = owners[chunk.source]
                done.append((doc.source, doc.digest, chunks))
                report.embedded_chunks += len(chunks)
        # Files whose chunks all have vectors are kept at once: an interrupted build keeps them.
        index.replace(done)
        report.embedded_files += len(done)
    report.cost = round(cost, 8)


def check_answered_by(index: VectorIndex, model: Any, field: str) -> None:
    """Refuse vectors from another model than the one that embedded the index's chunks.

    The step's ``model`` may be answered by another one: with no ``OPENAI_API_KEY`` the
    embedded local model answers ``text-embedding-3-small``, in another vector space of maybe
    the same size, which would give meaningless matches. The answering model (the response's
    ``model``) is kept in the index as ``answered_by`` by the first build.
    """
    if not isinstance(model, str) or not model:
        return
    known = index.meta.get("answered_by")
    if known is None:
        index.set_meta(answered_by=model)
    elif known != model:
        raise ConfigError(
            field,
            f"the vectors come from model {model!r}, but {index.path} was embedded by "
            f"{known!r}: their vectors cannot be compared (with no OPENAI_API_KEY, the "
            "embedded local model answers)",
            "use the endpoint and key the index was built with, or start the index over with "
            "--rebuild",
        )


def _check_dimensions(index: VectorIndex, size: int) -> None:
    if index.dimensions is not None and size != index.dimensions:
        raise ConfigError(
            "--step",
            f"the model returns {size}-dimensional vectors, but {index.path} holds "
            f"{index.dimensions}-dimensional ones",
            "build with the index's own embedding step, or start the index over with --rebuild",
        )


async def abuild_index(
    docs: Sequence[str | Path] | str | Path,
    step: StepSource,
    index: str | Path | None = None,
    *,
    chunk_size: int = 1000,
    chunk_overlap: int = 100,
    batch_size: int = 64,
    rebuild: bool = False,
    runner: AsyncRunner | None = None,
) -> BuildReport:
    """Build or update the index ``index`` (a name in ``$CHATSTEP_HOME/indexes`` or a ``.db``
    path; default: the first DOCS' name) from ``docs`` with the embedding ``step``.

    Raises ConfigError and APIError as :func:`update_index`.
    """
    from chatstep.core.runner import AsyncRunner
    from chatstep.retrieval.store import index_path

    paths = [docs] if isinstance(docs, str | Path) else list(docs)
    if not paths:
        raise ConfigError("docs", "names no file or directory", "give the documents to index")
    name = index if index is not None else (Path(paths[0]).resolve().stem or "index")
    path = index_path(name, field="index")
    settings = ChunkSettings(chunk_size, chunk_overlap)
    if runner is not None:
        return await update_index(
            runner, paths, step, path, settings=settings, batch_size=batch_size, rebuild=rebuild
        )
    async with AsyncRunner() as own:
        return await update_index(
            own, paths, step, path, settings=settings, batch_size=batch_size, rebuild=rebuild
        )


def build_index(
    docs: Sequence[str | Path] | str | Path,
    step: StepSource,
    index: str | Path | None = None,
    **options: Any,
) -> BuildReport:
    """:func:`abuild_index`, blocking."""
    from chatstep.core.blocking import run_sync

    return run_sync(abuild_index(docs, step, index, **options))
