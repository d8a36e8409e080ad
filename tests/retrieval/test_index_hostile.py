"""``chatstep index build`` given what a careless or hostile DOCS folder holds (found by trying
to break it): links out of the folder, binary files, two builds at once."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.retrieval.store import index_path
from chatstep.storage.files import ExclusiveLock
from chatstep.testing import TestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EMBED = EXAMPLES / "embed.yaml"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / "rag" / "handbook", tmp_path / "handbook"))


def test_links_leading_out_of_docs_are_not_indexed(
    docs: Path, tmp_path: Path, openai_env: TestServer
) -> None:
    private = tmp_path / "private.txt"
    private.write_text("root:x:0:0:the password file")
    (docs / "outside.txt").symlink_to(private)
    (docs / "loop").symlink_to(docs)
    (docs / "self.md").symlink_to(docs / "self.md")  # a link to itself
    (docs / "inside.md").symlink_to(docs / "shipping.md")
    out = _cli("index", "build", str(docs), "--step", str(EMBED), "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["files"] == 4  # the three files and the link inside DOCS
    assert report["skipped_files"] == 2
    sent = json.dumps([r.body for r in openai_env.requests])
    assert "password" not in sent
    listing = _cli("index", "show", "handbook")
    assert "outside.txt" not in listing.output
    assert "inside.md" in listing.output


def test_a_file_with_nul_bytes_is_refused_with_its_path(docs: Path, openai_env: TestServer) -> None:
    (docs / "utf16.txt").write_bytes("hello".encode("utf-16-le"))
    out = _cli("index", "build", str(docs), "--step", str(EMBED))
    assert out.exit_code == 3
    assert "utf16.txt" in out.output
    assert "NUL byte (byte 1)" in out.output
    assert "Traceback" not in out.output
    assert openai_env.requests == []


def test_a_second_build_of_one_index_is_refused_while_the_first_runs(
    docs: Path, openai_env: TestServer
) -> None:
    with ExclusiveLock(index_path("handbook"), what="x", fix="y").held():
        out = _cli("index", "build", str(docs), "--step", str(EMBED))
    assert out.exit_code == 12, out.output
    assert "in use by another running chatstep" in out.output
    assert "wait for the other build" in out.output
    assert openai_env.requests == []
    out = _cli("index", "build", str(docs), "--step", str(EMBED))
    assert out.exit_code == 0, out.output


def test_top_k_larger_than_the_index_gives_every_chunk(docs: Path, openai_env: TestServer) -> None:
    (docs / "empty.md").write_text("")
    assert _cli("index", "build", str(docs), "--step", str(EMBED)).exit_code == 0
    out = _cli("index", "query", "handbook", "express delivery", "--top-k", "50", "--json")
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)) == 3


def test_another_sqlite_database_is_refused_and_left_untouched(
    docs: Path, tmp_path: Path, openai_env: TestServer
) -> None:
    other = tmp_path / "history.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE calls (id INTEGER)")
    conn.close()
    for args in (
        ("index", "show", str(other)),
        ("index", "query", str(other), "x"),
        ("index", "build", str(docs), "--step", str(EMBED), "--index", str(other)),
    ):
        out = _cli(*args)
        assert out.exit_code == 3, out.output
        assert "is a SQLite database but not a chatstep index (left untouched)" in out.output
    with sqlite3.connect(other) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"calls"}
    assert openai_env.requests == []


@pytest.mark.skipif(sys.platform != "linux", reason="/proc refuses new files on Linux")
def test_an_index_where_no_file_can_be_made_is_not_said_in_use(
    docs: Path, openai_env: TestServer
) -> None:
    out = _cli("index", "build", str(docs), "--step", str(EMBED), "--index", "/proc/x.db")
    assert out.exit_code == 12, out.output
    assert "cannot create the lock file" in out.output
    assert "in use" not in out.output
