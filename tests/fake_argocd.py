"""Small local stand-ins for Argo CD's API and the Kubernetes API (for Flux), driven by a real
bare Git repository: an application "reconciles" by reading the branch's head.

Shapes follow Argo CD's v1alpha1 Application (`status.sync.{status,revision}`,
`status.health.{status,message}`, `status.operationState.{phase,message}`) and its error
body (`{"error", "code", "message"}`), and Flux's Kustomization (`status.lastAppliedRevision`
as `main@sha1:SHA`, a `Ready` condition).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

Behaviour = Literal["healthy", "degraded", "never-syncs"]
# How an application's answers come: as Argo CD sends them, or hostile (300 MB, a byte at a
# time, seconds late).
Delivery = Literal["normal", "huge", "trickle", "late"]
TOKEN = "argocd-token-for-tests"


def head_of(repo: Path, branch: str = "main") -> str:
    return subprocess.run(
        ["git", "rev-parse", branch], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class FakeApp:
    name: str
    repo: Path
    repo_url: str
    behaviour: Behaviour = "healthy"
    target_revision: str = "main"
    revision: str = ""  # what it runs now
    progressing: int = 1  # reads spent Progressing after it took a new revision
    delivery: Delivery = "normal"
    claimed_revision: str = ""  # answer this as the revision it runs, whatever it runs

    def __post_init__(self) -> None:
        self.revision = self.revision or head_of(self.repo)

    def reconcile(self) -> None:
        """Look at Git (a refresh or a sync): take the branch's head, unless it never syncs."""
        if self.behaviour != "never-syncs" and head_of(self.repo) != self.revision:
            self.revision = head_of(self.repo)
            self.progressing = 1

    def document(self) -> dict[str, Any]:
        synced = self.revision == head_of(self.repo)
        health: dict[str, Any] = {"status": "Healthy"}
        operation = {
            "phase": "Succeeded",
            "message": "successfully synced (all tasks run)",
            "syncResult": {"revision": self.revision},
        }
        if self.progressing > 0:
            self.progressing -= 1
            health = {"status": "Progressing", "message": "Waiting for rollout to finish"}
        elif self.behaviour == "degraded":
            # As Argo CD up to 3.5 says it: no message on the application's health, the
            # reason on the resource that is unhealthy.
            health = {"status": "Degraded"}
        return {
            "metadata": {"name": self.name, "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {
                    "repoURL": self.repo_url,
                    "path": "env/prd",
                    "targetRevision": self.target_revision,
                },
                "destination": {"server": "https://kubernetes.default.svc"},
            },
            "status": {
                "resources": [
                    {"kind": "Service", "name": "awesome", "health": {"status": "Healthy"}},
                    {
                        "kind": "Deployment",
                        "name": "awesome",
                        "health": {
                            "status": "Degraded" if self.behaviour == "degraded" else "Healthy",
                            "message": 'Deployment "awesome" exceeded its progress deadline'
                            if self.behaviour == "degraded"
                            else "",
                        },
                    },
                ],
                "sync": {
                    "status": "Synced" if synced else "OutOfSync",
                    "revision": self.claimed_revision or self.revision,
                },
                "health": health,
                "operationState": operation,
            },
        }


@dataclass
class FakeArgoCD:
    apps: dict[str, FakeApp] = field(default_factory=dict)
    token: str = TOKEN
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(
        self, method: str, path: str, query: dict[str, str], auth: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((method, path, {**query, **body}))
            if auth != f"Bearer {self.token}":
                message = "invalid session: token signature is invalid"
                return 401, {"error": message, "code": 16, "message": message}
            parts = path.strip("/").split("/")  # api v1 applications NAME [sync]
            if parts[:3] != ["api", "v1", "applications"] or len(parts) < 4:
                return 404, {"error": "Not Found", "code": 5, "message": "Not Found"}
            app = self.apps.get(unquote(parts[3]))
            if app is None:
                message = f'applications.argoproj.io "{unquote(parts[3])}" not found'
                return 404, {"error": message, "code": 5, "message": message}
            if method == "POST" and parts[4:] == ["sync"]:
                app.reconcile()
                return 200, app.document()
            if query.get("refresh"):
                app.reconcile()
            return 200, app.document()

    def delivery(self, path: str) -> Delivery:
        parts = path.strip("/").split("/")
        app = self.apps.get(unquote(parts[3])) if len(parts) > 3 else None
        return app.delivery if app is not None else "normal"

    def synced_with(self, name: str) -> list[str]:
        return [
            c[2].get("revision", "")
            for c in self.calls
            if c[0] == "POST" and c[1].endswith(f"/{name}/sync")
        ]


@dataclass
class FakeKustomization:
    name: str
    repo: Path
    namespace: str = "flux-system"
    applied: str = ""
    ready: str = "True"
    message: str = ""  # the Ready condition's message, when it is not the applied revision

    def document(self) -> dict[str, Any]:
        self.applied = self.applied or head_of(self.repo)
        return {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": self.name, "namespace": self.namespace, "annotations": {}},
            "status": {
                "lastAppliedRevision": f"main@sha1:{self.applied}",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": self.ready,
                        "reason": "ReconciliationSucceeded",
                        "message": self.message or f"Applied revision: main@sha1:{self.applied}",
                    }
                ],
            },
        }


@dataclass
class FakeKubernetes:
    kustomizations: dict[str, FakeKustomization] = field(default_factory=dict)
    token: str = "kube-token-for-tests"
    patches: list[dict[str, Any]] = field(default_factory=list)

    def answer(
        self, method: str, path: str, query: dict[str, str], auth: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if auth != f"Bearer {self.token}":
            return 401, {
                "kind": "Status",
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            }
        prefix = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/"
        found = None
        if path.startswith(prefix):
            namespace, _, name = path.removeprefix(prefix).partition("/kustomizations/")
            found = self.kustomizations.get(name)
            if found is not None and found.namespace != namespace:
                found = None
        if found is None:
            return 404, {
                "kind": "Status",
                "status": "Failure",
                "reason": "NotFound",
                "message": f"kustomizations {path.rsplit('/', 1)[-1]} not found",
                "code": 404,
            }
        if method == "PATCH":
            self.patches.append(body)
            found.applied = head_of(found.repo)  # reconciled at once, as asked
        return 200, found.document()


def serve(fake: FakeArgoCD | FakeKubernetes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            delivery = fake.delivery(url.path) if isinstance(fake, FakeArgoCD) else "normal"
            if delivery in ("huge", "trickle"):
                self._hostile(delivery)
                return
            if delivery == "late":
                time.sleep(5)
            status, answer = fake.answer(
                self.command,
                url.path,
                dict(parse_qsl(url.query)),
                self.headers.get("Authorization", ""),
                body,
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _hostile(self, delivery: str) -> None:
            """An answer without a length: 300 MB of it, or a byte every half second."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                if delivery == "huge":
                    chunk = b" " * 65536
                    for _ in range(300 * 16):
                        self.wfile.write(chunk)
                else:
                    for _ in range(180):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.5)
            except OSError:
                pass  # the client hung up, as it should

        do_GET = do_POST = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
