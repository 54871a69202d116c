"""A real OCI registry for the tests: Debian's `docker-registry` (the CNCF distribution
registry), on loopback, with its storage in the test's folder. Images are pushed over the
registry's own HTTP API: the blobs, then the manifest."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import requests

from bot.embedded_redis import free_port
from tests.conftest import serving, stop_server

BINARY = Path("/usr/bin/docker-registry")


@dataclass
class Registry:
    process: subprocess.Popen[bytes]
    port: int
    auth: tuple[str, str] | None = None
    # With token authentication: a push token for a repository (the token service mints it).
    push_token: Callable[[str], str] | None = None

    def _headers(self, name: str, **more: str) -> dict[str, str]:
        if self.push_token is None:
            return more
        return {"Authorization": f"Bearer {self.push_token(name)}", **more}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _url(self, path: str) -> str:
        return f"http://{self.host}/v2/{path}"

    def _blob(self, name: str, data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = requests.post(
            self._url(f"{name}/blobs/uploads/"),
            auth=self.auth,
            headers=self._headers(name),
            timeout=10,
        )
        started.raise_for_status()
        location = started.headers["Location"]
        if location.startswith("/"):
            location = f"http://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        done = requests.put(
            f"{location}{sep}digest={digest}",
            data=data,
            headers=self._headers(name, **{"Content-Type": "application/octet-stream"}),
            auth=self.auth,
            timeout=10,
        )
        done.raise_for_status()
        return {"digest": digest, "size": len(data)}

    def push(
        self, name: str, tag: str, source: str = "", revision: str = "", salt: str = ""
    ) -> str:
        """Push a small image as `name:tag`; returns its manifest digest."""
        labels = {}
        if source:
            labels["org.opencontainers.image.source"] = source
        if revision:
            labels["org.opencontainers.image.revision"] = revision
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-11-30T12:00:00Z",
            "config": {"Labels": labels, "Env": [f"SALT={salt}{tag}"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
        config_blob = self._blob(name, json.dumps(config).encode())
        layer = self._blob(name, f"layer of {name}:{tag} {salt}".encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
        }
        data = json.dumps(manifest).encode()
        done = requests.put(
            self._url(f"{name}/manifests/{tag}"),
            data=data,
            headers=self._headers(
                name, **{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            ),
            auth=self.auth,
            timeout=10,
        )
        done.raise_for_status()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def push_signature(self, name: str, digest: str, payloads: list[tuple[bytes, bytes]]) -> None:
        """Push what `cosign sign --key` writes for `digest` (cosign's specs/SIGNATURE_SPEC.md):
        an image manifest at the tag `sha256-HEX.sig` whose layers are simple signing
        payloads, each with its base64 signature in the layer's annotation."""
        config = self._blob(
            name,
            b'{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}',
        )
        layers = []
        for payload, signature in payloads:
            blob = self._blob(name, payload)
            layers.append(
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    **blob,
                    "annotations": {
                        "dev.cosignproject.cosign/signature": base64.b64encode(signature).decode()
                    },
                }
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": layers,
        }
        tag = digest.replace(":", "-") + ".sig"
        done = requests.put(
            self._url(f"{name}/manifests/{tag}"),
            data=json.dumps(manifest).encode(),
            headers=self._headers(
                name, **{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            ),
            auth=self.auth,
            timeout=10,
        )
        done.raise_for_status()

    def stop(self) -> None:
        stop_server(self.process)


def start_registry(
    folder: Path,
    user: str | None = None,
    password: str = "",
    auth_config: str = "",
    push_token: Callable[[str], str] | None = None,
) -> Registry:
    """The registry on a free loopback port; with `user`, behind htpasswd basic auth; with
    `auth_config`, behind that (token authentication, pushing with `push_token`)."""
    assert BINARY.exists(), "docker-registry is installed by .ci/run and scripts/test"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if user is not None:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (folder / "htpasswd").write_text(f"{user}:{hashed}\n")
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {folder / 'htpasswd'}\n"
    auth = auth_config or auth
    (folder / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        "  delete: {enabled: true}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = (folder / "registry.log").open("wb")
    process = subprocess.Popen(
        [str(BINARY), "serve", str(folder / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    registry = Registry(process, port, (user, password) if user else None, push_token)
    serving(process, f"http://{registry.host}/v2/", folder / "registry.log", 20, (200, 401))
    return registry


def docker_config(folder: Path, host: str, user: str, password: str) -> Path:
    """A Docker config folder holding credentials for `host` (DOCKER_CONFIG points here)."""
    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder
