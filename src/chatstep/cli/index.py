"""``chatstep index build|list|show|query``: retrieval indexes of text files (sqlite-vec)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from chatstep.cli.common import print_json, reports_errors

__all__ = ["register"]

index_app = typer.Typer(
    help="Build and search retrieval indexes: chunks of text files with their embeddings.",
    no_args_is_help=True,
)

IndexArg = Annotated[
    str, typer.Argument(help="An index name (in CHATSTEP_HOME/indexes) or a path to a .db file.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@index_app.command("build")
def build(
    docs: Annotated[
        list[Path], typer.Argument(help="Directories (walked for .txt/.md/.rst...) or text files.")
    ],
    step: Annotated[
        Path, typer.Option("--step", help="The embedding step (type: embedding); input is ignored.")
    ],
    index: Annotated[
        str | None,
        typer.Option("--index", help="Index name or .db path (default: the first DOCS' name)."),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="Characters per chunk at most.")
    ] = 1000,
    chunk_overlap: Annotated[
        int, typer.Option("--chunk-overlap", help="Characters consecutive chunks may share.")
    ] = 100,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Chunks per embeddings request at most.")
    ] = 64,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Start the index over (another model, say).")
    ] = False,
    cache: Annotated[
        str | None,
        typer.Option(
            "--cache",
            help="Cache embeddings: 'sqlite' (default file), a file path, or redis://host:port/db.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Chunk DOCS, embed what changed since the last build, and store it in the index.

    Unchanged files (same content) are not embedded again; files no longer in DOCS are dropped.
    """
    from chatstep.core.calls import run_sync
    from chatstep.core.runner import AsyncRunner
    from chatstep.retrieval.build import BuildReport, abuild_index

    async def go() -> BuildReport:
        async with AsyncRunner(cache=cache) as runner:
            return await abuild_index(
                docs,
                step,
                index,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
                batch_size=batch_size,
                rebuild=rebuild,
                runner=runner,
            )

    with reports_errors():
        report = run_sync(go())
        if as_json:
            print_json(report.to_dict())
            return
        typer.echo(
            f"{report.index}: {report.files} files ({report.embedded_files} embedded, "
            f"{report.unchanged_files} unchanged, {report.removed_files} removed"
            + (f", {report.skipped_files} skipped: not text" if report.skipped_files else "")
            + f"), {report.chunks} chunks; {report.embedded_chunks} chunks embedded in "
            f"{report.requests} requests with {report.model} ({report.dimensions} dimensions)"
        )


def _summary(path: Path) -> dict[str, Any]:
    from chatstep.retrieval.store import VectorIndex

    with VectorIndex.create(path) as opened:
        files = opened.files()
        return {
            "name": path.stem,
            "path": str(path),
            "files": len(files),
            "chunks": opened.chunk_count(),
            "model": opened.model,
            "dimensions": opened.dimensions,
            "chunking": opened.meta.get("chunking"),
        }


@index_app.command("list")
def list_indexes(as_json: JsonOption = False) -> None:
    """List the indexes in CHATSTEP_HOME/indexes."""
    from chatstep.retrieval.store import indexes_dir

    with reports_errors():
        rows = [_summary(path) for path in sorted(indexes_dir().glob("*.db"))]
        if as_json:
            print_json(rows)
            return
        for row in rows:
            typer.echo(
                f"{row['name']}\t{row['files']} files\t{row['chunks']} chunks\t"
                f"{row['model']} ({row['dimensions']} dimensions)"
            )


@index_app.command("show")
def show(index: IndexArg, as_json: JsonOption = False) -> None:
    """Show an index: its embedding model, chunking and files."""
    from chatstep.retrieval.store import VectorIndex, index_path

    with reports_errors():
        path = index_path(index, field="INDEX")
        VectorIndex.open(path, field="INDEX").close()  # missing or empty: a clear error
        summary = _summary(path)
        with VectorIndex.open(path, field="INDEX") as opened:
            summary["embedding_step"] = opened.embedding_step
            summary["files"] = [
                {"source": f.source, "chunks": f.chunks, "sha256": f.digest} for f in opened.files()
            ]
        if as_json:
            print_json(summary)
            return
        typer.echo(
            f"{summary['path']}: {summary['chunks']} chunks, {summary['model']} "
            f"({summary['dimensions']} dimensions), chunking {summary['chunking']}"
        )
        for item in summary["files"]:
            typer.echo(f"  {item['source']}\t{item['chunks']} chunks")


@index_app.command("query")
def query(
    index: IndexArg,
    text: Annotated[str, typer.Argument(help="What to search for.")],
    top_k: Annotated[int, typer.Option("--top-k", help="How many chunks (1 to 100).")] = 4,
    as_json: JsonOption = False,
) -> None:
    """Print the chunks nearest to TEXT, best first, with their source and score."""
    from chatstep.core.calls import run_sync
    from chatstep.core.render import make_context
    from chatstep.core.runner import AsyncRunner
    from chatstep.retrieval.retrieve import retrieve_chunks
    from chatstep.steps.definitions import Retrieve
    from chatstep.steps.loading import validate_step

    async def go() -> list[dict[str, Any]]:
        spec = validate_step(
            Retrieve, {"index": index, "query": "{{ inputs.text }}", "top_k": top_k}
        )
        async with AsyncRunner() as runner:
            context = make_context({"text": text}, None, runner.secrets)
            return await retrieve_chunks(runner, spec, context)

    with reports_errors():
        hits = run_sync(go())
        if as_json:
            print_json(hits)
            return
        for hit in hits:
            typer.echo(f"{hit['score']:.4f}\t{hit['source']}:{hit['line']}\t" + _one_line(hit))


def _one_line(hit: dict[str, Any], width: int = 100) -> str:
    text = " ".join(str(hit["text"]).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def register(app: typer.Typer) -> None:
    """Add ``index`` to the app."""
    app.add_typer(index_app, name="index")
