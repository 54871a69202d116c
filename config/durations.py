"""Durations as the policy writes them: `90s`, `10m`, `2h`, `1d`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(value: Any) -> Any:
    if isinstance(value, str) and (m := _DURATION.match(value.strip())):
        return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
