"""Preparing training files: rows through a step plus a target, every example checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatstep import TrainingDataError, prepare_finetune
from chatstep.errors import ConfigError
from chatstep.finetune.prepare import check_training_file

from .conftest import write_rows


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _examples(path: Path, examples: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def _ok(n: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"question {n}"},
            {"role": "assistant", "content": f"answer {n}"},
        ]
    }


def test_rows_render_the_step_and_the_target(
    step_file: Path, rows_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "train.jsonl"
    data = prepare_finetune(step_file, rows_file, out, target="label")
    assert data.examples == 12
    assert data.validation_file is None
    first = _lines(out)[0]
    assert first == {
        "messages": [
            {"role": "system", "content": "Label the ticket as bug, billing or praise."},
            {"role": "user", "content": "ticket number 0: the app did thing 0"},
            {"role": "assistant", "content": "bug"},
        ]
    }
    assert data.model == "gpt-4o-mini"
    assert data.token_limit == 65_536
    assert 0 < data.max_tokens < 60
    assert data.tokens > 12 * 20
    assert data.warnings == []


def test_a_template_target_and_a_seeded_validation_split(step_file: Path, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 20)
    out = tmp_path / "train.jsonl"
    kwargs: dict[str, Any] = {"target_template": "Label: {{ inputs.label }}", "validation": 0.2}
    data = prepare_finetune(step_file, rows, out, **kwargs)
    assert (data.examples, data.validation_examples) == (16, 4)
    assert data.validation_file == tmp_path / "train.validation.jsonl"
    held = _lines(data.validation_file)
    assert all(e["messages"][-1]["content"].startswith("Label: ") for e in held)
    train_tickets = {e["messages"][1]["content"] for e in _lines(out)}
    assert not train_tickets & {e["messages"][1]["content"] for e in held}
    again = prepare_finetune(step_file, rows, tmp_path / "again.jsonl", **kwargs)
    assert again.validation_file is not None
    assert _lines(again.validation_file) == held  # the same seed holds out the same rows


def test_structured_targets_are_written_as_json_text(step_file: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"ticket": f"t{n}", "label": {"kind": "bug", "n": n}}) + "\n"
            for n in range(10)
        )
    )
    data = prepare_finetune(step_file, rows, tmp_path / "train.jsonl", target="label")
    last = _lines(data.training_file)[3]["messages"][-1]
    assert json.loads(last["content"]) == {"kind": "bug", "n": 3}


def test_every_bad_row_is_named_with_its_fix(step_file: Path, tmp_path: Path) -> None:
    rows = [{"ticket": f"t{n}", "label": "bug"} for n in range(12)]
    rows[2]["label"] = "   "
    del rows[5]["label"]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "train.jsonl"
    with pytest.raises(TrainingDataError) as caught:
        prepare_finetune(step_file, path, out, target="label")
    err = caught.value
    assert "2 of 12 examples are not valid" in str(err)
    assert err.problems[0].startswith("rows[2].messages[2].content: is empty")
    assert "give every row a non-empty target" in err.problems[0]
    assert err.problems[1].startswith("rows[5]: target 'label': is not a column")
    assert "columns: ticket" in err.problems[1]
    assert not out.exists()  # nothing written


def test_too_few_examples_and_too_many_tokens(step_file: Path, tmp_path: Path) -> None:
    few = write_rows(tmp_path / "few.jsonl", 9)
    with pytest.raises(TrainingDataError, match=r"gives 9 training example.*at least 10"):
        prepare_finetune(step_file, few, tmp_path / "t.jsonl", target="label")
    twelve = write_rows(tmp_path / "twelve.jsonl", 12)
    with pytest.raises(TrainingDataError, match="or hold out fewer for validation"):
        prepare_finetune(step_file, twelve, tmp_path / "t.jsonl", target="label", validation=3)
    with pytest.raises(TrainingDataError) as caught:
        prepare_finetune(step_file, twelve, tmp_path / "t.jsonl", target="label", token_limit=20)
    assert "over the 20-token limit of an example for gpt-4o-mini" in caught.value.problems[0]


def test_duplicates_are_warned_not_refused(step_file: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"ticket": f"t{n % 11}", "label": "x"}) + "\n" for n in range(12))
    )
    data = prepare_finetune(step_file, rows, tmp_path / "t.jsonl", target="label")
    assert data.examples == 12
    assert data.warnings == ["rows[11] is the same example as rows[0]"]


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (
            [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}],
            "rows[0].messages[1].role: is 'robot' (use one of: system, developer, user",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "a"},
            ],
            "rows[0].messages[1].role: is system after the conversation started",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "more?"},
            ],
            "must end with the assistant's answer",
        ),
        (
            [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
            "rows[0].messages: has no user message",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                {"role": "assistant", "content": "a"},
            ],
            "rows[0].messages[1].tool_call_id: is 'call_1', which answers no tool call",
        ),
    ],
)
def test_role_order_of_ready_made_examples(
    messages: list[dict[str, Any]], expected: str, tmp_path: Path
) -> None:
    rows = _examples(
        tmp_path / "rows.jsonl", [{"messages": messages}] + [_ok(n) for n in range(10)]
    )
    with pytest.raises(TrainingDataError) as caught:
        prepare_finetune(None, rows, tmp_path / "t.jsonl")
    assert expected in caught.value.problems[0]
    assert len(caught.value.problems) == 1


def test_tool_calls_answered_in_order_are_fine(tmp_path: Path) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    example = {
        "messages": [
            {"role": "user", "content": "add"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "3"},
            {"role": "assistant", "content": "It is 3."},
        ],
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
    }
    rows = _examples(tmp_path / "rows.jsonl", [example] + [_ok(n) for n in range(10)])
    assert prepare_finetune(None, rows, tmp_path / "t.jsonl").examples == 11


def test_a_secret_rendered_into_the_messages_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatstep.errors import register_secret

    monkeypatch.setenv("SUPPORT_TOKEN", "tok-very-secret-value-123")
    register_secret("tok-very-secret-value-123")
    step = tmp_path / "leaky.yaml"
    step.write_text(
        "model: gpt-4o-mini\nprompt: \"{{ inputs.ticket }} {{ secret('SUPPORT_TOKEN') }}\"\n"
    )
    rows = write_rows(tmp_path / "rows.jsonl", 10)
    with pytest.raises(TrainingDataError) as caught:
        prepare_finetune(step, rows, tmp_path / "t.jsonl", target="label")
    assert "renders a secret into the training data" in caught.value.problems[0]
    assert "tok-very-secret" not in str(caught.value)


def test_a_target_is_required_with_a_step(step_file: Path, rows_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give exactly one of target"):
        prepare_finetune(step_file, rows_file, tmp_path / "t.jsonl")


def test_checking_a_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(_ok(n)) for n in range(11)]
    lines.insert(3, "")
    lines[5] = "{not json"
    lines[7] = json.dumps({"messages": [{"role": "user", "content": "q"}]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainingDataError) as caught:
        check_training_file(path, "gpt-4o-mini")
    assert caught.value.problems[0].startswith("line 6: is not valid JSON")
    assert caught.value.problems[1].startswith("line 8, messages[0]: is a user message")


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ({"id": "c"}, "tool_calls: is a dict, not a list"),
        (["add"], "tool_calls[0]: is not a function call object"),
        (
            [{"id": "c", "type": "function", "function": {"name": "add", "arguments": "{x"}}],
            "tool_calls[0].function.arguments: is not valid JSON",
        ),
        (
            [{"id": "c", "type": "function", "function": {"name": "add", "arguments": "[1]"}}],
            "tool_calls[0].function.arguments: is JSON but not an object",
        ),
        (
            [{"id": "c", "type": "function", "function": {"name": "", "arguments": "{}"}}],
            "tool_calls[0].function.name: is missing",
        ),
        (
            [{"type": "function", "function": {"name": "add", "arguments": "{}"}}],
            "tool_calls[0].id: is missing",
        ),
    ],
)
def test_malformed_tool_calls_are_refused_before_upload(
    calls: Any, expected: str, tmp_path: Path
) -> None:
    # They passed the check, were uploaded and the job failed on the provider's validation.
    bad = {
        "messages": [
            {"role": "user", "content": "add"},
            {"role": "assistant", "tool_calls": calls},
        ]
    }
    rows = _examples(tmp_path / "rows.jsonl", [_ok(n) for n in range(10)] + [bad])
    with pytest.raises(TrainingDataError) as caught:
        prepare_finetune(None, rows, tmp_path / "t.jsonl")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
    assert caught.value.problems[0].startswith("rows[10].messages[1].tool_calls")
