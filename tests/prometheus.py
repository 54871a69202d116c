"""A real Prometheus for the tests: Debian's `prometheus` (2.42), on loopback, its data in the
test's folder, scraping every second an exporter the test serves. The exporter's error ratio
for each app depends on the version the GitOps remote pins for it in prd, read at every
scrape: a bad version deployed is a high error ratio a second later, as in production."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from bot.embedded_redis import free_port
from tests.conftest import eventually, serving, stop_server

BINARY = Path("/usr/bin/prometheus")
QUERY = 'max(rg_error_ratio{app="{app}",env="{env}"})'
IMAGES = {"awesome": "bespinian/awesome-image", "sidecar": "bespinian/sidecar"}


def pinned_versions(remote: Path, file: str = "env/prd/kustomization.yml") -> dict[str, str]:
    """app -> the image tag the remote's main pins in `file`."""
    text = subprocess.run(
        ["git", "show", f"main:{file}"], cwd=remote, capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for app, image in IMAGES.items():
        match = re.search(rf"name: {re.escape(image)}\s+newTag: (\S+)", text)
        if match:
            found[app] = match.group(1)
    return found


@dataclass
class Exporter:
    """`rg_error_ratio{app, env="prd"}`: 0.3 for a version in `bad`, else 0.01."""

    versions: Callable[[], dict[str, str]]
    bad: set[str] = field(default_factory=set)
    scrapes: int = 0

    def render(self) -> bytes:
        self.scrapes += 1
        lines = ["# TYPE rg_error_ratio gauge"]
        for app, version in self.versions().items():
            ratio = 0.3 if f"{app} {version}" in self.bad else 0.01
            lines.append(f'rg_error_ratio{{app="{app}",env="prd"}} {ratio}')
        return ("\n".join(lines) + "\n").encode()

    def serve(self) -> ThreadingHTTPServer:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def value(self, promql: str) -> list[object]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        return list(answer.json()["data"]["result"])

    def stop(self) -> None:
        stop_server(self.process)


def start_prometheus(
    folder: Path, target: str, path: str = "/metrics", also: list[str] | None = None
) -> Prometheus:
    """Prometheus scraping `target` (and `also`: host:port each) every second."""
    assert BINARY.exists(), "prometheus is installed by scripts/system-deps"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: app\n    metrics_path: {path}\n"
        f"    static_configs: [{{targets: {[target, *(also or [])]!r}}}]\n"
    )
    port = free_port()
    log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - the process writes it
    process = subprocess.Popen(
        [
            str(BINARY),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    prometheus = Prometheus(process, port, folder)
    serving(process, f"{prometheus.url}/-/ready", folder / "prometheus.log", 30)
    return prometheus


def wait_for_data(prometheus: Prometheus, promql: str, seconds: float = 20) -> None:
    """Until the query has a sample: the first scrape happened."""
    assert eventually(lambda: prometheus.value(promql), seconds, every=0.2), (
        "Prometheus never scraped the exporter"
    )
