"""chatstep.integrations.airflow: its lazy table, without importing Airflow."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import chatstep.integrations.airflow as airflow_pkg


def _defined(module: str) -> set[str]:
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_table_and_all_agree_and_name_what_each_module_defines() -> None:
    table = airflow_pkg._EXPORTS
    assert sorted(table) == sorted(airflow_pkg.__all__)
    assert set(table.values()) == {
        "chatstep.integrations.airflow.hook",
        "chatstep.integrations.airflow.operators",
        "chatstep.integrations.airflow.triggers",
    }
    for name, module in table.items():
        assert name in _defined(module), f"{module} does not define {name}"


def test_importing_the_package_does_not_import_airflow() -> None:
    code = "import chatstep.integrations.airflow, sys; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
