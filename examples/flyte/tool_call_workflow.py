"""A chatstep step as a Flyte task, and a downstream task that reads its tool call.

``triage`` gets the step's input ``ticket`` as a typed task input and returns ``o0`` (text) and
``response`` (the whole response); ``route`` reads the tool call's arguments from ``response``.
"""

import json
from typing import Any

from flytekit import task, workflow

from chatstep.integrations.flyte import ChatStepTask

triage = ChatStepTask(
    name="triage",
    step={
        "model": "gpt-4o-mini",
        "system_message": "Classify support tickets.",
        "prompt": "Ticket: {{ inputs.ticket }}",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "set_urgency",
                    "parameters": {
                        "type": "object",
                        "properties": {"urgency": {"type": "string", "enum": ["low", "high"]}},
                        "required": ["urgency"],
                    },
                },
            }
        ],
        "tool_choice": "required",
    },
)


@task
def route(response: dict[str, Any]) -> str:
    call = response["choices"][0]["message"]["tool_calls"][0]
    urgency: str = json.loads(call["function"]["arguments"])["urgency"]
    return "pager" if urgency == "high" else "queue"


@workflow
def support(ticket: str) -> str:
    decision = triage(ticket=ticket)
    return route(response=decision.response)


if __name__ == "__main__":
    print(support(ticket="The site is down for everyone"))
