"""Where ``ChatStepBatchOperator`` and ``ChatStepBatchTrigger`` lived before the split.

Kept so DAG files that import from here, and triggers Airflow stored in its database under the
classpath ``chatstep.integrations.airflow.batch.ChatStepBatchTrigger``, still load. New code
imports from :mod:`chatstep.integrations.airflow`.
"""

from __future__ import annotations

from chatstep.integrations.airflow.operators import JOB_XCOM_KEY, ChatStepBatchOperator
from chatstep.integrations.airflow.triggers import ChatStepBatchTrigger

__all__ = ["JOB_XCOM_KEY", "ChatStepBatchOperator", "ChatStepBatchTrigger"]
