"""The four delivery figures (DORA) per environment and app, from deploy records.

- deploys, and how many a day over the window;
- lead time for changes: from the source commit (its `Source-Revision`, where the forge
  says when it was made) to landing; else from filing the request to landing;
- change failure rate: the share of deploys followed by a rollback (releasegate's own after
  a failed verification, `Rollback-Of`, or a person's `rollback` as the next change);
- time to restore: from a failed deploy landing to the next change that was not itself a
  failure landing.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from workers.records.commits import Change, Record

# When a source commit was made, asked of its forge (None where it cannot say).
SourceTime = Callable[[str, str], datetime | None]  # (app, sha) -> its time


@dataclass(frozen=True)
class Event:
    record: Record
    change: Change


@dataclass(frozen=True)
class Figures:
    env: str
    app: str
    deploys: int
    per_day: float
    lead_time: float | None  # seconds, median
    lead_from_source: int  # deploys whose lead time counts from the source commit
    failures: int
    change_failure_rate: float | None
    time_to_restore: float | None  # seconds, median
    unrestored: int  # failed deploys nothing has followed yet


def compute(
    records: Sequence[Record],
    since: datetime,
    until: datetime,
    source_time: SourceTime | None = None,
    env: str | None = None,
    app: str | None = None,
) -> list[Figures]:
    """Figures per (env, app) for the deploys landed in [since, until), in name order."""
    series: dict[tuple[str, str], list[Event]] = {}
    for record in records:
        for change in record.changes:
            if (env and change.env != env) or (app and change.app != app):
                continue
            series.setdefault((change.env, change.app), []).append(Event(record, change))
    undone = {r.rollback_of for r in records if r.rollback_of}
    days = max((until - since).total_seconds() / 86400, 1 / 24)
    found = []
    for (env_name, app_name), events in sorted(series.items()):
        failed = [
            not e.record.is_rollback
            and (
                e.record.request in undone
                or (n + 1 < len(events) and events[n + 1].record.is_rollback)
            )
            for n, e in enumerate(events)
        ]
        leads, restores, unrestored, deploys, failures, from_source = [], [], 0, 0, 0, 0
        for n, event in enumerate(events):
            record = event.record
            if record.is_rollback or not since <= record.landed < until:
                continue
            deploys += 1
            lead, counted = lead_time(record, event.change.app, source_time)
            leads.append(lead)
            from_source += counted
            if not failed[n]:
                continue
            failures += 1
            good = next((e for m, e in enumerate(events) if m > n and not failed[m]), None)
            if good is None:
                unrestored += 1
            else:
                restores.append((good.record.landed - record.landed).total_seconds())
        if deploys == 0:
            continue
        found.append(
            Figures(
                env=env_name,
                app=app_name,
                deploys=deploys,
                per_day=round(deploys / days, 3),
                lead_time=statistics.median(leads) if leads else None,
                lead_from_source=from_source,
                failures=failures,
                change_failure_rate=round(failures / deploys, 4),
                time_to_restore=statistics.median(restores) if restores else None,
                unrestored=unrestored,
            )
        )
    return found


def lead_time(record: Record, app: str, source_time: SourceTime | None) -> tuple[float, int]:
    sha = record.source_revisions.get(app)
    if sha and source_time is not None and (made := source_time(app, sha)) is not None:
        return max(0.0, (record.landed - made).total_seconds()), 1
    return max(0.0, (record.landed - record.filed).total_seconds()), 0


def span(seconds: float | None) -> str:
    """`3d 04h`, `2h 05m`, `4m 10s`, `-` for nothing to say."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


COLUMNS = (
    "env",
    "app",
    "deploys",
    "per day",
    "lead time",
    "change failure rate",
    "time to restore",
)


def table(figures: Sequence[Figures], since: datetime, until: datetime) -> str:
    """The figures as aligned text (what `report` prints and the chat command answers)."""
    header = f"delivery from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"
    if not figures:
        return f"{header}: no deploys"
    rows = [
        [
            f.env,
            f.app,
            str(f.deploys),
            f"{f.per_day:.2f}",
            span(f.lead_time),
            f"{f.change_failure_rate:.0%}" if f.change_failure_rate is not None else "-",
            span(f.time_to_restore) + (f" ({f.unrestored} open)" if f.unrestored else ""),
        ]
        for f in figures
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def as_csv(figures: Sequence[Figures]) -> str:
    out = io.StringIO()
    names = list(Figures.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for f in figures:
        writer.writerow(asdict(f))
    return out.getvalue()


def as_json(figures: Sequence[Figures], since: datetime, until: datetime) -> str:
    return json.dumps(
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "figures": [asdict(f) for f in figures],
        },
        indent=2,
    )


def window(text: str, now: datetime) -> datetime:
    """`30d`, `12h`, `2w` before `now`; raises ValueError otherwise."""
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text[:-1], text[-1:].lower()
    if not number.isdigit() or unit not in units or not 0 < int(number) <= 3650 * 24:
        raise ValueError(f"{text!r} is not a span like 30d, 12h or 2w")
    return now - timedelta(seconds=int(number) * units[unit])
