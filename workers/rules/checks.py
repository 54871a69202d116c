"""The checks gate: CI must have passed on the commit the artifact was built from, when a
request is filed and again right before its commit.

The source commit is the image's `org.opencontainers.image.revision` (its
`org.opencontainers.image.source` names the repository), or the commit a Git tag points to
for `git_tags`. The forge is found by the repository's host (the policy's `forges:`, or
github.com and gitlab.com). GitHub: the commit's check runs and its commit statuses; GitLab:
its pipelines and commit statuses. With `checks: all` every one must have succeeded
(neutral and skipped count as success) and at least one must exist; with a list of names,
each named one must exist and have succeeded. Pending is "not yet". Every answer is read
bounded (1 MiB, 10 s).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from config.errors import Refused
from config.gates import Forge
from config.policy import Policy
from config.text import inert
from workers.http import AnswerRefused, fetch
from workers.state.request import Built

DEADLINE = 10.0
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SOURCE = re.compile(
    r"(?:[a-z+]+://)?(?:[^@/]+@)?([A-Za-z0-9.-]+(?::\d{1,5})?)[:/]([\w.-]+(?:/[\w.-]+)+?)(?:\.git)?/?"
)


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # success | failure | pending
    url: str = ""

    def describe(self) -> str:
        link = f" {inert(self.url, 200)}" if self.url else ""
        return f"{inert(self.name, 80)} ({self.state}){link}"


class ChecksUnknown(Exception):
    """The forge could not be asked, or answered what it does not."""


def _github(forge: Forge, project: str, sha: str, session: requests.Session) -> list[Check]:
    repo = "/repos/" + "/".join(quote(p, safe="") for p in project.split("/", 1))
    runs = forge_get(forge, f"{repo}/commits/{sha}/check-runs", session, {"per_page": "100"})
    combined = forge_get(forge, f"{repo}/commits/{sha}/status", session, {"per_page": "100"})
    found = []
    for run in (runs.get("check_runs") if isinstance(runs, dict) else None) or []:
        if not isinstance(run, dict):
            continue
        if run.get("status") != "completed":
            state = "pending"
        elif run.get("conclusion") in ("success", "neutral", "skipped"):
            state = "success"
        else:
            state = "failure"
        found.append(Check(str(run.get("name", "")), state, str(run.get("html_url") or "")))
    for status in (combined.get("statuses") if isinstance(combined, dict) else None) or []:
        if not isinstance(status, dict):
            continue
        said = str(status.get("state", ""))
        state = {"success": "success", "pending": "pending"}.get(said, "failure")
        found.append(
            Check(str(status.get("context", "")), state, str(status.get("target_url") or ""))
        )
    return found


def _gitlab(forge: Forge, project: str, sha: str, session: requests.Session) -> list[Check]:
    base = f"/projects/{quote(project, safe='')}"
    statuses = forge_get(
        forge, f"{base}/repository/commits/{sha}/statuses", session, {"per_page": "100"}
    )
    pipelines = forge_get(forge, f"{base}/pipelines", session, {"sha": sha, "per_page": "100"})
    good, pending = (
        {"success", "skipped"},
        {
            "created",
            "waiting_for_resource",
            "preparing",
            "pending",
            "running",
            "manual",
            "scheduled",
        },
    )

    def state(said: str) -> str:
        return "success" if said in good else "pending" if said in pending else "failure"

    found = []
    for status in statuses if isinstance(statuses, list) else []:
        if isinstance(status, dict):
            found.append(
                Check(
                    str(status.get("name", "")),
                    state(str(status.get("status", ""))),
                    str(status.get("target_url") or ""),
                )
            )
    for pipeline in pipelines if isinstance(pipelines, list) else []:
        if isinstance(pipeline, dict):
            name = f"pipeline #{pipeline.get('id', '?')}"
            found.append(
                Check(
                    name, state(str(pipeline.get("status", ""))), str(pipeline.get("web_url") or "")
                )
            )
    return found


def forge_get(forge: Forge, path: str, session: requests.Session, params: dict[str, str]) -> Any:
    """GET `path` of the forge's API with its token, bounded; raises `ChecksUnknown`."""
    token = os.environ.get(forge.token_env, "")
    if forge.kind == "github":
        headers = {"Accept": "application/vnd.github+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
    else:
        headers = {"PRIVATE-TOKEN": token} if token else {}
    url = forge.api_url.rstrip("/") + path
    try:
        answer = fetch(session, "GET", url, deadline=DEADLINE, headers=headers, params=params)
    except AnswerRefused as exc:
        raise ChecksUnknown(f"{forge.host} {exc}") from exc
    except requests.RequestException as exc:
        raise ChecksUnknown(f"cannot reach {forge.host} ({type(exc).__name__})") from exc
    if answer.status_code != 200:
        raise ChecksUnknown(f"{forge.host} answered {answer.status_code} for {path}")
    try:
        return answer.json()
    except ValueError as exc:
        raise ChecksUnknown(f"{forge.host}'s answer is not JSON") from exc


def commit_time(
    policy: Policy, repository: str, sha: str, session: requests.Session
) -> datetime | None:
    """When `sha` of the source `repository` (a URL) was committed, as its forge says; None
    where the forge is unknown or cannot say."""
    match = SOURCE.fullmatch(repository)
    forge = policy.forge_of(match.group(1)) if match and SHA.fullmatch(sha) else None
    if match is None or forge is None:
        return None
    project = match.group(2)
    try:
        if forge.kind == "github":
            repo = "/repos/" + "/".join(quote(p, safe="") for p in project.split("/", 1))
            said = forge_get(forge, f"{repo}/commits/{sha}", session, {})
            when = said["commit"]["committer"]["date"]
        else:
            base = f"/projects/{quote(project, safe='')}"
            when = forge_get(forge, f"{base}/repository/commits/{sha}", session, {})[
                "committed_date"
            ]
        return datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    except (ChecksUnknown, KeyError, TypeError, ValueError):
        return None


def source_of(policy: Policy, built: Built) -> tuple[str, str]:
    """The repository (URL) and commit the artifact was built from; ("", "") where it names
    none."""
    artifact = policy.apps[built.app].artifact if built.app in policy.apps else None
    if artifact is not None and artifact.git_tags is not None:
        return artifact.git_tags, built.digest
    return built.source, built.revision


def check_ci(policy: Policy, env: str, built: tuple[Built, ...], apps: list[str]) -> str:
    """Refuse unless CI passed on each change's source commit; returns the card's evidence."""
    wanted = policy.environments[env].gates.checks
    if wanted is None:
        return ""
    by_app = {b.app: b for b in built}
    with requests.Session() as session:
        return "; ".join(_each(policy, env, by_app, apps, wanted, session))


def _each(
    policy: Policy,
    env: str,
    by_app: dict[str, Built],
    apps: list[str],
    wanted: str | list[str],
    session: requests.Session,
) -> list[str]:
    lines = []
    for app in apps:
        found = by_app.get(app)
        repository, sha = source_of(policy, found) if found else ("", "")
        if not SHA.fullmatch(sha) or not (match := SOURCE.fullmatch(repository)):
            raise Refused(
                f"{env} asks for CI on each app's source commit, and {app}'s artifact names "
                "none (org.opencontainers.image.source and .revision, or git_tags)",
                reason="checks",
            )
        host, project = match.group(1), match.group(2)
        forge = policy.forge_of(host)
        if forge is None:
            raise Refused(
                f"{app}'s source {inert(repository, 120)} is on {inert(host, 60)}, which the "
                "policy's `forges:` does not name",
                reason="checks",
            )
        try:
            checks = (_github if forge.kind == "github" else _gitlab)(forge, project, sha, session)
        except ChecksUnknown as exc:
            raise Refused(f"{app}: CI on {sha[:7]} cannot be read: {exc}", reason="checks") from exc
        lines.append(_judge(app, sha, checks, wanted))
    return lines


def _judge(app: str, sha: str, checks: list[Check], wanted: str | list[str]) -> str:
    considered = checks if wanted == "all" else [c for c in checks if c.name in wanted]
    where = f"{app}'s source commit {sha[:7]}"
    if wanted != "all":
        missing = [name for name in wanted if name not in {c.name for c in checks}]
        if missing:
            raise Refused(f"{where} has no {', '.join(missing)} check yet", reason="checks")
    if not considered:
        raise Refused(f"{where} has no CI result at all", reason="checks")
    failing = [c for c in considered if c.state == "failure"]
    if failing:
        named = "; ".join(c.describe() for c in failing[:3])
        raise Refused(f"{where} failed CI: {named}", reason="checks")
    pending = [c for c in considered if c.state == "pending"]
    if pending:
        named = "; ".join(c.describe() for c in pending[:3])
        raise Refused(
            f"{where} is still being checked: {named}; ask again when it passed", reason="checks"
        )
    names = ", ".join(inert(c.name, 40) for c in considered[:5])
    return f"✓ checks passed on {app}'s {sha[:7]}: {names}"
