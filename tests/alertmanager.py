"""A real Alertmanager for the tests: Debian's `prometheus-alertmanager` (0.25), on loopback,
clustering off, its data in the test's folder. Alerts and silences are posted to its API v2,
as Prometheus and people do."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from bot.embedded_redis import free_port
from tests.conftest import serving, stop_server

BINARY = Path("/usr/bin/prometheus-alertmanager")
CONFIG = "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n"


@dataclass
class Alertmanager:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fire(self, summary: str = "", **labels: str) -> None:
        """An alert that started a minute ago and is still firing."""
        started = datetime.now(UTC) - timedelta(minutes=1)
        alert = {
            "labels": labels,
            "annotations": {"summary": summary} if summary else {},
            "startsAt": started.isoformat(),
        }
        answer = requests.post(f"{self.url}/api/v2/alerts", json=[alert], timeout=5)
        assert answer.status_code == 200, answer.text

    def silence(self, **labels: str) -> str:
        now = datetime.now(UTC)
        silence = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in labels.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "carol",
            "comment": "known, being fixed",
        }
        answer = requests.post(f"{self.url}/api/v2/silences", json=silence, timeout=5)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["silenceID"])

    def stop(self) -> None:
        stop_server(self.process)


def start_alertmanager(folder: Path) -> Alertmanager:
    assert BINARY.exists(), "prometheus-alertmanager is installed by scripts/system-deps"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    log = open(folder / "alertmanager.log", "wb")  # noqa: SIM115 - the process writes it
    process = subprocess.Popen(
        [
            str(BINARY),
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: one instance, nothing else listening
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    manager = Alertmanager(process, port)
    serving(process, f"{manager.url}/-/ready", folder / "alertmanager.log", 20)
    return manager
