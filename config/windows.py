"""Deploy windows: `Mon-Thu 08:00-17:00 Europe/Zurich`, `Mon,Wed,Fri 09:00-12:00 UTC`.

Days are a range (`Mon-Fri`, wrapping allowed: `Sat-Mon`) or a comma list;
hours are a start and an end on the same day; the time zone is an IANA name,
so daylight saving time is applied as the clocks on the wall show it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(\S+)\s+(\d{2}):(\d{2})-(\d{2}):(\d{2})\s+(\S+)\s*$")


def _day(name: str) -> int:
    try:
        return DAYS.index(name.lower()[:3])
    except ValueError:
        raise ValueError(f"unknown day {name!r} (Mon, Tue, … Sun)") from None


def _days(spec: str) -> frozenset[int]:
    days: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            first, last = (_day(p) for p in part.split("-", 1))
            days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            days.add(_day(part))
    return frozenset(days)


@dataclass(frozen=True)
class Window:
    text: str
    days: frozenset[int]
    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not 'DAYS HH:MM-HH:MM TIMEZONE' (Mon-Thu 08:00-17:00 UTC)"
            )
        days, h1, m1, h2, m2, zone = match.groups()
        try:
            start, end = time(int(h1), int(m1)), time(int(h2), int(m2))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if end <= start:
            raise ValueError(f"{text!r}: the window must end after it starts on the same day")
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{text!r}: unknown time zone {zone!r}") from None
        return cls(text.strip(), _days(days), start, end, tz)

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def next_open(self, moment: datetime) -> datetime:
        """The next moment at or after `moment` when this window is open."""
        if self.contains(moment):
            return moment
        local = moment.astimezone(self.zone)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            opens = datetime.combine(day, self.start, self.zone)
            if day.weekday() in self.days and opens >= local:
                return opens
        raise AssertionError("a window with at least one day opens within a week")


def open_now(windows: list[Window], moment: datetime) -> bool:
    return not windows or any(w.contains(moment) for w in windows)


def next_opening(windows: list[Window], moment: datetime) -> datetime | None:
    return min((w.next_open(moment) for w in windows), default=None)
