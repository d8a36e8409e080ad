"""Rows through the OpenAI Batch API (half price) as a Flyte workflow; aborting it cancels.

``describe_batch`` renders the step once per row; ``requests_batch`` takes ready Batch request
lines, as flytekit's OpenAI plugin does. Both return one joined JSONL file: one row per input
row, in input order, with ``ok``, ``content``, ``response``, ``error`` and ``cost``.
"""

from pathlib import Path
from typing import Iterator  # noqa: UP035  (flytekit matches typing.Iterator[JSON])

from flytekit import workflow
from flytekit.types.file import JSONLFile
from flytekit.types.iterator import JSON

from chatstep.integrations.flyte import create_batch

describe_batch = create_batch(
    name="describe",
    step={"model": "gpt-4o-mini", "prompt": "Describe {{ inputs.item }} in five words."},
)

requests_batch = create_batch(name="requests", is_json_iterator=False)


def items() -> Iterator[JSON]:
    for item in ("a teapot", "a bicycle", "a lighthouse"):
        yield {"item": item}


@workflow
def describe_items(rows: Iterator[JSON] = items()) -> JSONLFile:  # noqa: B008 (flytekit idiom)
    return describe_batch(jsonl_in=rows)


@workflow
def run_requests(requests: JSONLFile) -> JSONLFile:
    return requests_batch(jsonl_in=requests)


if __name__ == "__main__":
    print(Path(describe_items().download()).read_text())
