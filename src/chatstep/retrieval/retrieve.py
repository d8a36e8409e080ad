"""``retrieve:`` on a chat step: the best chunks of an index, put into templates as ``retrieved``.

Before the step's messages are rendered, ``retrieve.query`` is rendered against the run's inputs
and outputs, embedded with the index's own embedding step (through the same runner: cache,
retries, history) and matched against the index. Templates then see ``retrieved``: a list of
``{text, source, score, chunk, line}``, best first; the result keeps it as ``.retrieved``.
An index is opened once per runner (so once per map run, not per row).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.errors import ConfigError
from chatstep.retrieval.build import as_floats, check_answered_by, embedding_step_for
from chatstep.retrieval.store import VectorIndex, index_path

if TYPE_CHECKING:
    from chatstep.core.runner import AsyncRunner
    from chatstep.steps.definitions import Retrieve
    from chatstep.templating.sandbox import TemplateContext

__all__ = ["IndexCache", "placeholder_chunks", "retrieve_chunks"]

MAX_QUERY_CHARS = 20_000


class IndexCache:
    """Open indexes by path, closed together (a runner holds one)."""

    def __init__(self) -> None:
        self._open: dict[Path, VectorIndex] = {}

    def get(self, name_or_path: str, field: str) -> VectorIndex:
        path = index_path(name_or_path, field=field).resolve()
        index = self._open.get(path)
        if index is None:
            index = self._open[path] = VectorIndex.open(path, field=field)
        return index

    def close(self) -> None:
        for index in self._open.values():
            index.close()
        self._open.clear()


async def retrieve_chunks(
    runner: AsyncRunner, spec: Retrieve, context: TemplateContext, *, prefix: str = ""
) -> list[dict[str, Any]]:
    """The ``top_k`` chunks nearest to the rendered query, best first.

    Raises ConfigError naming ``retrieve.index`` (missing or empty index, a query vector of
    another dimension) or ``retrieve.query`` (empty or too long).
    """
    from chatstep.core.result import EmbeddingResult
    from chatstep.templating.sandbox import render_value

    where = f"{prefix}.retrieve" if prefix else "retrieve"
    query = render_value(spec.query, context, f"{where}.query")
    if not isinstance(query, str) or not query.strip():
        raise ConfigError(
            f"{where}.query",
            "rendered to empty text: there is nothing to search the index with",
            "make the query name an input that holds the question, e.g. '{{ inputs.question }}'",
        )
    if len(query) > MAX_QUERY_CHARS:
        raise ConfigError(
            f"{where}.query",
            f"rendered to {len(query):,} characters; a query may have {MAX_QUERY_CHARS:,}",
            "query with the question, not a whole document",
        )
    index = runner.indexes.get(spec.index, f"{where}.index")
    step = embedding_step_for(index.embedding_step)
    result = await runner.run(step, {"texts": [query]})
    assert isinstance(result, EmbeddingResult)
    check_answered_by(index, result.response.get("model"), f"{where}.index")
    vector = as_floats(result.vectors[0] if result.vectors else None, f"{where}.index")
    if len(vector) != index.dimensions:
        raise ConfigError(
            f"{where}.index",
            f"the query embeds to {len(vector)} dimensions, but {index.path} holds "
            f"{index.dimensions}-dimensional vectors",
            "query with the embedding model the index was built with, or rebuild the index "
            "with --rebuild",
        )
    return index.search(vector, spec.top_k)


def placeholder_chunks(spec: Retrieve) -> list[dict[str, Any]]:
    """Stand-ins for a cost estimate, which calls nothing: ``top_k`` chunks as long as the
    index's chunks may be (its chunk size, read from the file; 1000 characters if unknown),
    of text counting about 4 characters a token."""
    size = 1000
    try:
        with VectorIndex.open(index_path(spec.index)) as index:
            size = int((index.meta.get("chunking") or "").split("/")[1])
    except (ConfigError, IndexError, ValueError):
        pass  # no index yet: the default size
    text = "abc " * (size // 4)
    return [
        {"text": text, "source": "estimate", "score": 0.0, "chunk": i, "line": 1}
        for i in range(spec.top_k)
    ]
