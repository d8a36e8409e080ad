"""Scale-out on Ray: 1 vs 4 Ray workers sharing one rate budget (the detached budget actor).

Run in the Ray venv (``bash ci/integration.sh ray`` makes one; or ``pip install -e ".[ray]"``)::

    python bench/scale_out_ray.py --rows 200 --rpm 600

Each run maps ``--rows`` rows with ``map_file_ray`` on a one-node loopback Ray cluster against
the benchmarks' test server (its own process), whose request bucket starts EMPTY (the key is in
use elsewhere), so the run measures the steady state. No limit is configured: the workers learn
it from the headers, through the shared actor. Printed per run: completed/s divided by the
ceiling (``--rpm``/60), the server's 429s, and rows paid twice (answers beyond one per row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep Ray on 127.0.0.1

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer


def _run(server: BenchServer, workers: int, rows: int, tmp: Path, run: int) -> dict[str, Any]:
    from chatstep.integrations.ray import map_file_ray

    step = tmp / f"step{run}.yaml"
    step.write_text(
        f"model: gpt-4o-mini\nbase_url: {server.base_url}\n"
        'prompt: "scale row {{ inputs.id }}"\nmax_tokens: 20\n'
    )
    data = tmp / f"rows{run}.jsonl"
    data.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(rows)))
    server.reset(drain=True)
    started = time.monotonic()
    stats = map_file_ray(
        step,
        data,
        tmp / f"out{run}.jsonl",
        workers=workers,
        shard_rows=max(1, rows // (2 * workers)),
        concurrency=8,
        budget=f"ray://bench-budget-{run}",  # a fresh budget per run
        history=False,
    )
    wall = time.monotonic() - started
    seen = server.stats()
    answered = seen["requests"] - seen["rate_limited"]
    return {
        "workers": workers,
        "done": stats.done,
        "wall": wall,
        "rate_limited": seen["rate_limited"],
        "requests": seen["requests"],
        "paid_twice": answered - rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-0000-fake")
    os.environ["CHATSTEP_HISTORY"] = "off"
    nodes = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "object_store_memory": 100 * 1024 * 1024,
        },
    )
    ray.init(address=nodes.address, namespace="chatstep", log_to_driver=False)
    ceiling = args.rpm / 60
    results = []
    try:
        with (
            BenchServer(rpm=args.rpm, latency=[0.05, 0.02]) as server,
            tempfile.TemporaryDirectory() as tmp,
        ):
            for run, workers in enumerate(args.workers):
                results.append(_run(server, workers, args.rows, Path(tmp), run))
    finally:
        ray.shutdown()
        nodes.shutdown()

    print(f"# Ray scale-out: {args.rows} rows, server RPM {args.rpm} (ceiling {ceiling:.1f}/s)")
    print("| Ray workers, one shared budget | completed/s ÷ ceiling | 429s | rows paid twice |")
    print("|---|---|---|---|")
    for r in results:
        ratio = r["done"] / r["wall"] / ceiling
        print(f"| {r['workers']} | {ratio:.3f} | {r['rate_limited']} | {r['paid_twice']} |")


if __name__ == "__main__":
    main()
