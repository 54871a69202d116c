"""Deployment records on each app's source repository: GitHub Deployments and their statuses,
GitLab deployments, where teams already look ("Environments" and "Deployments" views).

The source repository is the app's `source:`, else its image's
`org.opencontainers.image.source` (or its `git_tags` repository); the forge is found by host
as for the checks gate, with its token. The ref is the source commit; the payload holds the
request id, the version and the digest.

The forge is brought to the request's state, never told events: a job (`record_deployments`,
retried with backoff by RQ, bounded) reads what the request is now and posts, in order, the
statuses not yet posted (each noted in Redis once it was accepted):

- `queued` once approved;
- `in_progress` once pushed, with `log_url` the commit on the GitOps repository;
- `success` once verified (where the environment verifies), else healthy (where its rollout
  is followed), else pushed, with `environment_url` where the policy gives one;
- `failure` when the request failed, its verification failed or it was rolled back
  (`error` when its verification was inconclusive);
- `inactive` on the deploy of the same app and environment it superseded, once it succeeded.

GitLab's deployments API has no queued or inactive state: its deployment is created at the
push (`running`) and updated to `success` or `failed`; GitLab keeps the last one current.
A forge that refuses or cannot be reached never fails a deploy: the job is retried, and
logged once when it gives up.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import quote

import requests
from redis import Redis

from config.errors import ReleasegateError
from config.gates import Forge
from config.policy import Policy
from workers.http import AnswerRefused, fetch, said
from workers.rollout import follow as following
from workers.rollout import verify as verification
from workers.rules.checks import SHA, SOURCE, source_of
from workers.state import keys
from workers.state.queue import enqueue_records
from workers.state.request import DeployRequest, RequestState
from workers.state.store import RequestStore

log = logging.getLogger(__name__)

DEADLINE = 10.0
Status = Literal["queued", "in_progress", "success", "failure", "error", "inactive"]
GITLAB: dict[str, str] = {"in_progress": "running", "success": "success", "failure": "failed"}
GITLAB["error"] = "failed"
NEVER_APPROVED = {
    RequestState.PENDING,
    RequestState.REJECTED,
    RequestState.CANCELLED,
    RequestState.EXPIRED,
    RequestState.SUPERSEDED,
}


class ForgeRefused(ReleasegateError):
    """The forge refused a deployment call, or could not be asked."""


@dataclass(frozen=True)
class Target:
    """Where one app's deployments are recorded."""

    forge: Forge
    project: str  # owner/name, or GitLab's group/project path
    sha: str
    version: str
    digest: str


def target_of(policy: Policy, request: DeployRequest, app: str) -> Target | None:
    spec = policy.apps.get(app)
    built = next((b for b in request.artifacts if b.app == app), None)
    if spec is None or built is None:
        return None
    repository, sha = source_of(policy, built)
    repository = spec.source or repository
    match = SOURCE.fullmatch(repository or "")
    forge = policy.forge_of(match.group(1)) if match else None
    if match is None or forge is None or not SHA.fullmatch(sha):
        return None
    return Target(forge, match.group(2), sha, built.tag, built.digest)


def recorded(policy: Policy, request: DeployRequest) -> bool:
    """Whether any app of `request` has a source repository on a forge to record on."""
    return any(target_of(policy, request, c.app) for c in request.changes)


def note(redis: Redis, policy: Policy, request: DeployRequest) -> None:
    """Queue the request's deployment records, where any of its apps has a source forge."""
    if recorded(policy, request):
        enqueue_records(redis, request.id)


def wanted(redis: Redis, policy: Policy, request: DeployRequest) -> list[Status]:
    """The statuses the request's state calls for, in the order they are posted."""
    store = RequestStore(redis)
    state = store.state(request.id)
    if state in NEVER_APPROVED:
        return []
    statuses: list[Status] = ["queued"]
    if state is RequestState.FAILED:
        return [*statuses, "failure"]
    if not state.landed and state is not RequestState.NOOP:
        return statuses
    statuses.append("in_progress")
    end = _end(redis, policy, request)
    return [*statuses, end] if end else statuses


def _end(redis: Redis, policy: Policy, request: DeployRequest) -> Status | None:
    checked = verification.load(redis, request.id)
    if checked is not None:
        if checked.state == "verifying":
            return None
        return {"verified": "success", "failed": "failure"}.get(checked.state, "error")  # type: ignore[return-value]
    rollout = following.load(redis, request.id)
    if rollout is not None:
        if not rollout.ended:
            return None
        return "success" if all(t.state == "healthy" for t in rollout.targets) else "failure"
    env = policy.environments.get(request.env)
    if env is not None and env.verify is not None and not request.rollback_of:
        return None  # verification starts after the rollout (or is about to)
    return "success"


class Client:
    """One forge's deployments API, bounded like every outside answer."""

    def __init__(self, forge: Forge, session: requests.Session) -> None:
        self.forge, self.session = forge, session

    def _call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        token = os.environ.get(self.forge.token_env, "")
        if self.forge.kind == "github":
            headers = {"Accept": "application/vnd.github+json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
        else:
            headers = {"PRIVATE-TOKEN": token} if token else {}
        url = self.forge.api_url.rstrip("/") + path
        try:
            answer = fetch(self.session, method, url, deadline=DEADLINE, headers=headers, json=body)
        except AnswerRefused as exc:
            raise ForgeRefused(f"{self.forge.host} {exc}") from exc
        except requests.RequestException as exc:
            raise ForgeRefused(f"cannot reach {self.forge.host} ({type(exc).__name__})") from exc
        if answer.status_code not in (200, 201):
            raise ForgeRefused(f"{self.forge.host} answered {answer.status_code}: {said(answer)}")
        try:
            return answer.json()
        except ValueError as exc:
            raise ForgeRefused(f"{self.forge.host}'s answer is not JSON") from exc

    def _repo(self, project: str) -> str:
        if self.forge.kind == "github":
            return "/repos/" + "/".join(quote(p, safe="") for p in project.split("/", 1))
        return f"/projects/{quote(project, safe='')}"

    def create(self, target: Target, request: DeployRequest, env: str, status: Status) -> str:
        payload = {"request": request.id, "version": target.version, "digest": target.digest}
        if self.forge.kind == "github":
            body = {
                "ref": target.sha,
                "environment": env,
                "payload": payload,
                "description": f"releasegate {request.id}: {target.version}",
                "auto_merge": False,
                "required_contexts": [],  # the checks gate decided already
            }
            made = self._call("POST", f"{self._repo(target.project)}/deployments", body)
        else:
            body = {
                "environment": env,
                "sha": target.sha,
                "ref": target.version,
                "tag": True,
                "status": GITLAB[status],
            }
            made = self._call("POST", f"{self._repo(target.project)}/deployments", body)
        if not isinstance(made, dict) or not str(made.get("id", "")).isdigit():
            raise ForgeRefused(f"{self.forge.host} answered a deployment without an id")
        return str(made["id"])

    def status(self, target: Target, deployment: str, status: Status, urls: dict[str, str]) -> None:
        where = f"{self._repo(target.project)}/deployments/{deployment}"
        if self.forge.kind == "github":
            body: dict[str, Any] = {"state": status, "auto_inactive": False, **urls}
            self._call("POST", f"{where}/statuses", body)
        elif status in GITLAB:
            self._call("PUT", where, {"status": GITLAB[status]})


def sync(redis: Redis, policy: Policy, request: DeployRequest, log_url: str = "") -> list[str]:
    """Bring the forge's deployments of `request` to its state; returns what was posted
    (`app status`). Raises `ForgeRefused` when a call failed (the job is retried)."""
    lock = keys.deployment(request.id, "lock")
    if not redis.set(lock, 1, nx=True, ex=60):
        raise ForgeRefused("another worker is recording this request's deployments")
    try:
        return _sync(redis, policy, request, log_url)
    finally:
        redis.delete(lock)


def _sync(redis: Redis, policy: Policy, request: DeployRequest, log_url: str) -> list[str]:
    statuses = wanted(redis, policy, request)
    env_spec = policy.environments.get(request.env)
    done: list[str] = []
    with requests.Session() as session:
        for change in request.changes:
            target = target_of(policy, request, change.app)
            if target is None:
                continue
            client = Client(target.forge, session)
            key = keys.deployment(request.id, change.app)
            raw = cast(dict[bytes, bytes], redis.hgetall(key))
            posted = json.loads(raw.get(b"posted", b"[]"))
            deployment = raw.get(b"id", b"").decode()
            for status in statuses:
                if status in posted or (target.forge.kind == "gitlab" and status not in GITLAB):
                    continue
                urls = {}
                if status == "in_progress" and log_url:
                    urls["log_url"] = log_url
                if status == "success" and env_spec is not None and env_spec.url:
                    urls["environment_url"] = env_spec.url.replace("{app}", change.app)
                if not deployment:
                    deployment = client.create(target, request, request.env, status)
                    redis.hset(key, "id", deployment)
                    redis.expire(key, 90 * 24 * 3600)
                    if target.forge.kind == "github":
                        client.status(target, deployment, status, urls)
                else:
                    client.status(target, deployment, status, urls)
                posted.append(status)
                redis.hset(key, "posted", json.dumps(posted))
                done.append(f"{change.app} {status}")
                if status == "success":
                    done += _supersede(redis, client, target, request, change.app, deployment)
    return done


def _supersede(
    redis: Redis, client: Client, target: Target, request: DeployRequest, app: str, deployment: str
) -> list[str]:
    """Mark the deployment this one replaced in the environment inactive (GitHub keeps
    production deployments active until told)."""
    current = keys.deployment_current(target.forge.host, target.project, request.env, app)
    previous = cast(bytes | None, redis.getset(current, deployment))
    if previous is None or previous.decode() == deployment or target.forge.kind != "github":
        return []
    client.status(target, previous.decode(), "inactive", {})
    return [f"{app} inactive {previous.decode()}"]
