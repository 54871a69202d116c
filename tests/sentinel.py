"""Real Redis Sentinel on loopback, started by the tests: a master, a replica and three
sentinels (the same `redis-server` binary, with `--sentinel`)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from bot.embedded_redis import free_port, redis_server_binary

MASTER = "mymaster"


def _server(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [redis_server_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _answers(port: int, deadline: float) -> None:
    client = Redis(port=port, socket_timeout=0.5)
    while True:
        try:
            client.ping()
            return
        except Exception:
            assert time.monotonic() < deadline, f"redis on {port} did not start"
            time.sleep(0.05)


@dataclass
class SentinelWorld:
    folder: Path
    data_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self, replicas: int = 1) -> SentinelWorld:
        deadline = time.monotonic() + 15
        self.data_ports = [free_port() for _ in range(replicas + 1)]
        master = self.data_ports[0]
        for port in self.data_ports:
            follow = ["--replicaof", "127.0.0.1", str(master)] if port != master else []
            self.processes[port] = _server(
                [
                    "--dir",
                    str(self.folder),  # a replica's sync file lands here, not in the cwd
                    "--dbfilename",
                    f"dump-{port}.rdb",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    *follow,
                ]
            )
        for port in self.data_ports:
            _answers(port, deadline)
        for port in self.data_ports[1:]:  # each replica has synced with the master
            while Redis(port=port).info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, f"the replica on {port} did not sync"
                time.sleep(0.05)
        for _ in range(3):
            port = free_port()
            config = self.folder / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self.processes[port] = _server([str(config), "--sentinel", "--dir", str(self.folder)])
            self.sentinel_ports.append(port)
        for port in self.sentinel_ports:
            _answers(port, deadline)
        return self

    def master_port(self) -> int:
        answer = Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER)
        return int(answer[1])

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def wait_for_failover(self, old: int, seconds: float = 30) -> int:
        deadline = time.monotonic() + seconds
        while (new := self.master_port()) == old:
            assert time.monotonic() < deadline, "the sentinels did not fail over"
            time.sleep(0.2)
        return new

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()
        self.processes.clear()
