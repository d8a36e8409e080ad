"""Flow files: Kestra-compatible YAML flows whose tasks run in order, in-process.

::

    id: review-triage
    inputs:
      - {id: prompt, type: STRING, defaults: I love it}
    tasks:
      - id: ask
        type: io.kestra.plugin.openai.ChatCompletion
        model: gpt-4o-mini
        prompt: "{{ inputs.prompt }}"
      - id: answer
        type: io.kestra.plugin.core.debug.Return
        format: "{{ outputs.ask.choices[0].message.content }}"

:func:`load_flow` checks everything it can before any call: task types and properties, inputs,
templates, and that every ``outputs.X`` names an earlier task. :func:`run_flow` runs the tasks
one after another (this is not a scheduler: orchestrators schedule, see
``chatstep.integrations``) and returns a :class:`FlowRun`. Every call is logged in the history
with the run's id as ``run_id`` and the task's id as ``step``.

A ``chatstep.map`` task runs through :mod:`chatstep.mapping.run` (concurrency, rate limits); its
step's templates see each row's columns, over the flow's inputs, as ``inputs``.
"""

from __future__ import annotations

from chatstep.flows.inputs import FlowInput
from chatstep.flows.loading import Flow, flow_from_dict, load_flow
from chatstep.flows.runs import FlowRun, MapRowsFailedError, TaskRun, arun_flow, run_flow
from chatstep.flows.tasks import known_task_types

__all__ = [
    "Flow",
    "FlowInput",
    "FlowRun",
    "MapRowsFailedError",
    "TaskRun",
    "arun_flow",
    "flow_from_dict",
    "known_task_types",
    "load_flow",
    "run_flow",
]
