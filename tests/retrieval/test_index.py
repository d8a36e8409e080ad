"""``chatstep index``: building (incremental by content), storing in sqlite-vec, querying."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.testing import TestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EMBED = EXAMPLES / "embed.yaml"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _build(docs: Path, *extra: str) -> dict[str, Any]:
    out = _cli("index", "build", str(docs), "--step", str(EMBED), "--json", *extra)
    assert out.exit_code == 0, out.output
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def _embedding_requests(server: TestServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path.endswith("/embeddings")]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / "rag" / "handbook", tmp_path / "handbook"))


def test_build_embeds_every_chunk_once_and_queries_find_the_right_file(
    docs: Path, openai_env: TestServer
) -> None:
    report = _build(docs)
    assert report["files"] == 3
    assert report["embedded_files"] == 3
    assert report["chunks"] == 3
    assert report["dimensions"] == 256
    assert report["index"].endswith("indexes/handbook.db")  # default: beside the history
    (body,) = _embedding_requests(openai_env)  # one batch for the three chunks
    assert len(body["input"]) == 3
    assert body["model"] == "text-embedding-3-small"

    out = _cli("index", "query", "handbook", "How long does express delivery take?", "--json")
    assert out.exit_code == 0, out.output
    hits = json.loads(out.stdout)
    assert hits[0]["source"] == "shipping.md"
    assert set(hits[0]) == {"text", "source", "score", "chunk", "line"}
    assert hits[0]["score"] > hits[1]["score"]

    listed = _cli("index", "list", "--json")
    assert [row["name"] for row in json.loads(listed.stdout)] == ["handbook"]
    shown = json.loads(_cli("index", "show", "handbook", "--json").stdout)
    assert [f["source"] for f in shown["files"]] == ["refunds.md", "shipping.md", "warranty.txt"]
    assert "input" not in shown["embedding_step"]


def test_rebuild_embeds_only_what_changed_and_drops_removed_files(
    docs: Path, openai_env: TestServer
) -> None:
    _build(docs)
    openai_env.reset()
    unchanged = _build(docs)
    assert unchanged["embedded_files"] == 0
    assert unchanged["unchanged_files"] == 3
    assert _embedding_requests(openai_env) == []  # nothing re-embedded

    (docs / "shipping.md").write_text("# Shipping\n\nParcels travel by bicycle courier.\n")
    (docs / "warranty.txt").unlink()
    (docs / "returns.txt").write_text("Returns are free with the prepaid label in the box.\n")
    changed = _build(docs)
    assert changed["embedded_files"] == 2
    assert changed["unchanged_files"] == 1
    assert changed["removed_files"] == 1
    assert changed["chunks"] == 3
    (body,) = _embedding_requests(openai_env)
    assert sorted(body["input"]) == [
        "# Shipping\n\nParcels travel by bicycle courier.",
        "Returns are free with the prepaid label in the box.",
    ]
    out = _cli("index", "query", "handbook", "kettle warranty", "--json", "--top-k", "5")
    sources = [hit["source"] for hit in json.loads(out.stdout)]
    assert sorted(sources) == ["refunds.md", "returns.txt", "shipping.md"]


def test_many_chunks_go_in_batches(tmp_path: Path, openai_env: TestServer) -> None:
    docs = tmp_path / "notes"
    docs.mkdir()
    for i in range(5):
        (docs / f"n{i}.txt").write_text(f"Note {i} about topic number {i}.\n")
    report = _build(docs, "--batch-size", "2")
    assert report["requests"] == 3
    assert [len(b["input"]) for b in _embedding_requests(openai_env)] == [2, 2, 1]


def test_another_model_or_dimension_is_refused(
    docs: Path, tmp_path: Path, openai_env: TestServer
) -> None:
    _build(docs)
    other = tmp_path / "other.yaml"
    other.write_text("type: embedding\nmodel: text-embedding-3-large\ninput: x\n")
    out = _cli("index", "build", str(docs), "--step", str(other))
    assert out.exit_code != 0
    assert "text-embedding-3-large" in out.output
    assert "text-embedding-3-small" in out.output
    assert "--rebuild" in out.output

    smaller = tmp_path / "smaller.yaml"
    smaller.write_text("type: embedding\nmodel: text-embedding-3-small\ninput: x\ndimensions: 64\n")
    out = _cli("index", "build", str(docs), "--step", str(smaller))
    assert out.exit_code != 0
    assert "64 dimensions" in out.output
    assert "256" in out.output

    openai_env.reset()
    out = _cli("index", "build", str(docs), "--step", str(smaller), "--rebuild", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["dimensions"] == 64
    assert len(_embedding_requests(openai_env)) == 1


def test_non_utf8_file_is_refused_with_its_path_before_any_request(
    docs: Path, openai_env: TestServer
) -> None:
    bad = docs / "latin1.txt"
    bad.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    out = _cli("index", "build", str(docs), "--step", str(EMBED))
    assert out.exit_code != 0
    assert str(bad) in out.output
    assert "not UTF-8" in out.output
    assert "Traceback" not in out.output
    assert _embedding_requests(openai_env) == []


def test_directory_walk_skips_other_files_and_says_so(docs: Path, openai_env: TestServer) -> None:
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n")
    (docs / ".hidden.md").write_text("secret notes")
    report = _build(docs)
    assert report["files"] == 3
    assert report["skipped_files"] == 1
    out = _cli("index", "build", str(docs), "--step", str(EMBED))
    assert "1 skipped: not text" in out.stdout


def test_index_path_and_file_arguments(tmp_path: Path, docs: Path, openai_env: TestServer) -> None:
    target = tmp_path / "kb" / "faq.db"
    out = _cli(
        "index", "build", str(docs / "refunds.md"), "--step", str(EMBED), "--index", str(target)
    )
    assert out.exit_code == 0, out.output
    assert target.is_file()
    hits = json.loads(_cli("index", "query", str(target), "refund", "--json").stdout)
    assert hits[0]["source"] == str(docs / "refunds.md")


def test_query_errors_name_the_index(tmp_path: Path, openai_env: TestServer) -> None:
    out = _cli("index", "query", "nowhere", "hello")
    assert out.exit_code != 0
    assert "no index at" in out.output
    assert "chatstep index build" in out.output
    empty = tmp_path / "empty"
    empty.mkdir()
    built = _cli("index", "build", str(empty), "--step", str(EMBED), "--index", "empty")
    assert built.exit_code == 0, built.output
    out = _cli("index", "query", "empty", "hello")
    assert out.exit_code != 0
    assert "is empty" in out.output
    out = _cli("index", "query", "bad name!", "hello")
    assert out.exit_code != 0
    assert "neither an index name nor a path" in out.output


def test_large_file_is_refused(tmp_path: Path, openai_env: TestServer) -> None:
    from chatstep.retrieval.chunking import MAX_FILE_BYTES

    big = tmp_path / "big.txt"
    big.write_text("word " * (MAX_FILE_BYTES // 5 + 1))
    out = _cli("index", "build", str(big), "--step", str(EMBED))
    assert out.exit_code != 0
    assert str(big) in out.output
    assert "at most" in out.output


def test_python_build_index(docs: Path, openai_env: TestServer) -> None:
    from chatstep import build_index

    report = build_index(docs, EMBED, "from-python")
    assert report.embedded_files == 3
    assert report.index.endswith("from-python.db")
    again = build_index([docs], EMBED, "from-python")
    assert again.unchanged_files == 3
    assert again.requests == 0
