"""Resuming a big map: time to the first new request and peak memory, this checkout vs another.

Builds an input of ``--rows`` rows and a journal in which all but the last ``--left`` rows are
finished, then resumes it with ``map_file`` (as ``chatstep map`` does) against the test server
(no rate limits, so no rate headers) once per source tree, each in a fresh process with a copy
of the journal. Prints, per tree: seconds from process start to the first new request, total
seconds, peak RSS (MiB), and whether the o200k vocabulary got loaded. Asserts nothing.

    python bench/resume.py [--rows 200000] [--left 1000] [--against /work/main/src]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer

STEP = 'model: gpt-4o-mini\nprompt: "Say something about row {{ inputs.id }}"\nmax_tokens: 5\n'

CHILD = r"""
import json, os, resource, sys, time
started = time.monotonic()
from chatstep.core.runner import AsyncRunner
from chatstep.mapping.files import map_file

first = []

class FirstRequest:
    async def before_send(self, request, conn):
        if not first:
            first.append(time.monotonic() - started)
    async def after_reply(self, request, conn, reply):
        pass
    async def after_result(self, step, request, result, error):
        pass

step, rows, output, journal = sys.argv[1:5]
runner = AsyncRunner(hooks=[FirstRequest()], history=False, cache=False)
stats = map_file(step, rows, output, journal=journal, runner=runner, concurrency=8)
tokens = sys.modules.get("chatstep.accounting.tokens")
loaded = bool(tokens and getattr(tokens, "_counters", None))
print(json.dumps({
    "first_request": first[0] if first else None,
    "total": time.monotonic() - started,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "from_journal": stats.from_journal,
    "sent": stats.done + stats.failed - stats.from_journal,
    "vocabulary_loaded": loaded,
}))
"""


def build(tmp: Path, rows: int, left: int, base_url: str) -> tuple[Path, Path, Path]:
    """Step, input and a journal with ``rows - left`` finished rows (a real record, repeated)."""
    from chatstep.mapping.files import map_file
    from chatstep.mapping.journal import row_hash

    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ["OPENAI_API_KEY"] = "sk-bench-resume-0000"
    step = tmp / "step.yaml"
    step.write_text(STEP)
    source = tmp / "rows.jsonl"
    with source.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"id": i}) + "\n")
    first = tmp / "first.jsonl"
    first.write_text(json.dumps({"id": 0}) + "\n")
    journal = tmp / "journal.sqlite3"
    map_file(step, first, tmp / "first.out.jsonl", journal=journal, history=False, cache=False)
    db = sqlite3.connect(journal)
    (_, _, status, record, cost, finished) = db.execute("SELECT * FROM rows").fetchone()
    db.execute("DELETE FROM rows")
    db.executemany(
        "INSERT INTO rows (idx, input_hash, status, record, cost, finished) VALUES (?,?,?,?,?,?)",
        ((i, row_hash({"id": i}), status, record, cost, finished) for i in range(rows - left)),
    )
    db.commit()
    db.close()
    return step, source, journal


def resume(src: Path, tmp: Path, step: Path, source: Path, journal: Path) -> dict[str, object]:
    name = src.parent.name
    copy = tmp / f"journal-{name}.sqlite3"
    shutil.copy(journal, copy)
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(step),
            str(source),
            str(tmp / f"out-{name}.jsonl"),
            str(copy),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--left", type=int, default=1_000)
    parser.add_argument("--against", type=Path, default=Path("/work/main/src"))
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent / "src"
    with tempfile.TemporaryDirectory() as name, BenchServer(latency=0.01) as server:
        tmp = Path(name)
        started = time.monotonic()
        step, source, journal = build(tmp, args.rows, args.left, server.base_url)
        print(f"built {args.rows} rows, {args.rows - args.left} done, "
              f"in {time.monotonic() - started:.1f}s")  # fmt: skip
        print(f"{'tree':<28} {'first req s':>11} {'total s':>8} {'peak MiB':>9} "
              f"{'resumed':>8} {'sent':>6} vocab")  # fmt: skip
        for src in (args.against, here):
            r = resume(src, tmp, step, source, journal)
            print(f"{src!s:<28} {r['first_request']:>11.2f} {r['total']:>8.2f} "
                  f"{r['peak_rss_mib']:>9.0f} {r['from_journal']:>8} {r['sent']:>6} "
                  f"{r['vocabulary_loaded']}")  # fmt: skip


if __name__ == "__main__":
    main()
