"""An OCI registry, asked over the distribution API: a tag's digest, its image's config, tags.

Authentication as Docker clients do it: a `401` with `WWW-Authenticate: Basic` is answered
with the Docker config's credentials for the registry; one with `Bearer realm=…,service=…,
scope=…` is exchanged for a token at the realm. The realm is the registry's word, so the
credentials go only to a realm on the registry's own host (Docker Hub's `auth.docker.io`
for Docker Hub) or one the operator lists (RELEASEGATE_REGISTRY_AUTH_HOSTS); any other realm
is asked without them. A realm over plain HTTP is refused unless the registry itself is
spoken to over HTTP. Plain HTTP only for loopback and the registries
RELEASEGATE_INSECURE_REGISTRIES lists. A manifest's digest is the hash of its bytes: a
`Docker-Content-Digest` that says otherwise is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from workers.http import Answer, AnswerRefused, fetch

DEADLINE = 5.0  # seconds for each answer: a slower registry is a refusal
MAX_MANIFEST = 4 * 1024 * 1024
MAX_CONFIG = 1024 * 1024
MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# cosign's layout (its specs/SIGNATURE_SPEC.md): simple signing payloads as layers of the
# `sha256-HEX.sig` tag, each signature in an annotation of its layer.
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
MAX_SIGNATURES = 16
MAX_PAYLOAD = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
# Registries whose token service lives on another host of theirs.
KNOWN_REALMS = {"registry-1.docker.io": ("auth.docker.io",)}


log = logging.getLogger(__name__)


class RegistryError(Exception):
    """The registry could not be asked, or answered what a registry does not."""


@dataclass(frozen=True)
class Image:
    digest: str
    created: str = ""  # the image config's `created`, as written
    source: str = ""  # org.opencontainers.image.source
    revision: str = ""  # org.opencontainers.image.revision


def split_name(name: str) -> tuple[str, str]:
    """`registry.acme.example/team/app` -> (`registry.acme.example`, `team/app`); a name
    without a registry is Docker Hub's (`library/` for a single component)."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "registry-1.docker.io", name if rest else f"library/{name}"


def docker_credentials(host: str) -> tuple[str, str] | None:
    """The Docker config's user and password (or identity token) for `host`, if any."""
    folder = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        if re.sub(r"^https?://", "", str(key)).split("/")[0] != host:
            continue
        if token := entry.get("identitytoken"):
            return "<token>", str(token)
        if auth := entry.get("auth"):
            user, _, password = base64.b64decode(str(auth)).decode().partition(":")
            return user, password
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    return None


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Registry:
    """One registry host, with the token it was given (per repository scope)."""

    def __init__(
        self, host: str, insecure: tuple[str, ...] = (), auth_hosts: tuple[str, ...] = ()
    ) -> None:
        self.host = host
        plain = host.split(":")[0] in LOOPBACK or host in LOOPBACK or host in insecure
        self.plain = plain
        self.base = f"{'http' if plain else 'https'}://{host}"
        self.auth_hosts = (*auth_hosts, *KNOWN_REALMS.get(host, ()))
        self.session = requests.Session()
        self._auth: dict[str, str] = {}  # repository -> Authorization header

    def _get(
        self, repository: str, path: str, accept: str = "", max_bytes: int = MAX_MANIFEST
    ) -> Answer:
        url = f"{self.base}/v2/{repository}/{path}"
        headers = {"Accept": accept} if accept else {}
        for _attempt in range(2):
            if auth := self._auth.get(repository):
                headers["Authorization"] = auth
            try:
                answer = fetch(
                    self.session,
                    "GET",
                    url,
                    deadline=DEADLINE,
                    max_bytes=max_bytes,
                    headers=headers,
                )
            except AnswerRefused as exc:
                raise RegistryError(f"{self.host} {exc}") from exc
            except requests.RequestException as exc:
                raise RegistryError(f"cannot reach {self.host}: {type(exc).__name__}") from exc
            challenge = answer.headers.get("WWW-Authenticate", "")
            if answer.status_code != 401 or not challenge:
                return answer
            self._auth[repository] = self._authorize(repository, challenge)
        return answer

    def _authorize(self, repository: str, challenge: str) -> str:
        scheme, params = _challenge(challenge)
        credentials = docker_credentials(self.host)
        if scheme == "basic":
            if credentials is None:
                raise RegistryError(f"{self.host} asks for a login, and the Docker config has none")
            raw = f"{credentials[0]}:{credentials[1]}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        realm = urlsplit(params.get("realm", ""))
        if scheme != "bearer" or realm.scheme not in ("https", "http") or not realm.hostname:
            raise RegistryError(f"{self.host} asks for an authentication it does not name")
        if realm.scheme == "http" and not self.plain:
            raise RegistryError(
                f"{self.host} sends us to a token service over plain HTTP ({realm.netloc}): "
                "refused, a login must not cross the network unencrypted"
            )
        query = {"service": params.get("service", ""), "scope": f"repository:{repository}:pull"}
        auth = credentials if self._may_see_credentials(realm.netloc) else None
        if credentials is not None and auth is None:
            log.warning(
                "%s names a token service on another host (%s): asked without the Docker "
                "config's credentials (list it in RELEASEGATE_REGISTRY_AUTH_HOSTS to send them)",
                self.host,
                realm.netloc,
            )
        try:
            answer = fetch(
                self.session,
                "GET",
                f"{params['realm']}?{urlencode(query)}",
                deadline=DEADLINE,
                auth=auth,
                allow_redirects=False,
            )
            body = answer.json()
        except (requests.RequestException, ValueError) as exc:
            raise RegistryError(f"{self.host}'s token service did not answer: {exc}") from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if answer.status_code != 200 or not token:
            raise RegistryError(f"{self.host}'s token service refused ({answer.status_code})")
        return f"Bearer {token}"

    def _may_see_credentials(self, netloc: str) -> bool:
        """Whether a token service at `netloc` (host[:port]) may be sent our login: on the
        registry's own host, or one the operator lists."""
        host = netloc.rpartition("@")[2]
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        own = self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host
        return name.lower() == own.lower() or host in self.auth_hosts or name in self.auth_hosts

    def image(self, repository: str, tag: str) -> Image | None:
        """The digest behind `repository:tag` and what its config says; None if no such tag."""
        answer = self._get(repository, f"manifests/{tag}", MANIFESTS)
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise RegistryError(f"{self.host} answered {answer.status_code} for {tag}")
        digest = _sha256(answer.content)  # what the bytes are, whatever a header says
        said = answer.headers.get("Docker-Content-Digest", "")
        if said and said != digest:
            raise RegistryError(
                f"{self.host} says {tag} is {said[:80]!r}, but the manifest it sent hashes "
                f"to {digest}: refused"
            )
        try:
            return self._described(repository, digest, answer.json())
        except (ValueError, KeyError, TypeError, AttributeError):
            return Image(digest)  # the digest is what binds; the rest only informs

    def _described(self, repository: str, digest: str, manifest: Any) -> Image:
        if "manifests" in manifest:  # an index: describe its first (or linux/amd64) image
            entries = manifest["manifests"]
            chosen = next(
                (m for m in entries if m.get("platform", {}).get("architecture") == "amd64"),
                entries[0],
            )
            if not DIGEST.fullmatch(str(chosen["digest"])):
                return Image(digest)
            inner = self._get(repository, f"manifests/{chosen['digest']}", MANIFESTS)
            manifest = inner.json()
        config_digest = str(manifest["config"]["digest"])
        if not DIGEST.fullmatch(config_digest):
            return Image(digest)
        blob = self._get(repository, f"blobs/{config_digest}", max_bytes=MAX_CONFIG)
        config = blob.json() if blob.status_code == 200 else {}
        labels = (config.get("config") or {}).get("Labels") or {}
        return Image(
            digest=digest,
            created=str(config.get("created", ""))[:40],
            source=str(labels.get("org.opencontainers.image.source", ""))[:300],
            revision=str(labels.get("org.opencontainers.image.revision", ""))[:80],
        )

    def signatures(self, repository: str, digest: str) -> list[tuple[bytes, str]]:
        """The cosign signatures of `digest` (its `sha256-HEX.sig` tag): each simple signing
        payload with its base64 signature. A payload's bytes must hash to its layer's digest;
        each is read bounded."""
        tag = digest.replace(":", "-") + ".sig"
        answer = self._get(repository, f"manifests/{tag}", MANIFESTS)
        if answer.status_code == 404:
            return []
        if answer.status_code != 200:
            raise RegistryError(f"{self.host} answered {answer.status_code} for {tag}")
        try:
            layers = answer.json().get("layers") or []
        except (ValueError, AttributeError) as exc:
            raise RegistryError(f"{self.host}'s {tag} is not an image manifest") from exc
        found = []
        for layer in layers[:MAX_SIGNATURES]:
            if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING:
                continue
            signature = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
            blob_digest = str(layer.get("digest", ""))
            if not isinstance(signature, str) or not DIGEST.fullmatch(blob_digest):
                continue
            blob = self._get(repository, f"blobs/{blob_digest}", max_bytes=MAX_PAYLOAD)
            if blob.status_code == 200 and _sha256(blob.content) == blob_digest:
                found.append((blob.content, signature))
        return found

    def tags(self, repository: str) -> list[str]:
        answer = self._get(repository, "tags/list?n=1000")
        if answer.status_code != 200:
            return []
        body = answer.json()
        tags = body.get("tags") if isinstance(body, dict) else None
        return [str(t) for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def _sha256(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()
