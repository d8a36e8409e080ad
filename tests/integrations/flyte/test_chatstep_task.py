"""ChatStepTask: typed inputs from the step's templates; the whole response for later tasks."""

from __future__ import annotations

from typing import Any, Optional

from flytekit import task, workflow

from chatstep.integrations.flyte import ChatStepTask
from chatstep.testing import Respond, TestServer

from .conftest import load_example


def test_a_downstream_task_reads_a_tool_call_argument(openai_env: TestServer) -> None:
    openai_env.enqueue(
        Respond(tool_calls=[{"name": "set_urgency", "arguments": {"urgency": "high"}}])
    )
    example = load_example("tool_call_workflow")
    assert example.support(ticket="The site is down for everyone") == "pager"
    sent = openai_env.requests[-1].body
    assert sent["messages"][-1] == {
        "role": "user",
        "content": "Ticket: The site is down for everyone",
    }
    assert sent["tools"][0]["function"]["name"] == "set_urgency"
    assert sent["tool_choice"] == "required"


def test_inputs_are_the_steps_template_variables() -> None:
    step = {
        "model": "gpt-4o-mini",
        "prompt": "{{ inputs.question }} ({{ inputs.tone | default('plain') }}, {{ inputs.n }})",
    }
    node = ChatStepTask(name="ask", step=step, input_types={"n": int})
    inputs = node.python_interface.inputs
    assert inputs == {"n": int, "question": str, "tone": Optional[str]}  # noqa: UP045
    assert node.python_interface.inputs_with_defaults["tone"] == (Optional[str], None)  # noqa: UP045
    assert dict(node.python_interface.outputs) == {"o0": str, "response": dict}


def test_content_usage_and_optional_inputs_in_a_workflow(openai_env: TestServer) -> None:
    ask = ChatStepTask(
        name="ask-tone",
        step={
            "model": "gpt-4o-mini",
            "prompt": "{{ inputs.question }} ({{ inputs.tone | default('plain') }})",
        },
    )

    @task
    def tokens(response: dict[str, Any]) -> int:
        return int(response["usage"]["total_tokens"])

    @workflow
    def wf(question: str) -> tuple[str, int]:
        answer = ask(question=question)
        return answer.o0, tokens(response=answer.response)

    text, used = wf(question="Why?")
    assert text == "echo: Why? (plain)"
    assert used > 0


def test_a_step_file(openai_env: TestServer, tmp_path: Any) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text("model: gpt-4o-mini\nprompt: 'Hello {{ inputs.name }}'\n")
    greet = ChatStepTask(name="greet", step=str(path))

    @workflow
    def wf(name: str) -> str:
        return greet(name=name).o0  # type: ignore[no-any-return]

    assert wf(name="Ada") == "echo: Hello Ada"
