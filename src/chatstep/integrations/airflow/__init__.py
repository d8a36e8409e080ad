"""Apache Airflow (``pip install "chatstep[airflow]"``): operators, a trigger, a hook.

``hook`` (:class:`ChatStepHook`: the Airflow Connection as chatstep's secrets), ``operators``
(:class:`ChatStepOperator`, :class:`ChatStepBatchOperator`) and ``triggers``
(:class:`ChatStepBatchTrigger`). Names load on first use, so importing this package does not
import Airflow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DEFAULT_CONN_ID": "chatstep.integrations.airflow.hook",
    "ChatStepHook": "chatstep.integrations.airflow.hook",
    "connection_secret_store": "chatstep.integrations.airflow.hook",
    "connection_values": "chatstep.integrations.airflow.hook",
    "JOB_XCOM_KEY": "chatstep.integrations.airflow.operators",
    "RESPONSE_XCOM_KEY": "chatstep.integrations.airflow.operators",
    "ChatStepBatchOperator": "chatstep.integrations.airflow.operators",
    "ChatStepOperator": "chatstep.integrations.airflow.operators",
    "answer_of": "chatstep.integrations.airflow.operators",
    "ChatStepBatchTrigger": "chatstep.integrations.airflow.triggers",
}

__all__ = [
    "DEFAULT_CONN_ID",
    "JOB_XCOM_KEY",
    "RESPONSE_XCOM_KEY",
    "ChatStepBatchOperator",
    "ChatStepBatchTrigger",
    "ChatStepHook",
    "ChatStepOperator",
    "answer_of",
    "connection_secret_store",
    "connection_values",
]  # a test checks it against _EXPORTS


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
