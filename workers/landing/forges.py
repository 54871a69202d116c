"""GitHub's and GitLab's pull (merge) requests, as releasegate uses them: open one for a
pushed branch, merge it with releasegate's own commit message, close it.

GitHub: `POST /repos/{owner}/{repo}/pulls`, `GET …/pulls/{n}`, `PUT …/pulls/{n}/merge`
(`commit_title`, `commit_message`, `merge_method`, `sha`), `PATCH …/pulls/{n}` (`state:
closed`), `DELETE …/git/refs/heads/{branch}`; a Bearer token. GitLab: `POST
/projects/{id}/merge_requests`, `GET …/merge_requests/{iid}`, `PUT
…/merge_requests/{iid}/merge` (`squash`, `squash_commit_message`, `merge_commit_message`,
`sha`), `PUT …/merge_requests/{iid}` (`state_event: close`), `DELETE
/projects/{id}/repository/branches/{branch}`; a `PRIVATE-TOKEN`.

The forge is not trusted with what lands: every merge names the head commit releasegate
pushed (`sha`), so a branch someone pushed to after us is refused by the forge itself, and
`pull()` lets the caller compare head and base before it asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import requests

from config.errors import ReleasegateError
from workers.http import AnswerRefused, fetch, said

TIMEOUT = 20.0
MergeMethod = Literal["merge", "squash", "rebase"]


class ForgeError(ReleasegateError):
    """The forge did not do what was asked, for good (rights, no such project)."""


class MergeRefused(ReleasegateError):
    """The forge will not merge now (checks failing or pending, conflicts, review required);
    asking again later may work."""


class HeadMoved(ForgeError):
    """The merge request's head is not the commit releasegate pushed: someone pushed to its
    branch. Nothing is merged; the request must be asked again."""


@dataclass(frozen=True)
class PullState:
    """A pull (merge) request as the forge describes it now."""

    head: str  # the head commit's full id
    base: str  # the branch it merges into
    state: str  # open | closed | merged (GitLab's opened reads open)


@dataclass(frozen=True)
class MergeRequest:
    number: int  # GitHub's pull number, GitLab's iid
    url: str


class Forge(Protocol):
    name: str

    def open(self, branch: str, base: str, title: str, body: str) -> MergeRequest: ...
    def pull(self, mr: MergeRequest) -> PullState: ...
    def method_for(self, asked: MergeMethod) -> MergeMethod: ...
    def merge(
        self, mr: MergeRequest, method: MergeMethod, title: str, body: str, head: str
    ) -> str: ...
    def close(self, mr: MergeRequest, branch: str) -> None: ...
    def delete_branch(self, branch: str) -> None: ...
    def checks(self, mr: MergeRequest, branch: str) -> str: ...


class _Client:
    name = "forge"

    def __init__(self, api_url: str, headers: dict[str, str]) -> None:
        self.api_url = api_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(headers)

    def call(
        self,
        method: str,
        path: str,
        refusals: tuple[int, ...] = (),
        moved: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        try:
            answer = fetch(self.session, method, self.api_url + path, deadline=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise MergeRefused(f"{self.name} does not answer ({type(exc).__name__})") from exc
        except AnswerRefused as exc:
            raise MergeRefused(f"{self.name} {exc}") from exc
        status = answer.status_code
        if status in moved:
            raise HeadMoved(f"{self.name} refused the merge: {said(answer)}")
        if status in refusals:
            raise MergeRefused(f"{self.name} will not merge yet: {said(answer)}")
        if status in (401, 403):
            raise ForgeError(
                f"{self.name} refused releasegate's token (HTTP {status}: {said(answer)})"
            )
        if status >= 500:
            raise MergeRefused(f"{self.name} answered HTTP {status}")
        if status >= 400:
            raise ForgeError(f"{self.name} answered HTTP {status}: {said(answer)}")
        try:
            body = answer.json()
        except ValueError as exc:
            raise MergeRefused(f"{self.name}'s answer is not JSON") from exc
        if not isinstance(body, dict):
            raise MergeRefused(f"{self.name}'s answer is not a JSON object")
        return body


class GitHub(_Client):
    name = "GitHub"

    def __init__(self, api_url: str, project: str, token: str) -> None:
        super().__init__(
            api_url, {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
        )
        self.repo = "/repos/" + "/".join(quote(part, safe="") for part in project.split("/", 1))

    def method_for(self, asked: MergeMethod) -> MergeMethod:
        return asked  # GitHub merges as asked (or refuses a method the repository forbids)

    def open(self, branch: str, base: str, title: str, body: str) -> MergeRequest:
        asked = {"title": title, "head": branch, "base": base, "body": body}
        pull = self.call("POST", f"{self.repo}/pulls", json=asked)
        return MergeRequest(int(pull["number"]), str(pull["html_url"]))

    def pull(self, mr: MergeRequest) -> PullState:
        found = self.call("GET", f"{self.repo}/pulls/{mr.number}")
        state = "merged" if found.get("merged") else str(found.get("state", ""))
        return PullState(
            head=str((found.get("head") or {}).get("sha", "")),
            base=str((found.get("base") or {}).get("ref", "")),
            state=state,
        )

    def merge(self, mr: MergeRequest, method: MergeMethod, title: str, body: str, head: str) -> str:
        # 405: not mergeable (checks, reviews, conflicts); 409: the head is not `sha`.
        done = self.call(
            "PUT",
            f"{self.repo}/pulls/{mr.number}/merge",
            refusals=(405,),
            moved=(409,),
            json={
                "merge_method": method,
                "commit_title": title,
                "commit_message": body,
                "sha": head,
            },
        )
        return str(done.get("sha", ""))

    def close(self, mr: MergeRequest, branch: str) -> None:
        self.call("PATCH", f"{self.repo}/pulls/{mr.number}", json={"state": "closed"})
        self.delete_branch(branch)

    def delete_branch(self, branch: str) -> None:
        self.call("DELETE", f"{self.repo}/git/refs/heads/{quote(branch, safe='/')}")

    def checks(self, mr: MergeRequest, branch: str) -> str:
        """How the branch's checks stand: passing, failing, pending or none. Both kinds
        count: commit statuses (the combined status) and check runs (GitHub Actions)."""
        ref = quote(branch, safe="/")
        status = self.call("GET", f"{self.repo}/commits/{ref}/status")
        runs = self.call("GET", f"{self.repo}/commits/{ref}/check-runs")
        states: list[str] = []
        if status.get("total_count"):
            state = str(status.get("state", ""))
            states.append(
                {"success": "passing", "failure": "failing", "error": "failing"}.get(
                    state, "pending"
                )
            )
        for run in runs.get("check_runs") or []:
            if not isinstance(run, dict):
                continue
            if run.get("status") != "completed":
                states.append("pending")
            else:
                good = run.get("conclusion") in ("success", "neutral", "skipped")
                states.append("passing" if good else "failing")
        for verdict in ("failing", "pending", "passing"):
            if verdict in states:
                return verdict
        return "none"


class GitLab(_Client):
    name = "GitLab"

    def __init__(self, api_url: str, project: str, token: str) -> None:
        super().__init__(api_url, {"PRIVATE-TOKEN": token})
        self.project = f"/projects/{quote(project, safe='')}"

    def method_for(self, asked: MergeMethod) -> MergeMethod:
        """What GitLab will do, by the project's own settings: its squash option overrides
        what the policy asks, and a fast-forward project lands the branch's own commit (as a
        rebase does: it must carry the approvals)."""
        project = self.call("GET", self.project)
        squash = {"always": True, "never": False}.get(
            str(project.get("squash_option", "")), asked == "squash"
        )
        if squash:
            return "squash"
        return "rebase" if project.get("merge_method") == "ff" else "merge"

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

    def pull(self, mr: MergeRequest) -> PullState:
        found = self.call("GET", f"{self.project}/merge_requests/{mr.number}")
        state = str(found.get("state", ""))
        return PullState(
            head=str(found.get("sha", "")),
            base=str(found.get("target_branch", "")),
            state="open" if state == "opened" else state,
        )

    def merge(self, mr: MergeRequest, method: MergeMethod, title: str, body: str, head: str) -> str:
        message = f"{title}\n\n{body}"
        # 405: not mergeable now (pipeline, approvals, draft); 406: conflicts; 409: the
        # head is not `sha`; 422: the branch cannot be merged as asked.
        done = self.call(
            "PUT",
            f"{self.project}/merge_requests/{mr.number}/merge",
            refusals=(405, 406, 422),
            moved=(409,),
            json={
                "squash": method == "squash",
                "squash_commit_message": message,
                "merge_commit_message": message,
                "should_remove_source_branch": True,
                "sha": head,
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
