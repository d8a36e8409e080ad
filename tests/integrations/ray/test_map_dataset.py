"""``map_dataset`` over a ``ray.data.Dataset`` on the loopback cluster."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from chatstep.steps.definitions import ChatCompletion
from chatstep.testing import Fail, TestServer


def _sent(server: TestServer) -> Counter[str]:
    return Counter(
        str(r.body["messages"][-1]["content"])
        for r in server.requests
        if r.path.endswith("/chat/completions") and isinstance(r.body, dict)
    )


def test_a_bad_row_is_an_error_column_and_a_rerun_pays_nothing(
    cluster: Any, tmp_path: Path
) -> None:
    import ray.data

    from chatstep.integrations.ray import map_dataset

    def refuse_bad_rows(path: str, body: Any) -> Any:
        if isinstance(body, dict) and "bad" in str(body.get("messages")):
            return Fail(400, "this row is refused", code="invalid_value")
        return None

    with TestServer(rpm=1200, handler=refuse_bad_rows) as server:
        step = ChatCompletion(
            model="gpt-4o-mini", base_url=server.base_url, prompt="ds {{ inputs.text }}"
        )
        items: list[dict[str, Any]] = [{"id": i, "text": f"t{i}"} for i in range(30)]
        items[7]["text"] = items[11]["text"] = "bad"
        ds = ray.data.from_items(items)
        journal = tmp_path / "journal"

        def run() -> list[dict[str, Any]]:
            out = map_dataset(
                ds, step, id_column="id", journal=journal, workers=2, batch_size=8,
                concurrency=4, history=False,
            )  # fmt: skip
            return sorted(out.take_all(), key=lambda r: r["id"])

        rows = run()
        assert [r["id"] for r in rows] == list(range(30))
        failed = {r["id"]: r["error"] for r in rows if r["error"] is not None}
        assert sorted(failed) == [7, 11]  # one bad row fails that row, never the job
        assert all("BadRequestError" in str(e) for e in failed.values())
        assert all(r["content"] == f"echo: ds t{r['id']}" for r in rows if r["id"] not in failed)
        sent = _sent(server)
        assert sent == Counter([f"ds t{i}" for i in range(30) if i not in failed] + ["ds bad"] * 2)

        again = run()  # every row from the journal: nothing sent
        assert _sent(server) == sent
        assert [(r["id"], r["content"]) for r in again] == [(r["id"], r["content"]) for r in rows]
