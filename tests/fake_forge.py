"""Small local stand-ins for GitHub's and GitLab's pull (merge) request APIs that really merge
into a bare repository (with git's own merge machinery), with checks that can fail.

Shapes follow the official REST docs: GitHub's pull (`number`, `html_url`, `state`,
`merged`, `head.sha`, `base.ref`; a `base` can be changed with PATCH) and merge answer
(`sha`, `merged`, `message`; 405 when not mergeable, 409 when `sha` is not the head),
GitLab's merge request (`iid`, `web_url`, `state`, `sha`, `target_branch`) and merge answer
(`merge_commit_sha`, `squash_commit_sha`; 405/406 when it cannot be merged, 409 when `sha`
is not the head).
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

TOKEN = "forge-token-for-tests"
READ_ONLY = "forge-token-without-rights"
Checks = Literal["success", "failure", "pending"]


def _git(repo: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, input=input, check=False
    )


@dataclass
class Pull:
    number: int
    head: str
    base: str
    title: str
    body: str
    state: str = "open"
    checks: Checks = "success"
    # GitHub Actions' check runs on the head: (status, conclusion), e.g. ("completed", "failure")
    runs: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class FakeForge:
    repo: Path
    kind: Literal["github", "gitlab"] = "github"
    pulls: dict[int, Pull] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    checks: Checks = "success"  # for pull requests opened from now on
    # GitLab's project settings: merge_method (merge | rebase_merge | ff), squash_option.
    project: dict[str, str] = field(
        default_factory=lambda: {"merge_method": "merge", "squash_option": "default_off"}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, number: int) -> str:
        part = "pull" if self.kind == "github" else "-/merge_requests"
        return f"https://forge.example/acme/environments/{part}/{number}"

    def merge_into_base(self, pull: Pull, method: str, message: str) -> tuple[int, str]:
        """Merge with git's machinery; (0, sha) or (exit code, git's words) on a conflict."""
        base = _git(self.repo, "rev-parse", pull.base).stdout.strip()
        head = _git(self.repo, "rev-parse", pull.head).stdout.strip()
        # Our branches hold one commit: its three-way merge with the base is its rebase.
        tree = _git(self.repo, "merge-tree", "--write-tree", base, head)
        if method == "rebase":
            message = _git(self.repo, "log", "-1", "--format=%B", head).stdout
        if tree.returncode != 0:
            return tree.returncode, "merge conflict"
        parents = ["-p", base] + (["-p", head] if method == "merge" else [])
        env_commit = _git(
            self.repo,
            "-c",
            "user.name=forge",
            "-c",
            "user.email=forge@x",
            "commit-tree",
            tree.stdout.split()[0],
            *parents,
            "-F",
            "-",
            input=message,
        )
        sha = env_commit.stdout.strip()
        _git(self.repo, "update-ref", f"refs/heads/{pull.base}", sha, base)
        return 0, sha

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((method, path, body))
            token = headers.get("authorization", "").removeprefix("Bearer ") or headers.get(
                "private-token", ""
            )
            if token not in (TOKEN, READ_ONLY):
                return 401, {"message": "Bad credentials"}
            if token == READ_ONLY and method != "GET":
                return 403, {"message": "Resource not accessible by integration"}
            parts = [unquote(p) for p in path.strip("/").split("/")]
            return (self._github if self.kind == "github" else self._gitlab)(method, parts, body)

    def _open(self, head: str, base: str, title: str, body: str) -> Pull:
        number = len(self.pulls) + 1
        self.pulls[number] = Pull(number, head, base, title, body, checks=self.checks)
        return self.pulls[number]

    def head_of(self, pull: Pull) -> str:
        return _git(self.repo, "rev-parse", f"refs/heads/{pull.head}").stdout.strip()

    def _delete_branch(self, branch: str) -> None:
        _git(self.repo, "update-ref", "-d", f"refs/heads/{branch}")

    def _github(
        self, method: str, parts: list[str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        # repos OWNER REPO pulls [N [merge]] | repos OWNER REPO git refs heads BRANCH...
        rest = parts[3:]
        if method == "POST" and rest == ["pulls"]:
            pull = self._open(body["head"], body["base"], body["title"], body.get("body", ""))
            return 201, {
                "number": pull.number,
                "html_url": self.url(pull.number),
                "state": "open",
                "head": {"ref": pull.head},
            }
        if method == "GET" and rest[:1] == ["commits"] and rest[-1:] == ["check-runs"]:
            branch = "/".join(rest[1:-1])
            found = [p for p in self.pulls.values() if p.head == branch]
            runs = found[-1].runs if found else []
            listed = [
                {"name": f"ci-{i}", "status": s, "conclusion": c} for i, (s, c) in enumerate(runs)
            ]
            return 200, {"total_count": len(listed), "check_runs": listed}
        if method == "GET" and rest[:1] == ["commits"] and rest[-1:] == ["status"]:
            branch = "/".join(rest[1:-1])
            found = [p for p in self.pulls.values() if p.head == branch]
            state = found[-1].checks if found else "pending"
            return 200, {
                "state": state,
                "total_count": 1 if found else 0,
                "statuses": [{"context": "ci", "state": state}] if found else [],
            }
        if rest[:2] == ["git", "refs"] and method == "DELETE":
            self._delete_branch("/".join(rest[3:]))
            return 204, {}
        pull = self.pulls.get(int(rest[1])) if len(rest) > 1 and rest[1].isdigit() else None
        if pull is None:
            return 404, {"message": "Not Found"}
        if method == "GET" and rest[2:] == []:
            return 200, {
                "number": pull.number,
                "html_url": self.url(pull.number),
                "state": "closed" if pull.state == "merged" else pull.state,
                "merged": pull.state == "merged",
                "head": {"ref": pull.head, "sha": self.head_of(pull)},
                "base": {"ref": pull.base},
            }
        if method == "PATCH":
            pull.state = body.get("state", pull.state)
            pull.base = body.get("base", pull.base)
            return 200, {"number": pull.number, "state": pull.state}
        if method == "PUT" and rest[2:] == ["merge"]:
            if pull.state != "open":
                return 405, {"message": "Pull Request is not mergeable"}
            if "sha" in body and body["sha"] != self.head_of(pull):
                return 409, {"message": "Head branch was modified. Review and try the merge again."}
            if pull.checks != "success":
                word = "failing" if pull.checks == "failure" else "expected"
                return 405, {"message": f'Required status check "ci" is {word}.'}
            message = f"{body.get('commit_title', pull.title)}\n\n{body.get('commit_message', '')}"
            code, sha = self.merge_into_base(pull, body.get("merge_method", "merge"), message)
            if code:
                return 405, {"message": "Pull Request is not mergeable"}
            pull.state = "merged"
            return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}
        return 404, {"message": "Not Found"}

    def _gitlab(
        self, method: str, parts: list[str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        # api v4 projects ID merge_requests [IID [merge]] | … repository branches BRANCH
        rest = parts[4:]
        if method == "GET" and rest == []:
            return 200, {"id": 7, **self.project}
        if method == "POST" and rest == ["merge_requests"]:
            pull = self._open(
                body["source_branch"],
                body["target_branch"],
                body["title"],
                body.get("description", ""),
            )
            return 201, {"iid": pull.number, "web_url": self.url(pull.number), "state": "opened"}
        if rest[:2] == ["repository", "branches"] and method == "DELETE":
            self._delete_branch("/".join(rest[2:]))
            return 204, {}
        pull = self.pulls.get(int(rest[1])) if len(rest) > 1 and rest[1].isdigit() else None
        if pull is None:
            return 404, {"message": "404 Not found"}
        if method == "GET" and rest[2:] == []:
            status = {"success": "success", "failure": "failed", "pending": "running"}[pull.checks]
            return 200, {
                "iid": pull.number,
                "state": "opened" if pull.state == "open" else pull.state,
                "web_url": self.url(pull.number),
                "sha": self.head_of(pull),
                "source_branch": pull.head,
                "target_branch": pull.base,
                "head_pipeline": {"id": 1, "status": status},
            }
        if method == "PUT" and rest[2:] == []:
            if body.get("state_event") == "close":
                pull.state = "closed"
            return 200, {"iid": pull.number, "state": pull.state}
        if method == "PUT" and rest[2:] == ["merge"]:
            if pull.state != "open" or pull.checks != "success":
                return 405, {"message": "405 Method Not Allowed"}
            if "sha" in body and body["sha"] != self.head_of(pull):
                return 409, {"message": "SHA does not match HEAD of source branch"}
            method_ = "squash" if body.get("squash") else "merge"
            if self.project["squash_option"] == "always":
                method_ = "squash"
            if method_ == "merge" and self.project["merge_method"] == "ff":
                head = self.head_of(pull)
                if _git(self.repo, "merge-base", "--is-ancestor", pull.base, head).returncode:
                    return 406, {"message": "Branch cannot be merged"}
                _git(self.repo, "update-ref", f"refs/heads/{pull.base}", head)
                pull.state = "merged"
                return 200, {
                    "iid": pull.number,
                    "state": "merged",
                    "merge_commit_sha": None,
                    "sha": head,
                }
            message = body.get(
                "squash_commit_message" if method_ == "squash" else "merge_commit_message",
                pull.title,
            )
            code, sha = self.merge_into_base(pull, method_, message)
            if code:
                return 406, {"message": "Branch cannot be merged"}
            pull.state = "merged"
            if body.get("should_remove_source_branch"):
                self._delete_branch(pull.head)
            key = "squash_commit_sha" if method_ == "squash" else "merge_commit_sha"
            return 200, {"iid": pull.number, "state": "merged", key: sha}
        return 404, {"message": "404 Not found"}


def serve(fake: FakeForge) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = fake.answer(self.command, urlsplit(self.path).path, headers, body)
            data = json.dumps(answer).encode() if status != 204 else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
