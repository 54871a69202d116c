"""Which artifact a version of an app is: asked of its store, remembered for a few seconds.

`resolve` raises `ArtifactMissing` (naming the store and the newest versions it has) or
`ArtifactUnreachable`; both are `Refused`-worthy, and the bot says them as they are. A
tag's answer is kept `CACHE_SECONDS`, so a release train of fifty apps asks each store once,
all at the same time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from config.artifact import Artifact
from config.errors import ReleasegateError, StaleRequest
from config.gates import SignatureGate
from config.git_access import GitAccess
from config.policy import Policy
from config.settings import Settings
from workers.artifacts.registry import Registry, RegistryError, split_name
from workers.artifacts.signatures import Unsigned, verify
from workers.artifacts.stores import chart_versions, git_tags
from workers.state.request import DeployRequest

CACHE_SECONDS = 5.0
NEWEST = 5  # versions named when the one asked for is missing
AT_ONCE = 16


class ArtifactMissing(ReleasegateError):
    def __init__(self, store: str, tag: str, newest: Sequence[str]) -> None:
        has = f"; the newest it has: {', '.join(newest)}" if newest else "; it has none"
        super().__init__(f"{store} has no {tag}{has}")


class ArtifactUnreachable(ReleasegateError):
    def __init__(self, store: str, why: str) -> None:
        super().__init__(f"{store} could not be asked whether it has this version: {why}")


@dataclass(frozen=True)
class Resolved:
    """What a version of an app is in its store."""

    app: str
    tag: str
    digest: str  # sha256:… (an image, a chart), or the commit a Git tag points to
    created: str = ""
    source: str = ""
    revision: str = ""


def _version_key(tag: str) -> list[tuple[int, int | str]]:
    """Sort `2.10.0` after `2.9.0`, and a release after its candidates (`2.2.0` after
    `2.2.0-rc1`); build metadata (`+…`) does not order."""
    core = tag.partition("+")[0]
    main, dash, candidate = core.partition("-")

    def parts(text: str) -> list[tuple[int, int | str]]:
        return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.]", text)]

    if not dash:
        return [*parts(main), (3, "")]
    return [*parts(main), (2, ""), *parts(candidate)]


def newest(tags: Sequence[str], count: int = NEWEST) -> list[str]:
    return sorted(tags, key=_version_key)[-count:][::-1]


@dataclass
class Resolver:
    """Asks stores, with a short memory; safe to share between threads."""

    insecure: tuple[str, ...] = ()
    access: GitAccess | None = None
    auth_hosts: tuple[str, ...] = ()  # token services besides the registries' own hosts
    clock: Callable[[], float] = time.monotonic
    _cache: dict[tuple[str, str], tuple[float, Resolved | None, list[str]]] = field(
        default_factory=dict, init=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _registries: dict[str, Registry] = field(default_factory=dict, init=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Resolver:
        """Plain HTTP only where the settings allow it; Git tags read as the repositories are."""
        return cls(
            insecure=settings.insecure_registry_hosts,
            access=settings.git_access(),
            auth_hosts=settings.registry_auth_host_names,
        )

    def resolve(self, app: str, artifact: Artifact, version: str) -> Resolved:
        return self.resolve_tag(app, artifact, artifact.tag(version))

    def resolve_tag(self, app: str, artifact: Artifact, tag: str, fresh: bool = False) -> Resolved:
        """What `tag` is now; `fresh` asks the store even when it was asked a moment ago."""
        found, tags = self._look(artifact, tag, fresh)
        if found is None:
            raise ArtifactMissing(artifact.describe(), tag, newest(tags))
        return Resolved(app, tag, found.digest, found.created, found.source, found.revision)

    def resolve_all(
        self, wanted: Sequence[tuple[str, Artifact, str]]
    ) -> list[Resolved | ReleasegateError]:
        """Each (app, artifact, version), asked at the same time; each a result or its error."""

        def one(item: tuple[str, Artifact, str]) -> Resolved | ReleasegateError:
            try:
                return self.resolve(*item)
            except ReleasegateError as exc:
                return exc

        if len(wanted) <= 1:
            return [one(item) for item in wanted]
        with ThreadPoolExecutor(min(AT_ONCE, len(wanted)), "artifact") as pool:
            return list(pool.map(one, wanted))

    def signed_by(self, artifact: Artifact, digest: str, gate: SignatureGate) -> str:
        """The key id whose cosign signature of `digest` verifies (asked now, never
        remembered); raises `Unsigned`."""
        name = artifact.oci_name
        if name is None:
            raise Unsigned(f"{artifact.describe()} is not an image: no signature to verify")
        return verify(self._registry(split_name(name)[0]), artifact, digest, gate)

    def _registry(self, host: str) -> Registry:
        with self._lock:
            return self._registries.setdefault(host, Registry(host, self.insecure, self.auth_hosts))

    def _look(
        self, artifact: Artifact, tag: str, fresh: bool = False
    ) -> tuple[Resolved | None, list[str]]:
        key = (artifact.describe(), tag)
        with self._lock:
            cached = self._cache.get(key)
        if cached and not fresh and self.clock() - cached[0] < CACHE_SECONDS:
            return cached[1], cached[2]
        try:
            found, tags = self._ask(artifact, tag)
        except RegistryError as exc:
            raise ArtifactUnreachable(artifact.describe(), str(exc)) from exc
        with self._lock:
            self._cache[key] = (self.clock(), found, tags)
        return found, tags

    def _ask(self, artifact: Artifact, tag: str) -> tuple[Resolved | None, list[str]]:
        if (name := artifact.oci_name) is not None:
            host, repository = split_name(name)
            registry = self._registry(host)
            image = registry.image(repository, tag)
            if image is None:
                return None, registry.tags(repository)
            found = Resolved("", tag, image.digest, image.created, image.source, image.revision)
            return found, []
        if artifact.git_tags is not None:
            tags = git_tags(artifact.git_tags, self.access)
            sha = tags.get(tag)
            return (Resolved("", tag, sha) if sha else None), list(tags)
        versions = chart_versions(str(artifact.chart_repo), str(artifact.chart))
        entry = versions.get(tag)
        if entry is None:
            return None, list(versions)
        return Resolved("", tag, entry["digest"], entry["created"]), []


def check_artifacts(policy: Policy, resolver: Resolver, request: DeployRequest) -> None:
    """Right before a commit: every artifact the approval bound is still what its tag names
    (asked now, not remembered). Raises `StaleRequest` when a tag moved or went away."""
    for built in request.artifacts:
        spec = policy.apps.get(built.app)
        if spec is None or spec.artifact is None:
            continue  # the policy no longer names a store for it: nothing to ask
        try:
            now = resolver.resolve_tag(built.app, spec.artifact, built.tag, fresh=True)
        except ArtifactMissing as exc:
            raise StaleRequest("artifact_gone", app=built.app, tag=built.tag) from exc
        if now.digest != built.digest:
            raise StaleRequest(
                "artifact_moved",
                app=built.app,
                tag=built.tag,
                now=now.digest,
                approved=built.digest,
            )
    check_signed(policy, resolver, request)


def check_signed(policy: Policy, resolver: Resolver, request: DeployRequest) -> None:
    """Right before a commit: where the environment asks for signatures, every change's
    approved digest is signed with its key (asked now); an app without an image fails."""
    gate = policy.environments[request.env].gates.signature
    if gate is None:
        return
    built = {b.app: b for b in request.artifacts}
    for change in request.changes:
        spec = policy.apps.get(change.app)
        artifact = spec.artifact if spec else None
        if artifact is None or change.app not in built:
            raise Unsigned(f"{request.env} takes only signed images; {change.app} names none")
        resolver.signed_by(artifact, built[change.app].digest, gate)
