"""The steps ``chatstep serve --steps DIR`` offers: one per step file, checked at startup.

Naming rule: every ``*.yaml``, ``*.yml`` and ``*.json`` file directly in DIR (not in its
subdirectories; names starting with ``.`` are skipped) is one step, served as
``POST /steps/{id}`` where ``id`` is the file name without its suffix. An id must match
``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`` (it is a URL segment and an OpenAPI name); two files whose
ids differ at most by letter case (``a.yaml`` and ``A.json``) collide. A file that declares its
own ``id:`` must use its file name, so the route, the history and ``GET /steps`` all say the same
name. Every problem of every file is reported at once, as ``FILE:LINE: message``.

A step's inputs are the names its templates read (``inputs.x``); those read only under
``| default(...)`` or ``is defined`` are optional (:mod:`chatstep.templating.variables`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chatstep.errors import ConfigError
from chatstep.steps.definitions import ChatCompletion, Step
from chatstep.steps.loading import load_step, read_step_file
from chatstep.templating.variables import collect_input_names

__all__ = ["MAX_SERVED_STEPS", "STEP_ID_PATTERN", "ServedStep", "load_step_directory"]

STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""What a file name (without suffix) must look like to be served."""
MAX_SERVED_STEPS = 1000
"""At most this many step files in one directory."""
_SUFFIXES = (".yaml", ".yml", ".json")
_ID = re.compile(STEP_ID_PATTERN)
_INDEX = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class ServedStep:
    """One step behind ``POST /steps/{id}``: its definition and the inputs it reads."""

    id: str
    step: Step
    required_inputs: frozenset[str]
    optional_inputs: frozenset[str]
    path: Path | None = None
    readers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Input name -> the step fields whose templates read it (``prompt``, ``temperature``)."""

    @property
    def inputs(self) -> frozenset[str]:
        """Every input the step reads."""
        return self.required_inputs | self.optional_inputs

    @property
    def streams(self) -> bool:
        """Whether ``?stream=true`` streams text (chat steps only)."""
        return isinstance(self.step, ChatCompletion)

    def inputs_of(self, step_field: str) -> list[str]:
        """The inputs a step field (``temperature``, ``messages[1].content``) reads."""
        top = re.split(r"[.\[]", step_field, maxsplit=1)[0]
        return sorted(name for name, fields in self.readers.items() if top in fields)

    @classmethod
    def of(cls, step_id: str, step: Step, path: Path | None = None) -> ServedStep:
        """Describe ``step`` served as ``step_id`` (its ``id`` is set to ``step_id``)."""
        data = step.model_dump(exclude_unset=True, by_alias=False)
        readers: dict[str, list[str]] = {}
        required: set[str] = set()
        for name, value in data.items():
            for input_name in collect_input_names(value, field=name):
                readers.setdefault(input_name, []).append(name)
            required |= collect_input_names(value, required_only=True, field=name)
        if step.id != step_id:
            step = step.model_copy(update={"id": step_id})
        return cls(
            id=step_id,
            step=step,
            required_inputs=frozenset(required),
            optional_inputs=frozenset(set(readers) - required),
            path=path,
            readers={name: tuple(fields) for name, fields in readers.items()},
        )


def load_step_directory(directory: str | Path) -> list[ServedStep]:
    """The steps in ``directory``, sorted by id.

    Raises :class:`ConfigError` listing every bad file as ``FILE:LINE: problem`` (an invalid
    step, an id that breaks the naming rule, a collision), or when the directory is missing or
    holds no step file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(
            "--steps", f"{str(root)!r} is not a directory", "give a directory of step files"
        )
    files = sorted(
        p
        for p in root.iterdir()
        if p.suffix.lower() in _SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise ConfigError(
            "--steps",
            f"{str(root)!r} holds no step file (*.yaml, *.yml or *.json)",
            "put step files in it",
        )
    if len(files) > MAX_SERVED_STEPS:
        raise ConfigError(
            "--steps",
            f"{str(root)!r} holds {len(files):,} step files; "
            f"at most {MAX_SERVED_STEPS:,} are served",
            "split them over several servers",
        )
    problems: list[str] = []
    served: list[ServedStep] = []
    seen: dict[str, Path] = {}
    for path in files:
        step_id = path.stem
        if not _ID.fullmatch(step_id):
            problems.append(
                f"{path}:1: the file name {step_id!r} cannot be a step id: ids are letters, "
                "digits, '_', '-' and '.', at most 64, starting with a letter or digit "
                "(rename the file)"
            )
            continue
        other = seen.get(step_id.lower())
        if other is not None:
            problems.append(
                f"{path}:1: step id {step_id!r} collides with {other.name} (ids are file names "
                "without suffix and must differ in more than letter case; rename one)"
            )
            continue
        seen[step_id.lower()] = path
        try:
            step = load_step(path)
            if step.id is not None and step.id != step_id:
                raise ConfigError(
                    "id",
                    f"the step says id {step.id!r} but is served as {step_id!r} (its file name)",
                    f"rename the file to {step.id}{path.suffix} or set id: {step_id}",
                )
            _check_no_outputs(step)
            served.append(ServedStep.of(step_id, step, path))
        except ConfigError as exc:
            one_line = " ".join(str(exc).split())  # a YAML error spans lines; one per file
            problems.append(f"{path}:{_error_line(path, exc)}: {one_line}")
    if problems:
        count = f"{len(problems)} step file{'s' if len(problems) > 1 else ''}"
        raise ConfigError("--steps", f"{count} cannot be served:\n" + "\n".join(problems))
    return served


def served_steps(steps: Iterable[tuple[str, Step]]) -> list[ServedStep]:
    """Describe already-loaded steps by id (the Python form of a step directory)."""
    out: list[ServedStep] = []
    seen: set[str] = set()
    for step_id, step in steps:
        if not _ID.fullmatch(step_id):
            raise ConfigError(
                "steps", f"{step_id!r} cannot be a step id", f"ids match {STEP_ID_PATTERN}"
            )
        if step_id.lower() in seen:
            raise ConfigError("steps", f"step id {step_id!r} is given twice", "rename one")
        seen.add(step_id.lower())
        out.append(ServedStep.of(step_id, step))
    return sorted(out, key=lambda s: s.id)


def _check_no_outputs(step: Step) -> None:
    """Refuse a template reading ``outputs``: a served step has no earlier step."""
    from jinja2 import TemplateSyntaxError, meta

    from chatstep.templating.sandbox import _env, is_template

    def walk(value: Any, where: str) -> None:
        if isinstance(value, str) and is_template(value):
            try:
                names = meta.find_undeclared_variables(_env.parse(value))
            except TemplateSyntaxError:
                return  # reported with its line when the step is rendered
            if "outputs" in names:
                raise ConfigError(
                    where,
                    "reads outputs of earlier steps, but a served step runs alone",
                    "pass the value as an input instead ({{ inputs.name }})",
                )
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    walk(step.model_dump(exclude_unset=True, by_alias=False), "")


def _error_line(path: Path, exc: ConfigError) -> int:
    """The 1-based line of the field ``exc`` names in the step file (1 when unknown)."""
    try:
        text = read_step_file(path)
    except ConfigError:
        return 1
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as bad:
        mark = bad.problem_mark or bad.context_mark
        return mark.line + 1 if mark is not None else 1
    except yaml.YAMLError:
        return _json_line(text)
    except RecursionError:
        return 1
    if node is None:
        return 1
    return _field_node(node, exc.field).start_mark.line + 1


def _json_line(text: str) -> int:
    try:
        json.loads(text)
    except json.JSONDecodeError as bad:
        return bad.lineno
    except ValueError:
        return 1
    return 1


def _field_node(node: yaml.Node, field_path: str) -> yaml.Node:
    """The node (a mapping key) of the deepest part of ``field_path`` that exists."""
    parts: list[Any] = []
    for part in field_path.split("."):
        name, _, rest = part.partition("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in _INDEX.findall("[" + rest if rest else ""))
    found = node
    for part in parts:
        child = _child(node, part)
        if child is None:
            break
        found, node = child
    return found


def _child(node: yaml.Node, part: Any) -> tuple[yaml.Node, yaml.Node] | None:
    """(the node to point at, the node to descend into) for one part of a field path."""
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        if not 0 <= part < len(node.value):
            return None
        item: yaml.Node = node.value[part]
        return item, item
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            if name == part or _snake(name) == part:
                return key, value
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
