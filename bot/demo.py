"""`releasegate demo`: a local GitOps remote, a policy, Redis and a worker, then the shell.

Everything lives in one folder (default `./releasegate-demo`): `remote.git` and
`environments.git` are the bare repositories the worker pushes to, `awesome.git` the app's
source, whose tags are the versions that exist (`git -C
releasegate-demo/remote.git log` shows the deploys; a production release
shows in both), `policy.yaml` the policy, `work/` the clones, `worker.log` the
worker's log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bot.embedded_redis import tied_if_main_thread
from config.errors import ReleasegateError

MARKER = ".releasegate-demo"
HISTORY = "shell_history"  # the shell keeps it here, and a new demo keeps it


def _git(*args: str, cwd: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@demo.invalid",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@demo.invalid",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _copy_tree(source: resources.abc.Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


def example(name: str) -> resources.abc.Traversable:
    return resources.files("config") / "examples" / name


def create_remote(source: resources.abc.Traversable, remote: Path, scratch: Path) -> None:
    """A bare repository whose first commit holds the files of `source`."""
    _copy_tree(source, scratch)
    _git("init", "--quiet", "--initial-branch=main", cwd=scratch)
    _git("add", "--all", cwd=scratch)
    _git("commit", "--quiet", "-m", "Initial desired state", cwd=scratch)
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(remote), cwd=scratch)
    _git("push", "--quiet", str(remote), "main", cwd=scratch)
    shutil.rmtree(scratch)


def environments_of(remote: Path) -> Path:
    """Where the demo keeps the environments repository: beside the apps' remote."""
    return remote.parent / "environments.git"


def source_of(remote: Path) -> Path:
    """Where the demo keeps awesome's source repository: its tags are the versions that
    exist, the demo's artifact store."""
    return remote.parent / "awesome.git"


# The versions of awesome that were built (tagged); anything else does not exist.
RELEASES = ("2.0.0", "2.1.0-rc1", "2.1.0", "2.2.0-rc1", "2.2.0", "2.3.0")
# The built versions that serve errors once deployed: verification finds them out.
BROKEN = frozenset({"2.3.0"})
DEMO_PROMETHEUS = "http://127.0.0.1:9090"  # in demo.yaml, replaced by the demo's own port


def create_source(path: Path, scratch: Path) -> None:
    """A bare repository with a commit and a tag for each of `RELEASES`."""
    scratch.mkdir(parents=True)
    _git("init", "--quiet", "--initial-branch=main", cwd=scratch)
    for version in RELEASES:
        (scratch / "VERSION").write_text(version + "\n")
        _git("add", "VERSION", cwd=scratch)
        _git("commit", "--quiet", "-m", f"Release {version}", cwd=scratch)
        _git("tag", version, cwd=scratch)
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(path), cwd=scratch)
    _git("push", "--quiet", "--tags", str(path), "main", cwd=scratch)
    shutil.rmtree(scratch)


def demo_policy(remote: Path, metrics_url: str = DEMO_PROMETHEUS) -> str:
    """The demo's policy for the apps' `remote` (and the environments' and the source beside
    it), verifying prd against `metrics_url`."""
    text = example("demo.yaml").read_text(encoding="utf-8")
    text = text.replace(f'url: "{DEMO_PROMETHEUS}"', f'url: "{metrics_url}"')
    environments = environments_of(remote).resolve().as_uri()
    text = text.replace("url: ENVIRONMENTS_URL", f"url: {environments}")
    text = text.replace("git_tags: SOURCE_URL", f"git_tags: {source_of(remote).resolve().as_uri()}")
    return text.replace("url: REPOSITORY_URL", f"url: {remote.resolve().as_uri()}")


def create_remotes(remote: Path, scratch: Path) -> None:
    """The seed's two repositories as bare remotes: the argocd-demo layout at `remote`, the
    Terraform environments beside it."""
    create_remote(example("argocd-demo"), remote, scratch)
    create_remote(example("environments"), environments_of(remote), scratch)
    create_source(source_of(remote), scratch)


def prepare(directory: Path, metrics_url: str = DEMO_PROMETHEUS) -> Path:
    """Lay out a fresh demo in `directory` (the shell's history survives); return the policy's
    path."""
    history = directory / HISTORY
    kept = history.read_bytes() if history.is_file() else None
    if directory.exists():
        if not (directory / MARKER).exists() and any(directory.iterdir()):
            raise ReleasegateError(f"{directory} exists and is not a releasegate demo; pick --dir")
        if (directory / MARKER).exists():
            print(f"replacing the earlier demo in {directory}: its remote and requests start over")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    if kept is not None:
        history.write_bytes(kept)
    (directory / MARKER).write_text("made by `releasegate demo`; removed by the next run\n")
    remote = directory / "remote.git"
    create_remotes(remote, directory / "seed")
    policy = directory / "policy.yaml"
    policy.write_text(demo_policy(remote, metrics_url), encoding="utf-8")
    return policy


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Ctrl-C at the prompt must not stop it mid-deploy; our death must stop it.
            **tied_if_main_thread(),
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def serve_metrics(remote: Path) -> ThreadingHTTPServer:
    """Prometheus' instant query API (`/api/v1/query`) for the demo's prd, on a free loopback
    port: the error ratio of the app the query names is 0.3 while prd pins a `BROKEN`
    version of it, else 0.01. The worker asks it as it would ask Prometheus."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query)).get("query", "")
            app = re.search(r'app="([^"]+)"', query)
            if url.path != "/api/v1/query" or app is None:
                self._answer(400, {"status": "error", "error": "the demo answers app queries"})
                return
            version = _prd_version(remote)
            ratio = "0.3" if version in BROKEN else "0.01"
            sample = {"metric": {"app": app.group(1)}, "value": [time.time(), ratio]}
            self._answer(
                200, {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
            )

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="demo-metrics", daemon=True).start()
    return server


def _prd_version(remote: Path) -> str:
    shown = subprocess.run(
        ["git", "--git-dir", str(remote), "show", "main:env/prd/kustomization.yml"],
        capture_output=True,
        text=True,
    )
    found = re.search(r"newTag: (\S+)", shown.stdout)
    return found.group(1) if found else ""
