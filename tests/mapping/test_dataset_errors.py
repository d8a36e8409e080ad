"""Malformed datasets are ConfigErrors naming file and line: never merged, padded or a traceback.

Each input is one from issue 11 (kind 7); the seeded fuzz at the end runs 120 random and
mutated datasets through ``map_file`` against the test server.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.errors import ChatstepError, ConfigError
from chatstep.mapping.datasets import (
    MAX_CSV_FIELD_CHARS,
    MAX_JSON_DEPTH,
    MAX_ROW_BYTES,
    read_rows,
)
from chatstep.mapping.files import map_file
from chatstep.mapping.writers import open_writer

from .conftest import ServerFactory, chat_bodies

needs_pyarrow = pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None, reason="pyarrow (the 'parquet' extra) is missing"
)
STEP = 'model: gpt-4o-mini\nprompt: "{{ inputs.text }}"\nmax_tokens: 5\n'


def rows_of(path: Path) -> list[dict[str, object]]:
    return list(read_rows(path))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_unclosed_quote_does_not_merge_rows(tmp_path: Path) -> None:
    # The input: exit 0 with rows 1-3 merged into one value before.
    path = write(tmp_path, "rows.csv", b'id,text\n0,"ok"\n1,"open quote\n2,next\n3,last\n')
    with pytest.raises(ConfigError, match=r"rows.csv line 3: .*never closed") as caught:
        rows_of(path)
    assert "unmatched" in str(caught.value)
    # A quote closed later but followed by text: the record's start line is named.
    path = write(tmp_path, "b.csv", b'id,text\n0,ok\n1,"open\n2,"next\n')
    with pytest.raises(ConfigError, match=r"b.csv line 3: the record starting here"):
        rows_of(path)


def test_a_quoted_value_over_several_lines_is_fine_and_lines_stay_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.csv", b'id,text\n0,"two\nlines"\n1,x,extra\n')
    rows = read_rows(path)
    assert next(rows) == {"id": "0", "text": "two\nlines"}
    with pytest.raises(ConfigError, match=r"ok.csv line 4: 3 values, more than the header's 2"):
        next(rows)


def test_a_short_row_is_refused_not_sent_with_none(tmp_path: Path) -> None:
    path = write(tmp_path, "short.csv", b"id,text,lang\n0,a,en\n1,b\n")
    with pytest.raises(ConfigError, match=r"short.csv line 3: 2 values, fewer than the header's 3"):
        rows_of(path)


def test_a_huge_csv_field_names_the_limit(tmp_path: Path) -> None:
    # A quoted value over many lines, each under the line limit, longer than the field limit.
    lines = (MAX_CSV_FIELD_CHARS // 1_000_000) + 2
    big = b'"' + b"\n".join([b"x" * 1_000_000] * lines) + b'"'
    path = write(tmp_path, "big.csv", b"id,text\n0,ok\n1," + big + b"\n")
    with pytest.raises(ConfigError, match=r"big.csv line 3: .*MAX_CSV_FIELD_CHARS"):
        rows_of(path)
    # One line longer than MAX_ROW_BYTES: refused before it is held in memory whole.
    long_line = write(tmp_path, "long.jsonl", b'{"t": "' + b"z" * (MAX_ROW_BYTES + 1) + b'"}\n')
    with pytest.raises(ConfigError, match=r"long.jsonl line 1: longer than .*MAX_ROW_BYTES"):
        rows_of(long_line)
    # 10 MB (the size) is under the documented limit: read, not a traceback.
    fine = write(tmp_path, "ten.csv", b"id,text\n0," + b"y" * 10_000_000 + b"\n")
    assert len(str(rows_of(fine)[0]["text"])) == 10_000_000


@pytest.mark.parametrize("name", ["bad.csv", "bad.jsonl"])
def test_invalid_utf8_names_the_line(tmp_path: Path, name: str) -> None:
    body = (
        b'{"text": "ok"}\n{"text": "caf\xe9"}\n'
        if name.endswith("jsonl")
        else b"text\nok\ncaf\xe9\n"
    )
    path = write(tmp_path, name, body)
    with pytest.raises(ConfigError, match=rf"{name} line \d: not valid UTF-8"):
        rows_of(path)


def test_deep_json_huge_integers_and_nan_are_config_errors(tmp_path: Path) -> None:
    deep = write(tmp_path, "deep.jsonl", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    with pytest.raises(ConfigError, match=r"deep.jsonl line 1: nested too deeply"):
        rows_of(deep)
    nested = {"a": json.loads("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))}
    deeper = write(tmp_path, "deeper.jsonl", json.dumps(nested).encode() + b"\n")
    with pytest.raises(ConfigError, match=r"deeper.jsonl line 1: nested too deeply"):
        rows_of(deeper)
    huge = write(tmp_path, "huge.jsonl", b'{"n": 1}\n{"n": ' + b"9" * 5000 + b"}\n")
    with pytest.raises(ConfigError, match=r"huge.jsonl line 2: .*digits"):
        rows_of(huge)
    nan = write(tmp_path, "nan.jsonl", b'{"x": NaN}\n')
    with pytest.raises(ConfigError, match=r"nan.jsonl line 1: NaN is not JSON"):
        rows_of(nan)


@needs_pyarrow
@pytest.mark.parametrize("data", [b"", b"not parquet at all", b"PAR1" + b"\0" * 64 + b"PAR1"])
def test_a_corrupt_or_empty_parquet_is_a_config_error(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, "rows.parquet", data)
    with pytest.raises(ConfigError, match=r"rows.parquet: not a readable Parquet file"):
        rows_of(path)


@needs_pyarrow
def test_nan_never_reaches_json_output_as_bare_nan(serve: ServerFactory, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    serve()
    source = tmp_path / "rows.parquet"
    table = pa.table({"text": ["a", "b"], "score": [math.nan, math.inf]})
    pq.write_table(table, source)
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    output = tmp_path / "out.jsonl"
    map_file(step, source, output, history=False)
    text = output.read_text()
    assert "NaN" not in text
    assert "Infinity" not in text
    assert [json.loads(line)["score"] for line in text.splitlines()] == [None, None]
    # The writer alone, with a NaN nested in an answer.
    writer = open_writer(tmp_path / "w.jsonl")
    writer.write({"parsed": {"p": [float("nan"), 1.5]}})
    writer.commit()
    assert json.loads((tmp_path / "w.jsonl").read_text()) == {"parsed": {"p": [None, 1.5]}}


def test_the_cli_prints_one_error_line_and_sends_nothing(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve()
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    source = write(tmp_path, "rows.csv", b'id,text\n0,"ok"\n1,"open quote\n2,next\n3,last\n')
    result = CliRunner().invoke(
        app,
        ["map", str(step), "--rows", str(source), "-o", str(tmp_path / "o.jsonl"), "--no-history"],
    )
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "rows.csv line 3" in errors[0]
    assert not (tmp_path / "o.jsonl").exists()
    # The rows before the bad record were sent (rows stream); none was merged.
    assert [b["messages"][-1]["content"] for b in chat_bodies(server)] in ([], ["ok"])


# -- seeded fuzz ----------------------------------------------------------------------------

_PIECES = [
    b"", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\xff", b"\xe9", b"\x00", b"{", b"}", b"[",
    b"]", b":", b"NaN", b"Infinity", b"-", b"1e999", b"9" * 5000, b"[" * 300, b"\\", b"\\u",
    b'"\\ud800"', b"text", b"id", b"\xef\xbb\xbf", b"null", b"true", b" ", b"\t",
]  # fmt: skip


def _parquet_bytes() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [0, 1, 2], "text": ["a", "b", None]}), sink)
    return sink.getvalue()


def _random_dataset(rng: random.Random, parquet: bytes | None) -> tuple[str, bytes]:
    kind = rng.choice(["csv", "jsonl", "parquet"] if parquet else ["csv", "jsonl"])
    if kind == "csv":
        good = b'id,text\n0,"a, b"\n1,"two\nlines"\n2,plain\n'
    elif kind == "jsonl":
        good = b'{"id": 0, "text": "a"}\n{"id": 1, "text": "b", "x": [1, {"y": null}]}\n'
    else:
        good = parquet or b""
    data = bytearray(good)
    for _ in range(rng.randrange(4)):
        op = rng.randrange(3)
        at = rng.randrange(len(data) + 1)
        if op == 0:
            data[at:at] = rng.choice(_PIECES)
        elif op == 1 and data:
            del data[at : at + rng.randrange(1, 8)]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return kind, bytes(data)


def test_fuzzed_datasets_give_only_chatstep_errors(serve: ServerFactory, tmp_path: Path) -> None:
    serve()
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    rng = random.Random(20261201)
    parquet = _parquet_bytes() if importlib.util.find_spec("pyarrow") is not None else None
    outcomes = {"ok": 0, "error": 0}
    for number in range(120):
        kind, data = _random_dataset(rng, parquet)
        source = write(tmp_path, f"in{number}.{kind}", data)
        try:
            map_file(step, source, tmp_path / f"out{number}.jsonl", history=False, cache=False)
        except ChatstepError:
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    # Both outcomes are exercised: the fuzz is not all garbage, nor all valid.
    assert outcomes["error"] >= 30, outcomes
    assert outcomes["ok"] >= 10, outcomes
