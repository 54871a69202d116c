"""What Argo CD and Flux say about a rollout: clients of their APIs, read as one status shape.

Argo CD: `GET /api/v1/applications/{name}` (with `?refresh=normal` to have it look at
Git now) and `POST /api/v1/applications/{name}/sync`, with an API token as Bearer.
Flux: the Kustomization or HelmRelease object through the Kubernetes API, from inside
the cluster (the pod's service account) or through `KUBECONFIG`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import requests
from ruamel.yaml import YAML

from config.errors import ReconcilerError, ReconcilerRefused
from config.rollout import Rollout
from workers.http import AnswerRefused, fetch, said

TIMEOUT = 10.0
IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FLUX_PATHS = {
    "Kustomization": "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{ns}/kustomizations/{name}",
    "HelmRelease": "/apis/helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases/{name}",
}
_SHA = re.compile(r"\b[0-9a-f]{7,40}\b")
UNHEALTHY_SHOWN = 3  # resources named when a rollout is Degraded


@dataclass(frozen=True)
class TargetStatus:
    """One application's state, as either reconciler reports it."""

    revision: str  # the Git commit it runs (or a prefix of one); empty when unknown
    sync: str  # Synced | OutOfSync | Unknown
    health: str  # Healthy | Progressing | Degraded | Suspended | Missing | Unknown
    message: str = ""
    failed: bool = False  # its last operation failed (Argo CD's operationState)

    def line(self) -> str:
        at = f" at {self.revision[:7]}" if self.revision else ""
        why = f": {self.message[:200]}" if self.message and self.health != "Healthy" else ""
        return f"{self.sync}, {self.health}{at}{why}"


class Reconciler(Protocol):
    name: str

    def status(self, target: str, refresh: bool = False) -> TargetStatus: ...
    def nudge(self, target: str, revision: str) -> None: ...


class ArgoCD:
    name = "Argo CD"

    def __init__(self, url: str, token: str, timeout: float = TIMEOUT, sync: bool = False) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.sync_on_nudge = sync
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, app: str, suffix: str = "", **kwargs: Any) -> dict[str, Any]:
        path = f"/api/v1/applications/{quote(app, safe='')}{suffix}"
        try:
            response = fetch(self.session, method, self.url + path, deadline=self.timeout, **kwargs)
        except requests.RequestException as exc:
            why = type(exc).__name__
            raise ReconcilerError(f"Argo CD at {self.url} does not answer ({why})") from exc
        except AnswerRefused as exc:
            raise ReconcilerError(f"Argo CD {exc} for {app}") from exc
        if response.status_code in (401, 403):
            raise ReconcilerRefused(
                f"Argo CD refused releasegate's token for application {app} (HTTP "
                f"{response.status_code}: {said(response, 200)}); its account needs "
                "`applications, get` (and `sync` with sync: true) on the app's project"
            )
        if response.status_code == 404:
            raise ReconcilerRefused(f"Argo CD has no application {app}")
        if response.status_code >= 400:
            raise ReconcilerError(
                f"Argo CD answered HTTP {response.status_code} for {app}: {said(response, 200)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ReconcilerError(f"Argo CD's answer for {app} is not JSON") from exc
        return body if isinstance(body, dict) else {}

    def application(self, app: str, refresh: bool = False) -> dict[str, Any]:
        return self._call("GET", app, params={"refresh": "normal"} if refresh else None)

    def status(self, target: str, refresh: bool = False) -> TargetStatus:
        status = self.application(target, refresh).get("status") or {}
        sync, health = status.get("sync") or {}, status.get("health") or {}
        revision = sync.get("revision") or next(iter(sync.get("revisions") or []), "")
        operation = status.get("operationState") or {}
        failed = operation.get("phase") in ("Failed", "Error")
        errors = [
            c.get("message", "")
            for c in status.get("conditions") or []
            if str(c.get("type", "")).endswith("Error")
        ]
        # Up to Argo CD 3.5 the application's health has no message: the reason a rollout is
        # Degraded is on its resources (a Deployment that exceeded its progress deadline).
        unhealthy = [
            f"{(r.get('health') or {}).get('message') or 'unhealthy'} "
            f"({r.get('kind', '?')}/{r.get('name', '?')})"
            for r in status.get("resources") or []
            if isinstance(r, dict)
            and (r.get("health") or {}).get("status") in ("Degraded", "Missing")
        ][:UNHEALTHY_SHOWN]
        message = (
            (operation.get("message") if failed else "")
            or health.get("message")
            or "; ".join(unhealthy)
            or ""
        )
        return TargetStatus(
            revision=str(revision),
            sync=str(sync.get("status") or "Unknown"),
            health=str(health.get("status") or "Unknown"),
            message=str(message or "; ".join(errors)),
            failed=failed,
        )

    def nudge(self, target: str, revision: str) -> None:
        if self.sync_on_nudge:
            self._call("POST", target, "/sync", json={"revision": revision})

    def source(self, app: str) -> tuple[str, str]:
        """Where the application reads from: (repoURL, targetRevision) of its (first) source."""
        spec = self.application(app).get("spec") or {}
        source: dict[str, Any] = spec.get("source") or next(iter(spec.get("sources") or []), {})
        return str(source.get("repoURL", "")), str(source.get("targetRevision", "") or "HEAD")


class Kubernetes:
    """Just enough of a Kubernetes API client: a bearer token, a server, a CA."""

    def __init__(
        self, server: str, token: str, verify: bool | str = True, timeout: float = TIMEOUT
    ) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.verify = verify

    @classmethod
    def from_environment(cls) -> Kubernetes:
        """In a pod: its service account. Elsewhere: KUBECONFIG (default ~/.kube/config),
        current context, with a token (or tokenFile)."""
        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        if host and (IN_CLUSTER / "token").exists():
            token = (IN_CLUSTER / "token").read_text().strip()
            return cls(f"https://{host}:{port}", token, str(IN_CLUSTER / "ca.crt"))
        path = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
        try:
            config = YAML(typ="safe").load(path.expanduser().read_text())
        except (OSError, ValueError) as exc:
            raise ReconcilerRefused(
                f"no Kubernetes API to ask Flux: not in a pod, and KUBECONFIG {path} cannot be "
                f"read ({exc})"
            ) from exc
        return cls._from_kubeconfig(config or {}, path)

    @classmethod
    def _from_kubeconfig(cls, config: dict[str, Any], path: Path) -> Kubernetes:
        def named(section: str, name: str) -> dict[str, Any]:
            for item in config.get(section) or []:
                if item.get("name") == name:
                    return dict(item.get(section[:-1]) or {})
            raise ReconcilerRefused(f"KUBECONFIG {path}: no {section[:-1]} named {name!r}")

        context = named("contexts", str(config.get("current-context", "")))
        cluster, user = (
            named("clusters", context.get("cluster", "")),
            named("users", context.get("user", "")),
        )
        token = user.get("token") or (
            Path(user["tokenFile"]).read_text().strip() if user.get("tokenFile") else None
        )
        if not token:
            raise ReconcilerRefused(
                f"KUBECONFIG {path}: releasegate needs a token user (a service account's "
                "token), not client certificates"
            )
        verify: bool | str = not cluster.get("insecure-skip-tls-verify", False)
        if cluster.get("certificate-authority"):
            verify = str(cluster["certificate-authority"])
        return cls(str(cluster.get("server", "")), str(token), verify)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = fetch(
                self.session, method, self.server + path, deadline=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ReconcilerError(
                f"the Kubernetes API at {self.server} does not answer ({type(exc).__name__})"
            ) from exc
        except AnswerRefused as exc:
            raise ReconcilerError(f"the Kubernetes API {exc} for {path}") from exc
        if response.status_code in (401, 403, 404):
            raise ReconcilerRefused(
                f"the Kubernetes API said {response.status_code} for {path}: {said(response, 200)}"
            )
        if response.status_code >= 400:
            raise ReconcilerError(
                f"the Kubernetes API answered HTTP {response.status_code} "
                f"for {path}: {said(response, 200)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ReconcilerError(f"the Kubernetes API's answer for {path} is not JSON") from exc
        return body if isinstance(body, dict) else {}


class Flux:
    name = "Flux"

    def __init__(self, kube: Kubernetes, kind: str, namespace: str, reconcile: bool) -> None:
        self.kube, self.kind, self.namespace, self.reconcile = kube, kind, namespace, reconcile

    def _path(self, name: str) -> str:
        return FLUX_PATHS[self.kind].format(
            ns=quote(self.namespace, safe=""), name=quote(name, safe="")
        )

    def status(self, target: str, refresh: bool = False) -> TargetStatus:
        status = self.kube.call("GET", self._path(target)).get("status") or {}
        applied = str(
            status.get("lastAppliedRevision") or status.get("lastAttemptedRevision") or ""
        )
        found = _SHA.findall(applied.rsplit("@", 1)[-1])  # main@sha1:SHA, 6.0.0+SHA12
        conditions: list[dict[str, Any]] = status.get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), {})
        health = {"True": "Healthy", "False": "Degraded"}.get(
            str(ready.get("status")), "Progressing"
        )
        return TargetStatus(
            revision=found[-1] if found else "",
            sync="Synced" if health == "Healthy" else "OutOfSync",
            health=health,
            message=str(ready.get("message", "")),
        )

    def nudge(self, target: str, revision: str) -> None:
        if self.reconcile:
            stamp = datetime.now(UTC).isoformat()
            patch = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}}
            self.kube.call(
                "PATCH",
                self._path(target),
                json=patch,
                headers={"Content-Type": "application/merge-patch+json"},
            )


def reconciler_for(
    rollout: Rollout,
    argocd_url: str | None,
    argocd_token: str | None,
    kube: Kubernetes | None = None,
    timeout: float | None = None,
) -> Reconciler:
    """The client that follows `rollout`, each answer bounded by `timeout` seconds in all
    (default `TIMEOUT`); raises `ReconcilerRefused` when unconfigured."""
    timeout = TIMEOUT if timeout is None else timeout
    if rollout.argocd is not None:
        if not (argocd_url and argocd_token):
            raise ReconcilerRefused(
                "the policy follows Argo CD, but RELEASEGATE_ARGOCD_URL and "
                "RELEASEGATE_ARGOCD_TOKEN are not both set"
            )
        return ArgoCD(argocd_url, argocd_token, timeout=timeout, sync=rollout.argocd.sync)
    flux = rollout.flux
    if flux is None:
        raise ReconcilerRefused("the rollout names no reconciler")
    if kube is None:
        kube = Kubernetes.from_environment()
        kube.timeout = timeout
    return Flux(kube, flux.kind, flux.namespace, flux.reconcile)
