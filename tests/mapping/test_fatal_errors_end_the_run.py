"""A fatal error (401, 403) ends a map run, whatever the number of rows and workers.

A worker cancelled while its request completed used to lose the cancellation inside
``asyncio.wait_for`` (CPython gh-86296, before 3.12), wait forever for its next row, and hang the
run: every row in flight got its 401 at once. Each case runs in a subprocess with a timeout, so
a hang is a failure instead of a stuck suite.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chatstep.core.deadlines import within
from chatstep.testing import Fail, TestServer

SCRIPT = """
import sys
from chatstep.errors import AuthenticationError
from chatstep.mapping.files import map_file
try:
    map_file(sys.argv[1], sys.argv[2], sys.argv[3], history=False, concurrency=int(sys.argv[4]))
except AuthenticationError:
    sys.exit(42)
"""


@pytest.mark.parametrize(("rows", "concurrency"), [(1, 1), (2, 2), (4, 4), (4, 16), (40, 8)])
def test_all_rows_refused_with_401_end_the_run(tmp_path: Path, rows: int, concurrency: int) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: '{{ inputs.text }}'\n")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(rows)))
    with TestServer() as server:
        server.handler = lambda path, body: Fail(401, "Incorrect API key", code="invalid_api_key")
        env = {
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test-fatal-0000000000",
            "CHATSTEP_HOME": str(tmp_path / "home"),
            "PATH": "/usr/bin:/bin",
        }
        args = [str(step), str(source), str(tmp_path / "out.jsonl"), str(concurrency)]
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, *args],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,  # a bound on a hang, not a speed check
        )
    assert done.returncode == 42, done.stderr


def test_within_keeps_a_cancellation_that_arrives_as_the_operation_completes() -> None:
    async def main() -> bool:
        gate = asyncio.Event()

        async def worker() -> None:
            async def op() -> str:
                await gate.wait()
                return "done"

            await within(10, op())
            # Reaching here means the cancellation was lost.
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(worker())
        await asyncio.sleep(0)
        gate.set()  # the operation completes...
        task.cancel()  # ...in the same loop iteration as the cancellation
        try:
            await asyncio.wait_for(task, 5)
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())
