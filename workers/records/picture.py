"""`releasegate report --png FILE`: deploys per week and the median lead time, drawn.

matplotlib is an optional extra (`releasegate[charts]`): the bot and the workers never need
it, and a report without `--png` never imports it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from config.errors import ReleasegateError
from workers.records.commits import Record
from workers.records.figures import SourceTime, lead_time


def weekly(
    records: Sequence[Record],
    since: datetime,
    until: datetime,
    source_time: SourceTime | None = None,
    env: str | None = None,
    app: str | None = None,
) -> list[tuple[datetime, int, float | None]]:
    """Per week (Monday first) from `since` to `until`: deploys, and their median lead time
    in hours (None in a week without a deploy)."""
    start = (since - timedelta(days=since.weekday())).replace(hour=0, minute=0, second=0)
    weeks: dict[datetime, list[float]] = {}
    week = start
    while week < until:
        weeks[week] = []
        week += timedelta(days=7)
    for record in records:
        if record.is_rollback or not since <= record.landed < until:
            continue
        monday = (record.landed - timedelta(days=record.landed.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        for change in record.changes:
            if (env and change.env != env) or (app and change.app != app):
                continue
            seconds, _counted = lead_time(record, change.app, source_time)
            weeks.setdefault(monday.replace(tzinfo=start.tzinfo), []).append(seconds / 3600)
    return [
        (week, len(leads), statistics.median(leads) if leads else None)
        for week, leads in sorted(weeks.items())
    ]


def draw(rows: Sequence[tuple[datetime, int, float | None]], title: str, path: Path) -> None:
    """Two panels, one above the other: deploys per week (bars), median lead time (line)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: a file
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReleasegateError(
            "the picture needs matplotlib: pip install 'releasegate[charts]'"
        ) from exc
    weeks = [week for week, _deploys, _lead in rows]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5), dpi=100)
    try:
        top.bar(weeks, [deploys for _w, deploys, _l in rows], width=5, color="#3b7dd8")
        top.set_ylabel("deploys per week")
        top.set_title(title)
        led = [(week, lead) for week, _d, lead in rows if lead is not None]
        bottom.plot([w for w, _l in led], [lead for _w, lead in led], marker="o", color="#d8793b")
        bottom.set_ylabel("median lead time (h)")
        figure.autofmt_xdate()
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
