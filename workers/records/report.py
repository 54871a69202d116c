"""`releasegate report` and the chat's `report ENV SPAN`: the delivery figures, read from the
GitOps repositories' history (fetched first), in the form asked for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Literal

import requests

from config.policy import Policy
from workers.git.mirrors import Mirrors
from workers.records import figures
from workers.records.commits import Record, log_args, merged, parse_log
from workers.rules.checks import commit_time

log = logging.getLogger(__name__)

Format = Literal["table", "csv", "json"]


def read_records(policy: Policy, mirrors: Mirrors, since: datetime | None) -> list[Record]:
    """releasegate's commits since `since` in every repository (fetched first), one record
    per request, oldest first."""
    mirrors.snapshot()
    return merged(
        parse_log(mirrors[name].log(*log_args(since)), name) for name in policy.repositories
    )


def source_times(policy: Policy, session: requests.Session) -> figures.SourceTime:
    """When each app's source commit was made, asked of its forge once per commit: the app's
    `source:`, else its `git_tags` repository."""

    @cache
    def asked(app: str, sha: str) -> datetime | None:
        spec = policy.apps.get(app)
        if spec is None:
            return None
        repository = spec.source or (spec.artifact.git_tags if spec.artifact else None)
        return commit_time(policy, repository, sha, session) if repository else None

    return asked


def picture(
    policy: Policy,
    mirrors: Mirrors,
    since: datetime,
    until: datetime,
    path: Path,
    *,
    env: str | None = None,
    app: str | None = None,
) -> None:
    """Deploys per week and the median lead time, drawn into `path` (PNG)."""
    from workers.records.picture import draw, weekly

    records = read_records(policy, mirrors, since)
    with requests.Session() as session:
        rows = weekly(records, since, until, source_times(policy, session), env=env, app=app)
    scope = " ".join(part for part in (env, app) if part) or "every environment"
    draw(rows, f"releasegate: {scope}, {since:%Y-%m-%d} to {until:%Y-%m-%d}", path)


def report(
    policy: Policy,
    mirrors: Mirrors,
    since: datetime,
    until: datetime,
    *,
    env: str | None = None,
    app: str | None = None,
    form: Format = "table",
    source_time: Callable[[str, str], datetime | None] | None = None,
) -> str:
    records = read_records(policy, mirrors, since)
    with requests.Session() as session:
        asked = source_time or source_times(policy, session)
        found = figures.compute(records, since, until, asked, env=env, app=app)
    if form == "csv":
        return figures.as_csv(found)
    if form == "json":
        return figures.as_json(found, since, until)
    return figures.table(found, since, until)
