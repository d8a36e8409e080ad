"""Durations as written in flow files, on the command line and in DAGs: seconds, ISO 8601, ``30s``.

The one duration codec: :func:`parse_duration` reads a number of seconds (``30``), an ISO 8601
duration (``PT1M30S``), a number with a unit (``500ms``, ``30s``, ``2m``, ``1h``, ``1d``) or a
:class:`datetime.timedelta`; :data:`Duration` is the same as a pydantic field type. Flow task
options, ``history prune --older-than`` and the Airflow batch operator all read durations here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["Duration", "parse_duration"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_SHORT_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds (> 0) from a number, ISO 8601 (``PT1M30S``), ``500ms``/``30s``/``2m``, a timedelta.

    Raises ValueError (naming the value and the accepted forms) for anything else.
    """
    seconds: float | None = None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        iso = _ISO_DURATION.match(text)
        short = _SHORT_DURATION.match(text)
        if iso and text.upper() not in ("P", "PT"):
            parts = {k: float(v) for k, v in iso.groupdict().items() if v is not None}
            seconds = (
                parts.get("d", 0.0) * 86400
                + parts.get("h", 0.0) * 3600
                + parts.get("m", 0.0) * 60
                + parts.get("s", 0.0)
            )
        elif short:
            seconds = float(short.group(1)) * _DURATION_UNITS[short.group(2).lower()]
        else:
            try:
                seconds = float(text)
            except ValueError:
                seconds = None
    if seconds is None:
        raise ValueError(
            f"{value!r} is not a duration; write seconds (30), ISO 8601 (PT30S) or 30s, 2m, 1h"
        )
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A pydantic field of seconds that accepts every form :func:`parse_duration` reads."""
