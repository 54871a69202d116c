"""Real Redis Sentinel on loopback, started by the tests: a master, a replica and three
sentinels (the same `redis-server` binary, with `--sentinel`). Optionally over TLS, with an
ACL user for the data and a password for the sentinels, as a hardened install runs them."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from bot.embedded_redis import free_port, redis_server_binary
from tests.certificates import TlsFiles
from tests.conftest import eventually

MASTER = "mymaster"


def _server(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [redis_server_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _answers(client: Redis, deadline: float) -> None:
    while True:
        try:
            client.ping()
            return
        except Exception:
            assert time.monotonic() < deadline, f"redis on {client} did not start"
            time.sleep(0.05)


@dataclass
class SentinelWorld:
    folder: Path
    tls: TlsFiles | None = None
    user: tuple[str, str] | None = None  # the ACL user data nodes take (`default` is off)
    sentinel_password: str | None = None
    data_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def client(self, port: int) -> Redis:
        """A client of the node or sentinel on `port`, with the credentials it takes."""
        options: dict[str, Any] = {"socket_timeout": 0.5}
        if self.tls:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        if port in self.sentinel_ports:
            options["password"] = self.sentinel_password
        elif self.user:
            options["username"], options["password"] = self.user
        return Redis(host="127.0.0.1", port=port, **options)

    def _listen(self, port: int) -> list[tuple[str, str]]:
        """How a node or sentinel listens: plain, or TLS only (also between the nodes)."""
        if self.tls is None:
            return [("port", str(port)), ("bind", "127.0.0.1")]
        return [
            ("port", "0"),
            ("tls-port", str(port)),
            ("bind", "127.0.0.1"),
            ("tls-cert-file", str(self.tls.certificate)),
            ("tls-key-file", str(self.tls.key)),
            ("tls-ca-cert-file", str(self.tls.ca)),
            ("tls-auth-clients", "no"),
            ("tls-replication", "yes"),
        ]

    def start(self, replicas: int = 1) -> SentinelWorld:
        deadline = time.monotonic() + 15
        self.data_ports = [free_port() for _ in range(replicas + 1)]
        master = self.data_ports[0]
        access: list[str] = []
        if self.user:
            name, password = self.user
            access = [
                *("--user", name, "on", f">{password}", "~*", "&*", "+@all"),
                *("--user", "default", "off"),
                *("--masteruser", name, "--masterauth", password),
            ]
        for port in self.data_ports:
            follow = ["--replicaof", "127.0.0.1", str(master)] if port != master else []
            listen = [word for key, value in self._listen(port) for word in (f"--{key}", value)]
            self.processes[port] = _server(
                [
                    # a replica's sync file lands in the folder, not in the cwd
                    *("--dir", str(self.folder), "--dbfilename", f"dump-{port}.rdb"),
                    *("--save", "", "--appendonly", "no"),
                    *listen,
                    *access,
                    *follow,
                ]
            )
        for port in self.data_ports:
            _answers(self.client(port), deadline)
        for port in self.data_ports[1:]:  # each replica has synced with the master
            while self.client(port).info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, f"the replica on {port} did not sync"
                time.sleep(0.05)
        for _ in range(3):
            port = free_port()
            self.sentinel_ports.append(port)
            lines = [f"{key} {value}" for key, value in self._listen(port)]
            lines += [
                f"sentinel monitor {MASTER} 127.0.0.1 {master} 2",
                f"sentinel down-after-milliseconds {MASTER} 1000",
                f"sentinel failover-timeout {MASTER} 5000",
            ]
            if self.user:
                lines += [f"sentinel auth-user {MASTER} {self.user[0]}"]
                lines += [f"sentinel auth-pass {MASTER} {self.user[1]}"]
            if self.sentinel_password:
                lines += [f"requirepass {self.sentinel_password}"]
                lines += [f"sentinel sentinel-pass {self.sentinel_password}"]
            config = self.folder / f"sentinel-{port}.conf"
            config.write_text("\n".join(lines) + "\n")
            self.processes[port] = _server([str(config), "--sentinel", "--dir", str(self.folder)])
        for port in self.sentinel_ports:
            _answers(self.client(port), deadline)
        return self

    def master_port(self) -> int:
        answer = self.client(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER)
        return int(answer[1])

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def wait_for_failover(self, old: int, seconds: float = 30) -> int:
        assert eventually(lambda: self.master_port() != old, seconds), (
            "the sentinels did not fail over"
        )
        return self.master_port()

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()
        self.processes.clear()
