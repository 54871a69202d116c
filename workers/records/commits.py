"""releasegate's commits read back as deploy records: Git alone is the record.

Every commit releasegate makes says what it changed (one body line per change, `app: old ->
new (env)`) and carries trailers: the request, its kind, who asked and approved, the
artifact's source commit, and for a rollback the request it undoes. So the delivery
figures can be computed from any clone, for history made before they were asked for.
A request that landed in several repositories is one record (its earliest commit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from workers.landing.commit import REQUEST_TRAILER

FIELD, RECORD = "\x1f", "\x1e"
LOG_FORMAT = f"--format=%H{FIELD}%at{FIELD}%ct{FIELD}%B{RECORD}"
CHANGE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*): (.+) -> (\S+) \(([A-Za-z0-9_.-]+)\)$")
TRAILER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*): (.*)$")
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Change:
    app: str
    env: str
    old: str
    new: str


@dataclass
class Record:
    request: str
    kind: str  # deploy, promote, train, rollback, break-glass
    commit: str
    repository: str
    filed: datetime  # the author date: when the request was filed
    landed: datetime  # the commit date
    changes: list[Change]
    source_revisions: dict[str, str] = field(default_factory=dict)  # app -> source commit
    rollback_of: str = ""
    reason: str = ""

    @property
    def is_rollback(self) -> bool:
        return self.kind == "rollback"


def parse(
    commit: str, author_ts: str, commit_ts: str, message: str, repository: str
) -> Record | None:
    """One commit's record, or None where it is not releasegate's."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return None
    trailers: dict[str, list[str]] = {}
    for line in paragraphs[-1].splitlines():
        if found := TRAILER.match(line.strip()):
            trailers.setdefault(found.group(1), []).append(found.group(2).strip())
    request = (trailers.get(REQUEST_TRAILER) or [""])[0]
    if not request:
        return None
    changes = [
        Change(app=m.group(1), env=m.group(4), old=m.group(2), new=m.group(3))
        for line in "\n".join(paragraphs[1:-1]).splitlines()
        if (m := CHANGE.match(line.strip()))
    ]
    revisions: dict[str, str] = {}
    for value in trailers.get("Source-Revision", []):
        sha, _, app = value.partition(" ")
        app = app.strip("()") or (changes[0].app if changes else "")
        if SHA.fullmatch(sha) and app:
            revisions[app] = sha
    return Record(
        request=request,
        kind=(trailers.get("Releasegate-Kind") or ["deploy"])[0],
        commit=commit,
        repository=repository,
        filed=datetime.fromtimestamp(int(author_ts), UTC),
        landed=datetime.fromtimestamp(int(commit_ts), UTC),
        changes=changes,
        source_revisions=revisions,
        rollback_of=(trailers.get("Rollback-Of") or [""])[0],
        reason=(trailers.get("Reason") or [""])[0],
    )


def parse_log(text: str, repository: str) -> list[Record]:
    """The records of `git log` output written with `LOG_FORMAT`, newest first."""
    found = []
    for entry in text.split(RECORD):
        parts = entry.strip("\n").split(FIELD, 3)
        if len(parts) == 4:
            commit, authored, committed, message = parts
            if record := parse(commit, authored, committed, message, repository):
                found.append(record)
    return found


def log_args(since: datetime | None) -> list[str]:
    """What to ask `git log` for: releasegate's commits (Git filters), since `since`."""
    since_arg = [f"--since=@{int(since.timestamp())}"] if since else []
    return [LOG_FORMAT, f"--grep=^{REQUEST_TRAILER}: ", *since_arg]


def merged(per_repository: Iterable[list[Record]]) -> list[Record]:
    """One record per request (its earliest landing over every repository), oldest first."""
    first: dict[str, Record] = {}
    for records in per_repository:
        for record in records:
            seen = first.get(record.request)
            if seen is None or record.landed < seen.landed:
                first[record.request] = record
    return sorted(first.values(), key=lambda r: (r.landed, r.request))
