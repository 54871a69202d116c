"""A real OpenSSH server on loopback, started by the tests: the GitOps remote over SSH, as a
forge serves it (a deploy key restricted to git-shell)."""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def keypair(path: Path) -> str:
    """A new ed25519 key at `path`; returns its public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SshServer:
    folder: Path
    port: int
    host_key: str  # the server's public host key line
    deploy_key: Path  # the private key the server lets in (git-shell only)
    process: subprocess.Popen[bytes] | None = None

    def url(self, repo: Path) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}{repo}"

    def known_hosts(self, path: Path, key: str | None = None) -> Path:
        """A known_hosts file naming this server (or, with `key`, another key for it)."""
        kind, blob = (key or self.host_key).split()[:2]
        path.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        return path

    def start(self) -> SshServer:
        self.process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.folder / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "sshd.log", "wb"),  # noqa: SIM115 - the server's own log
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, (self.folder / "sshd.log").read_text()
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def ssh_server(folder: Path) -> SshServer:
    """An sshd on a free loopback port that lets one deploy key run git-shell, nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    host_key = keypair(folder / "host_key")
    public = keypair(folder / "deploy_key")
    restricted = 'restrict,command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\""'
    (folder / "authorized_keys").write_text(f"{restricted} {public}\n")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\n"
    )
    return SshServer(folder, port, host_key, folder / "deploy_key").start()
