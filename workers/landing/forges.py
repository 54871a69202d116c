"""GitHub's and GitLab's pull (merge) requests, as releasegate uses them: open one for a
pushed branch, merge it with releasegate's own commit message, close it.

GitHub: `POST /repos/{owner}/{repo}/pulls`, `PUT …/pulls/{n}/merge` (`commit_title`,
`commit_message`, `merge_method`), `PATCH …/pulls/{n}` (`state: closed`), `DELETE
…/git/refs/heads/{branch}`; a Bearer token. GitLab: `POST /projects/{id}/merge_requests`,
`PUT …/merge_requests/{iid}/merge` (`squash`, `squash_commit_message`,
`merge_commit_message`), `PUT …/merge_requests/{iid}` (`state_event: close`), `DELETE
/projects/{id}/repository/branches/{branch}`; a `PRIVATE-TOKEN`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import requests

from config.errors import ReleasegateError

TIMEOUT = 20.0
MergeMethod = Literal["merge", "squash", "rebase"]


class ForgeError(ReleasegateError):
    """The forge did not do what was asked, for good (rights, no such project)."""


class MergeRefused(ReleasegateError):
    """The forge will not merge now (checks failing or pending, conflicts, review required);
    asking again later may work."""


@dataclass(frozen=True)
class MergeRequest:
    number: int  # GitHub's pull number, GitLab's iid
    url: str


class Forge(Protocol):
    name: str

    def open(self, branch: str, base: str, title: str, body: str) -> MergeRequest: ...
    def merge(self, mr: MergeRequest, method: MergeMethod, title: str, body: str) -> str: ...
    def close(self, mr: MergeRequest, branch: str) -> None: ...
    def delete_branch(self, branch: str) -> None: ...
    def checks(self, mr: MergeRequest, branch: str) -> str: ...


def _said(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:300]
    return str(body)[:300]


class _Client:
    name = "forge"

    def __init__(self, api_url: str, headers: dict[str, str]) -> None:
        self.api_url = api_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(headers)

    def call(self, method: str, path: str, refusals: tuple[int, ...] = (), **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, self.api_url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise MergeRefused(f"{self.name} does not answer ({type(exc).__name__})") from exc
        if response.status_code in refusals:
            raise MergeRefused(f"{self.name} will not merge yet: {_said(response)}")
        if response.status_code in (401, 403):
            raise ForgeError(
                f"{self.name} refused releasegate's token (HTTP "
                f"{response.status_code}: {_said(response)})"
            )
        if response.status_code >= 500:
            raise MergeRefused(f"{self.name} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ForgeError(f"{self.name} answered HTTP {response.status_code}: {_said(response)}")
        return response.json() if response.content else {}


class GitHub(_Client):
    name = "GitHub"

    def __init__(self, api_url: str, project: str, token: str) -> None:
        super().__init__(
            api_url, {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
        )
        self.repo = "/repos/" + "/".join(quote(part, safe="") for part in project.split("/", 1))

    def open(self, branch: str, base: str, title: str, body: str) -> MergeRequest:
        asked = {"title": title, "head": branch, "base": base, "body": body}
        pull = self.call("POST", f"{self.repo}/pulls", json=asked)
        return MergeRequest(int(pull["number"]), str(pull["html_url"]))

    def merge(self, mr: MergeRequest, method: MergeMethod, title: str, body: str) -> str:
        # 405: not mergeable (checks, reviews, conflicts); 409: the head moved.
        done = self.call(
            "PUT",
            f"{self.repo}/pulls/{mr.number}/merge",
            refusals=(405, 409),
            json={"merge_method": method, "commit_title": title, "commit_message": body},
        )
        return str(done["sha"])

    def close(self, mr: MergeRequest, branch: str) -> None:
        self.call("PATCH", f"{self.repo}/pulls/{mr.number}", json={"state": "closed"})
        self.delete_branch(branch)

    def delete_branch(self, branch: str) -> None:
        self.call("DELETE", f"{self.repo}/git/refs/heads/{quote(branch, safe='/')}")

    def checks(self, mr: MergeRequest, branch: str) -> str:
        """The combined commit status of the branch: passing, failing, pending or none."""
        status = self.call("GET", f"{self.repo}/commits/{quote(branch, safe='/')}/status")
        if not status.get("total_count"):
            return "none"
        state = str(status.get("state", ""))
        return {"success": "passing", "failure": "failing", "error": "failing"}.get(
            state, "pending"
        )


class GitLab(_Client):
    name = "GitLab"

    def __init__(self, api_url: str, project: str, token: str) -> None:
        super().__init__(api_url, {"PRIVATE-TOKEN": token})
        self.project = f"/projects/{quote(project, safe='')}"

    def open(self, branch: str, base: str, title: str, body: str) -> MergeRequest:
        mr = self.call(
            "POST",
            f"{self.project}/merge_requests",
            json={
                "source_branch": branch,
                "target_branch": base,
                "title": title,
                "description": body,
                "remove_source_branch": True,
            },
        )
        return MergeRequest(int(mr["iid"]), str(mr["web_url"]))

    def merge(self, mr: MergeRequest, method: MergeMethod, title: str, body: str) -> str:
        message = f"{title}\n\n{body}"
        # 405: not mergeable now (pipeline, approvals, draft); 406: conflicts; 409: SHA moved;
        # 422: the branch cannot be merged as asked.
        done = self.call(
            "PUT",
            f"{self.project}/merge_requests/{mr.number}/merge",
            refusals=(405, 406, 409, 422),
            json={
                "squash": method == "squash",
                "squash_commit_message": message,
                "merge_commit_message": message,
                "should_remove_source_branch": True,
            },
        )
        sha = done.get("squash_commit_sha") or done.get("merge_commit_sha") or done.get("sha")
        return str(sha)

    def close(self, mr: MergeRequest, branch: str) -> None:
        self.call(
            "PUT", f"{self.project}/merge_requests/{mr.number}", json={"state_event": "close"}
        )
        self.delete_branch(branch)

    def delete_branch(self, branch: str) -> None:
        self.call("DELETE", f"{self.project}/repository/branches/{quote(branch, safe='')}")

    def checks(self, mr: MergeRequest, branch: str) -> str:
        """The merge request's head pipeline: passing, failing, pending or none."""
        found = self.call("GET", f"{self.project}/merge_requests/{mr.number}")
        pipeline = found.get("head_pipeline") or {}
        state = str(pipeline.get("status", ""))
        if not state:
            return "none"
        return {"success": "passing", "failed": "failing", "canceled": "failing"}.get(
            state, "pending"
        )


def forge_for(kind: str, api_url: str, project: str, token: str) -> Forge:
    if kind == "github":
        return GitHub(api_url, project, token)
    if kind == "gitlab":
        return GitLab(api_url, project, token)
    raise ForgeError(f"unknown forge {kind!r}: github or gitlab")
