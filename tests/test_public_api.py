"""The curated public surface, and import cost."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import chatstep


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of the ``if TYPE_CHECKING:`` imports in chatstep/__init__.py."""
    tree = ast.parse(Path(chatstep.__file__).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                for alias in stmt.names:
                    found[alias.asname or alias.name] = str(stmt.module)
    return found


def test_export_table_all_and_type_checking_imports_agree() -> None:
    # Like httpx's test_exported_members: the one table (lazy imports), __all__ (star imports,
    # linters) and the TYPE_CHECKING imports (type checkers) name the same things.
    table = chatstep._MODULE_OF
    assert len(table) == sum(len(names) for names in chatstep._EXPORTS.values())  # no repeats
    assert sorted(table) == chatstep.__all__
    assert _type_checking_imports() == table
    for name, module in table.items():
        value = getattr(chatstep, name)
        assert value is getattr(importlib.import_module(module), name)


def test_errors_are_all_exported() -> None:
    from chatstep import errors

    classes = {n for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    assert classes <= set(chatstep.__all__)


def test_sync_and_async_twins_are_both_exported() -> None:
    # The naming rule: sync `x`, async `ax`. load_* and list_batches do no network I/O, and
    # astream_step's sync form is run_step(on_delta=...), so they have no twin.
    # estimate_cost sends nothing (it renders and counts locally), so it has no async form.
    # steps_app builds an ASGI app (its requests are async already).
    public = {
        n: getattr(chatstep, n)
        for n in chatstep.__all__
        if inspect.isfunction(getattr(chatstep, n))
    }
    no_twin = {"list_batches", "load_flow", "load_step", "astream_step", "estimate_cost"}
    # prepare_finetune renders and writes locally; list_finetunes reads the journal.
    no_twin |= {"prepare_finetune", "list_finetunes"}
    no_twin |= {"steps_app"}  # builds an ASGI app; nothing to await
    for name, value in public.items():
        if name in no_twin:
            continue
        if inspect.iscoroutinefunction(value):
            assert name.startswith("a"), name
            assert name[1:] in public, f"{name} has no sync twin"
        elif name.startswith("a") and name[1:] in public:
            assert not inspect.iscoroutinefunction(public[name[1:]]), name
        else:
            assert f"a{name}" in public, f"{name} has no async twin"
    assert {"Runner", "AsyncRunner"} <= set(chatstep.__all__)


@pytest.mark.parametrize(
    ("old", "new"), [("await_batch", "apoll_batch"), ("wait_batch", "poll_batch")]
)
def test_renamed_names_still_import_with_a_warning(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=new):
        value = getattr(chatstep, old)
    assert value is getattr(chatstep, new)
    assert old not in chatstep.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(chatstep, new)


def test_all_is_sorted_and_importable() -> None:
    assert chatstep.__all__ == sorted(chatstep.__all__)
    for name in chatstep.__all__:
        assert getattr(chatstep, name) is not None


def test_testing_all_is_sorted() -> None:
    import chatstep.testing

    assert chatstep.testing.__all__ == sorted(chatstep.testing.__all__)


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        _ = chatstep.NoSuchThing  # type: ignore[attr-defined]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_does_not_load_the_openai_sdk() -> None:
    loaded = _modules_after("import chatstep")
    assert "openai" not in loaded
    assert "pydantic" not in loaded


def test_cli_help_does_not_load_the_openai_sdk() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom chatstep.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0\n"
        "for c in ['run', 'map', 'batch', 'flow', 'history']:\n"
        "    CliRunner().invoke(app, [c, '--help'])"
    )
    loaded = _modules_after(code)
    assert "openai" not in loaded
    assert "llama_cpp" not in loaded


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chatstep", "--help"], capture_output=True, text=True, check=True
    )
    assert "run" in out.stdout
