"""Training files from rows: each row renders a step's messages plus an assistant target.

::

    data = prepare_finetune("triage.yaml", "labelled.jsonl", "train.jsonl", target="label",
                            validation=0.2)
    data.examples, data.validation_examples, data.max_tokens, data.warnings

Every example is checked (:mod:`chatstep.finetune.examples`) before a byte is written; all
problems are reported together in one :class:`~chatstep.errors.TrainingDataError` naming each
row (``rows[3]``) or line and the fix, so a job never fails on the provider's side for a file
chatstep wrote. Identical examples are warned about, not refused.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.errors import ConfigError, TrainingDataError, redact_secrets
from chatstep.finetune.examples import (
    MIN_EXAMPLES,
    canonical,
    example_problems,
    max_example_tokens,
)

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore
    from chatstep.steps.loading import StepSource

__all__ = ["FineTuneData", "check_training_file", "prepare_finetune"]

Rows = str | Path | Iterable[Mapping[str, Any]]
_DEFAULT_MODEL = "gpt-4o-mini"
_MAX_KEPT = 1000
"""Problems kept for :attr:`TrainingDataError.problems` (a broken file has one per line)."""


@dataclass(frozen=True)
class FineTuneData:
    """A checked training file (and validation file): counts and token figures."""

    training_file: Path
    examples: int
    model: str
    """The model the tokens were counted for, and whose per-example limit was applied."""
    tokens: int
    """Tokens of one pass over the training examples (an epoch bills this many)."""
    max_tokens: int
    """Tokens of the longest example."""
    token_limit: int
    validation_file: Path | None = None
    validation_examples: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "training_file": str(self.training_file),
            "examples": self.examples,
            "validation_file": None if self.validation_file is None else str(self.validation_file),
            "validation_examples": self.validation_examples,
            "model": self.model,
            "tokens": self.tokens,
            "max_tokens": self.max_tokens,
            "token_limit": self.token_limit,
            "warnings": list(self.warnings),
        }


class _Checked:
    """Examples checked one by one: problems, duplicates and token figures."""

    def __init__(self, model: str, token_limit: int) -> None:
        self.model = model
        self.token_limit = token_limit
        self.problems: list[str] = []
        self.failed = 0
        self.tokens: list[int] = []
        self.warnings: list[str] = []
        self._seen: dict[bytes, str] = {}
        """Digest of each distinct example -> the first example that had it."""

    def problem(self, line: str) -> None:
        """Record one problem (at most :data:`_MAX_KEPT` are kept; all are counted)."""
        if len(self.problems) < _MAX_KEPT:
            self.problems.append(line)

    def add(self, example: Any, name: str) -> None:
        found, tokens = example_problems(example, self.model, self.token_limit)
        text = canonical(example)
        if redact_secrets(text) != text:
            self.problem(
                f"{name}: renders a secret into the training data (keep secrets out of the "
                "step's messages and the rows)"
            )
            self.failed += 1
            return
        if found:
            self.failed += 1
            for problem in found:
                self.problem(problem.describe(name))
            return
        self.tokens.append(tokens)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        first = self._seen.setdefault(digest, name)
        if first != name:
            self.warnings.append(f"{name} is the same example as {first}")

    def raise_problems(self, total: int, what: str, fix: str) -> None:
        if not self.problems:
            return
        raise TrainingDataError(
            what,
            f"{self.failed} of {total} examples are not valid training examples",
            fix,
            problems=self.problems,
        )


def _assistant(value: Any) -> dict[str, Any]:
    """The assistant message of a target value (text, a message, or JSON to write as text)."""
    if isinstance(value, Mapping) and ("content" in value or "tool_calls" in value):
        return {**value, "role": "assistant"}
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if value is None:
        return {"role": "assistant", "content": ""}
    # Structured targets (a dict or list, a number) train the model to answer that JSON.
    return {"role": "assistant", "content": json.dumps(value, ensure_ascii=False)}


def _target(row: Mapping[str, Any], target: str | None, template: str | None, ctx: Any) -> Any:
    if template is not None:
        from chatstep.templating.sandbox import render_string

        return render_string(template, ctx, "target_template")
    assert target is not None
    if target not in row:
        raise ConfigError(
            f"target {target!r}",
            f"is not a column of the row (columns: {', '.join(sorted(row)) or 'none'})",
            "pass --target with a column every row has, or --target-template",
        )
    return row[target]


def _render_example(
    definition: Any,
    row: Mapping[str, Any],
    target: str | None,
    template: str | None,
    secrets: SecretStore,
) -> dict[str, Any]:
    from chatstep.core.render import make_context, render_step
    from chatstep.core.request import build_request

    ctx = make_context(row, None, secrets)
    example: dict[str, Any]
    if definition is None:
        example = {k: row[k] for k in ("messages", "tools", "parallel_tool_calls") if k in row}
        if "messages" not in row:
            example = dict(row)  # reported as is: the checks name what is missing
    else:
        body = build_request(render_step(definition, ctx), stream=False).body
        example = {"messages": list(body.get("messages") or [])}
        for key in ("tools", "parallel_tool_calls"):
            if body.get(key) is not None:
                example[key] = body[key]
    if target is not None or template is not None:
        answer = _assistant(_target(row, target, template, ctx))
        example["messages"] = [*(example.get("messages") or []), answer]
    return example


def _split(count: int, validation: float | int | None, seed: int) -> set[int]:
    """Indices of the examples held out for validation (a seeded, reproducible choice)."""
    if validation is None or validation == 0:
        return set()
    if isinstance(validation, float) and 0 < validation < 1:
        size = max(1, round(count * validation))
    elif isinstance(validation, int) and validation > 0:
        size = validation
    else:
        raise ConfigError(
            "validation",
            f"is {validation!r}",
            "give a fraction between 0 and 1 (0.1) or a number of examples (20)",
        )
    if size >= count:
        raise ConfigError(
            "validation",
            f"holds out {size} of {count} examples, leaving none to train on",
            "hold out fewer examples",
        )
    return set(random.Random(seed).sample(range(count), size))


def _line(example: Mapping[str, Any]) -> str:
    """One JSONL line, keys in the order OpenAI's docs show them (role before content)."""
    return json.dumps(example, ensure_ascii=False, separators=(",", ":"))


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    partial.replace(path)


def prepare_finetune(
    step: StepSource | None,
    rows: Rows,
    output: str | Path,
    *,
    target: str | None = None,
    target_template: str | None = None,
    model: str | None = None,
    validation: float | int | None = None,
    validation_output: str | Path | None = None,
    seed: int = 0,
    token_limit: int | None = None,
    min_examples: int = MIN_EXAMPLES,
    secrets: SecretStore | None = None,
) -> FineTuneData:
    """Render one chat-format training example per row, check them all, write JSONL.

    Each row renders ``step``'s messages (and tools) and gets the assistant target: the
    ``target`` column (text; a message object; other JSON is written as JSON text) or the
    ``target_template`` rendered against the row. ``step`` None: each row already is an example
    (``messages``, optional ``tools``). ``validation`` holds out a fraction (0.1) or a number of
    examples, chosen by ``seed``, into ``validation_output`` (default:
    ``<output stem>.validation.jsonl``).
    Tokens are counted for ``model`` (default: the step's) against ``token_limit`` (default:
    the model's context window, at most 65,536). Raises :class:`TrainingDataError` listing every
    invalid row (nothing written) and when fewer than ``min_examples`` remain to train on.
    """
    from chatstep.accounting.pricing import default_price_table
    from chatstep.batch.files import read_rows
    from chatstep.core.runner import as_step
    from chatstep.secrets import default_secret_store
    from chatstep.steps.definitions import ChatCompletion

    if (target is None) == (target_template is None) and step is not None:
        raise ConfigError(
            "target",
            "says where each row's assistant answer is; give exactly one of target (a column) "
            "and target_template",
            "pass --target COLUMN or --target-template '{{ inputs.answer }}'",
        )
    store = secrets if secrets is not None else default_secret_store()
    definition = as_step(step) if step is not None else None
    if definition is not None and not isinstance(definition, ChatCompletion):
        raise ConfigError(
            "type", "fine-tuning data comes from a chat step", "use a step with messages"
        )
    model = model or str(getattr(definition, "model", None) or _DEFAULT_MODEL)
    limit = token_limit or max_example_tokens(model, default_price_table().context_window(model))
    checked = _Checked(model, limit)
    examples: list[dict[str, Any]] = []
    for index, row in enumerate(read_rows(rows)):
        name = f"rows[{index}]"
        try:
            example = _render_example(definition, row, target, target_template, store)
        except ConfigError as err:
            checked.problem(f"{name}: {err}")
            checked.failed += 1
            examples.append({})
            continue
        checked.add(example, name)
        examples.append(example)
    checked.raise_problems(len(examples), "rows", "fix those rows or the step, then prepare again")
    held_out = _split(len(examples), validation, seed)
    train = [_line(e) for i, e in enumerate(examples) if i not in held_out]
    if len(train) < min_examples:
        raise TrainingDataError(
            "rows",
            f"gives {len(train)} training example(s); fine-tuning needs at least {min_examples}",
            "add rows (50 to 100 good examples is where results usually start to show)"
            + (", or hold out fewer for validation" if held_out else ""),
        )
    output = Path(output)
    _write(output, train)
    validation_path: Path | None = None
    if held_out:
        validation_path = (
            Path(validation_output)
            if validation_output is not None
            else output.with_name(output.stem + ".validation.jsonl")
        )
        _write(validation_path, [_line(examples[i]) for i in sorted(held_out)])
    train_tokens = [t for i, t in enumerate(checked.tokens) if i not in held_out]
    return FineTuneData(
        training_file=output,
        examples=len(train),
        model=model,
        tokens=sum(train_tokens),
        max_tokens=max(checked.tokens, default=0),
        token_limit=limit,
        validation_file=validation_path,
        validation_examples=len(held_out),
        warnings=checked.warnings,
    )


def check_training_file(
    path: str | Path,
    model: str,
    *,
    minimum: int = MIN_EXAMPLES,
    token_limit: int | None = None,
) -> FineTuneData:
    """Check a chat-format JSONL file line by line, as :func:`prepare_finetune` checks rows.

    Raises :class:`TrainingDataError` naming each bad line, or when it holds fewer than
    ``minimum`` examples.
    """
    from chatstep.accounting.pricing import default_price_table

    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "is not a file", "give the training file's path")
    limit = token_limit or max_example_tokens(model, default_price_table().context_window(model))
    checked = _Checked(model, limit)
    count = 0
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            count += 1
            try:
                example = json.loads(raw)
            except json.JSONDecodeError as exc:
                checked.problem(f"line {number}: is not valid JSON ({exc.msg})")
                checked.failed += 1
                continue
            checked.add(example, f"line {number}")
    checked.raise_problems(
        count, str(path), "fix those lines, or write the file with `chatstep finetune prepare`"
    )
    if count < minimum:
        raise TrainingDataError(
            str(path),
            f"holds {count} example(s); fine-tuning needs at least {minimum}",
            "add examples",
        )
    return FineTuneData(
        training_file=path,
        examples=count,
        model=model,
        tokens=sum(checked.tokens),
        max_tokens=max(checked.tokens, default=0),
        token_limit=limit,
        warnings=checked.warnings,
    )
