"""Datasets: JSON Lines, CSV and Parquet, read and written as streams of rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from chatstep.errors import ConfigError
from chatstep.mapping.datasets import count_rows, open_writer, read_rows

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
needs_pyarrow = pytest.mark.skipif(
    not HAS_PYARROW,
    reason="pyarrow is not installed (the optional 'parquet' extra): Parquet is not available",
)

ROWS = [
    {"id": 1, "text": "hello, world", "score": 0.5, "ok": True},
    {"id": 2, "text": 'a "quoted"\nline', "score": None, "ok": False},
]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    writer = open_writer(path)
    for row in ROWS:
        writer.write(row)
    assert not path.exists()  # written to .partial until committed
    writer.commit()
    assert list(read_rows(path)) == ROWS
    assert count_rows(path) == 2


def test_csv_round_trip_keeps_text_and_writes_scalars_plainly(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    writer = open_writer(path)
    for row in ROWS:
        writer.write({**row, "tags": ["x", "y"]})
    writer.commit()
    back = list(read_rows(path))
    assert back[0] == {
        "id": "1",
        "text": "hello, world",
        "score": "0.5",
        "ok": "true",
        "tags": '["x", "y"]',
    }
    assert back[1]["text"] == 'a "quoted"\nline'
    assert back[1]["score"] == ""
    assert count_rows(path) == 2


def test_csv_refuses_a_row_with_a_column_the_header_lacks(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "out.csv")
    writer.write({"a": 1})
    with pytest.raises(ConfigError, match="write JSON Lines"):
        writer.write({"a": 2, "b": 3})
    writer.abort()
    assert not (tmp_path / "out.csv").exists()
    assert list(tmp_path.iterdir()) == []  # its temporary file is gone too


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffname,age\nAda,36\n".encode())
    assert list(read_rows(path)) == [{"name": "Ada", "age": "36"}]


def test_bad_inputs_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"line 2: a row must be a JSON object"):
        list(read_rows(path))
    with pytest.raises(ConfigError, match="does not exist"):
        list(read_rows(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="cannot tell the format"):
        list(read_rows(tmp_path / "rows.txt"))


@needs_pyarrow
def test_parquet_round_trip_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    rows = [{"id": i, "text": f"row {i}", "cost": None if i < 1500 else 0.25} for i in range(2500)]
    writer = open_writer(path, types={"cost": "float"})
    for row in rows:
        writer.write(row)
    writer.commit()
    assert count_rows(path) == 2500
    assert list(read_rows(path)) == rows


@needs_pyarrow
def test_parquet_text_column_takes_later_non_text_values(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    writer = open_writer(path)
    writer.write({"a": None})
    writer.commit()
    assert list(read_rows(path)) == [{"a": None}]
    path2 = tmp_path / "rows2.parquet"
    writer = open_writer(path2)
    for i in range(1001):
        writer.write({"a": None if i < 1000 else {"x": 1}})
    writer.commit()
    back = list(read_rows(path2))
    assert json.loads(back[-1]["a"]) == {"x": 1}
