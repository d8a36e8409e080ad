"""Flyte on chatstep (``pip install "chatstep[flyte]"``).

A drop-in for flytekit's OpenAI plugin: change the import line and nothing else::

    # was: from flytekitplugins.openai import ChatGPTTask, ChatGPTConfig
    from chatstep.integrations.flyte import ChatGPTTask, ChatGPTConfig

    chatgpt_small_job = ChatGPTTask(
        name="chatgpt gpt-4o-mini",
        openai_organization="org-...",
        chatgpt_config={"model": "gpt-4o-mini", "temperature": 0.7},
    )

- :class:`ChatGPTTask`: ``message: str`` -> ``o0: str``, now with chatstep's timeout (60 s),
  retries, ``base_url``, ``system_message`` and the embedded local model when no key is set.
- :class:`ChatStepTask`: any chatstep step; inputs from its templates, outputs ``o0`` and the
  whole ``response`` (tool calls, usage) for downstream tasks.
- :func:`create_batch`: a workflow that runs rows through the Batch API at half price and
  returns the joined results file; aborting it cancels the batch.

The key is the Flyte secret ``FLYTE_OPENAI_API_KEY`` (as flytekit's plugin reads it), else
``OPENAI_API_KEY``. Importing this module registers the ``chatstep`` (sync) and
``chatstep-batch`` (async) connectors; flytekit imports it through the ``flytekit.plugins``
entry point, so a connector service with chatstep installed serves them.
"""

from __future__ import annotations

from chatstep.integrations.flyte.batch import (
    BatchConnector,
    ChatStepBatchTask,
    create_batch,
    register_batch_connector,
)
from chatstep.integrations.flyte.tasks import (
    ChatGPTConfig,
    ChatGPTTask,
    ChatStepConnector,
    ChatStepTask,
    FlyteSecrets,
    register_connectors,
)

__all__ = [
    "BatchConnector",
    "ChatGPTConfig",
    "ChatGPTTask",
    "ChatStepBatchTask",
    "ChatStepConnector",
    "ChatStepTask",
    "FlyteSecrets",
    "create_batch",
]

register_connectors()
register_batch_connector()
