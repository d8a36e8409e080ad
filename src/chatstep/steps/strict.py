"""The one pydantic base of every user-written definition: steps, messages, tools, flows.

Unknown keys are errors (a typo such as ``temprature`` must not be silently ignored), and a field
can be given by its name or by its alias (Kestra's camelCase spelling).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown keys and accepts names and aliases alike."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
