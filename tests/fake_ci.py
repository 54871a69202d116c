"""A stand-in for the CI results GitHub and GitLab keep on a commit, answering as their REST
APIs do: GitHub's `GET /repos/{owner}/{repo}/commits/{ref}/check-runs` (`total_count`,
`check_runs[]` with `name`, `status`, `conclusion`, `html_url`) and `…/commits/{ref}/status`
(the combined status: `state`, `statuses[]` with `context`, `state`, `target_url`); GitLab's
`GET /projects/:id/repository/commits/:sha/statuses` (`name`, `status`, `target_url`) and
`GET /projects/:id/pipelines?sha=` (`id`, `status`, `web_url`); and a commit's time
(GitHub's `GET /repos/{owner}/{repo}/commits/{ref}`, `commit.committer.date`; GitLab's
`GET /projects/:id/repository/commits/:sha`, `committed_date`)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class FakeCI:
    # sha -> GitHub check runs: (name, status, conclusion)
    runs: dict[str, list[tuple[str, str, str | None]]] = field(default_factory=dict)
    # sha -> commit statuses: (context or name, state)
    statuses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # sha -> GitLab pipelines: status
    pipelines: dict[str, list[str]] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)  # (path, auth header)
    # sha -> when it was committed (ISO 8601, as the forge writes it)
    commits: dict[str, str] = field(default_factory=dict)
    # Deployments, as each forge keeps them: id -> the deployment, and its statuses in order.
    deployments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses_of: dict[int, list[str]] = field(default_factory=dict)
    refuse: int = 0  # answer the next N deployment calls 502, as a forge having a bad minute

    def __post_init__(self) -> None:
        ci = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                auth = self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN") or ""
                ci.asked.append((parts.path, auth))
                status, body = ci.answer(unquote(parts.path), parse_qs(parts.query))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _write(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN") or ""
                ci.asked.append((f"{self.command} {parts.path}", auth))
                status, answer = ci.write(self.command, unquote(parts.path), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PUT = _write

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        words = path.strip("/").split("/")
        if path.startswith("/api/v3/repos/") and words[-1] == "check-runs":
            sha = words[-2]
            runs = [
                {
                    "id": n,
                    "name": name,
                    "status": status,
                    "conclusion": conclusion,
                    "html_url": f"https://{self.host}/acme/awesome/runs/{n}",
                }
                for n, (name, status, conclusion) in enumerate(self.runs.get(sha, []), 1)
            ]
            return 200, {"total_count": len(runs), "check_runs": runs}
        if path.startswith("/api/v3/repos/") and words[-2] == "commits":
            sha = words[-1]
            if sha not in self.commits:
                return 422, {"message": f"No commit found for SHA: {sha}"}
            who = {"name": "dev", "email": "dev@acme.example", "date": self.commits[sha]}
            return 200, {"sha": sha, "commit": {"author": who, "committer": who}}
        if path.startswith("/api/v4/projects/") and words[-2] == "commits":
            sha = words[-1]
            if sha not in self.commits:
                return 404, {"message": "404 Commit Not Found"}
            return 200, {"id": sha, "committed_date": self.commits[sha]}
        if path.startswith("/api/v3/repos/") and words[-1] == "status":
            sha = words[-2]
            statuses = [
                {"context": c, "state": s, "target_url": f"https://ci.example/{c}/{sha[:7]}"}
                for c, s in self.statuses.get(sha, [])
            ]
            states = {s["state"] for s in statuses}
            combined = (
                "failure"
                if states & {"failure", "error"}
                else "pending"
                if "pending" in states or not states
                else "success"
            )
            return 200, {
                "state": combined,
                "sha": sha,
                "total_count": len(statuses),
                "statuses": statuses,
            }
        if path.startswith("/api/v4/projects/") and words[-1] == "statuses":
            sha = words[-2]
            return 200, [
                {"name": n, "status": s, "sha": sha, "target_url": f"https://ci.example/{n}"}
                for n, s in self.statuses.get(sha, [])
            ]
        if path.startswith("/api/v4/projects/") and words[-1] == "pipelines":
            sha = (query.get("sha") or [""])[0]
            return 200, [
                {
                    "id": 100 + n,
                    "sha": sha,
                    "status": s,
                    "web_url": f"https://{self.host}/p/{100 + n}",
                }
                for n, s in enumerate(self.pipelines.get(sha, []))
            ]
        return 404, {"message": "Not Found"}

    def write(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """GitHub's `POST /repos/{owner}/{repo}/deployments` (201; 422 without `ref`) and
        `POST …/deployments/{id}/statuses` (201; 404 for an unknown deployment, 422 for an
        unknown state); GitLab's `POST /projects/:id/deployments` (201; `status` one of
        running, success, failed, canceled) and `PUT /projects/:id/deployments/:id` (200)."""
        if self.refuse:
            self.refuse -= 1
            return 502, {"message": "Server Error"}
        words = path.strip("/").split("/")
        github_states = {
            "error",
            "failure",
            "inactive",
            "in_progress",
            "queued",
            "pending",
            "success",
        }
        gitlab_states = {"running", "success", "failed", "canceled"}
        if method == "POST" and path.startswith("/api/v3/repos/") and words[-1] == "deployments":
            if not body.get("ref"):
                return 422, {"message": "Validation Failed", "errors": [{"field": "ref"}]}
            number = len(self.deployments) + 1
            self.deployments[number] = {
                "id": number,
                "sha": body["ref"],
                "ref": body["ref"],
                "task": "deploy",
                "payload": body.get("payload", {}),
                "environment": body.get("environment", "production"),
                "description": body.get("description"),
            }
            self.statuses_of[number] = []
            return 201, self.deployments[number]
        if method == "POST" and path.startswith("/api/v3/repos/") and words[-1] == "statuses":
            number = int(words[-2])
            if number not in self.deployments:
                return 404, {"message": "Not Found"}
            if body.get("state") not in github_states:
                return 422, {"message": "Validation Failed", "errors": [{"field": "state"}]}
            self.statuses_of[number].append(body["state"])
            self.deployments[number].setdefault("status_bodies", []).append(body)
            return 201, {"id": len(self.statuses_of[number]), "state": body["state"]}
        if path.startswith("/api/v4/projects/") and words[-1] == "deployments" and method == "POST":
            if body.get("status") not in gitlab_states or not body.get("sha") or "tag" not in body:
                return 400, {"message": "400 Bad request - status does not have a valid value"}
            number = len(self.deployments) + 1
            self.deployments[number] = {
                "id": number,
                "iid": number,
                "sha": body["sha"],
                "ref": body.get("ref"),
                "status": body["status"],
                "environment": {"name": body.get("environment")},
            }
            self.statuses_of[number] = [body["status"]]
            return 201, self.deployments[number]
        if path.startswith("/api/v4/projects/") and words[-2] == "deployments" and method == "PUT":
            number = int(words[-1])
            if number not in self.deployments:
                return 404, {"message": "404 Not found"}
            if body.get("status") not in gitlab_states:
                return 400, {"message": "400 Bad request - status does not have a valid value"}
            self.deployments[number]["status"] = body["status"]
            self.statuses_of[number].append(body["status"])
            return 200, self.deployments[number]
        return 404, {"message": "Not Found"}

    def close(self) -> None:
        self.server.shutdown()
