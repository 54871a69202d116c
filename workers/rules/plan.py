"""What a set of version changes does to the repository's files, before anything is written.

The bot uses this at request time for the preview diff and the current
versions; the worker uses it again right before committing. Both read pins
through `workers.pins`, so they cannot disagree about what a pin holds.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from config.errors import PinError, ReleasegateError
from config.policy import Pin, Policy
from workers import pins
from workers.state.request import Change, DeployRequest

Reader = Callable[[str, str], str]  # (repository, file) -> the file's text at the head
Location = tuple[str, str]  # (repository, file)

MAX_DIFF_LINES = 60


@dataclass(frozen=True)
class PinVersion:
    pin: Pin
    version: str


def pins_of(policy: Policy, app: str, env: str) -> list[Pin]:
    pinned = policy.apps[app].pins.get(env)
    if not pinned:
        raise PinError(f"{app} has no pins in {env}")
    return pinned


def checkout_paths(policy: Policy, repository: str) -> list[str] | None:
    """What a worker must check out of `repository`: its pinned files, or everything (None)
    when an environment runs a validation command, which may read any file."""
    if any(env.validate_command for env in policy.environments.values()):
        return None
    return sorted(
        {
            pin.file
            for app in policy.apps.values()
            for pins in app.pins.values()
            for pin in pins
            if pin.repository == repository
        }
    )


def decide_landing(policy: Policy, changes: Sequence[Change]) -> tuple[tuple[str, ...], str]:
    """Where `changes` land: their repositories in the policy's (landing) order, and the one
    of them with `merge_request` ("" for none). Two repositories landing through pull
    requests in one request are refused: one merge request per request."""
    names = tuple(policy.repositories_for(changes))
    forged = [n for n in names if policy.repositories[n].merge_request is not None]
    if len(forged) > 1:
        raise ReleasegateError(
            f"this change spans the repositories {', '.join(forged)} that land through pull "
            "requests: ask for each one's apps in a request of its own"
        )
    return names, forged[0] if forged else ""


def landing(policy: Policy, request: DeployRequest) -> tuple[tuple[str, ...], str]:
    """Where `request` lands, as decided when it was filed (decided now for a request filed
    before that was kept)."""
    if request.repositories:
        return request.repositories, request.merge_request_in
    return decide_landing(policy, request.changes)


def current_versions(policy: Policy, read: Reader, app: str, env: str) -> list[PinVersion]:
    """The version every pin of `app` in `env` holds now."""
    texts: dict[Location, str] = {}
    found = []
    for pin in pins_of(policy, app, env):
        where = (pin.repository, pin.file)
        text = texts[where] if where in texts else texts.setdefault(where, read(*where))
        found.append(PinVersion(pin, pins.read_version(text, pin)))
    return found


def digests_held(policy: Policy, read: Reader, app: str, env: str) -> set[str]:
    """The artifact digests `app`'s pins in `env` hold beside its version (pin_digest)."""
    found = set()
    for pin in pins_of(policy, app, env):
        if digest := pins.read_digest(read(pin.repository, pin.file), pin):
            found.add(digest)
    return found


MIXED = " | "  # between the versions of pins that disagree, in the policy's pin order


def current_version(policy: Policy, read: Reader, app: str, env: str) -> str:
    """The version `app` runs in `env`: its pins' common version or, when they disagree (a
    chart's appVersion beside its image tag), every version they hold: `1.0 | 5`. A request
    from that state converges them; the diff shows each pin, and the worker checks that each
    still holds what was approved, as it does for one version."""
    versions = current_versions(policy, read, app, env)
    return MIXED.join(dict.fromkeys(v.version for v in versions))


# Where a policy has several repositories, each one's part of a diff starts with this line.
SECTION = re.compile(r"^== (\S+) ==$")


@dataclass
class Plan:
    """File contents before and after applying some changes, by (repository, file)."""

    repositories: list[str]  # the policy's, in its order
    before: dict[Location, str] = field(default_factory=dict)
    after: dict[Location, str] = field(default_factory=dict)

    def changed_files(self, repository: str) -> list[str]:
        return sorted(
            file
            for (repo, file), text in self.after.items()
            if repo == repository and text != self.before[(repo, file)]
        )

    @property
    def changed_repositories(self) -> list[str]:
        return [name for name in self.repositories if self.changed_files(name)]

    def diff(self, repository: str | None = None, max_lines: int = MAX_DIFF_LINES) -> str:
        """The unified diff of `repository`'s files; of every repository's without one, each
        part under its repository's name where the policy has several."""
        if repository is not None:
            return self._diff(repository, max_lines)
        if len(self.repositories) == 1:
            return self._diff(self.repositories[0], max_lines)
        return "\n".join(
            f"== {name} ==\n{self._diff(name, max_lines)}" for name in self.changed_repositories
        )

    def _diff(self, repository: str, max_lines: int) -> str:
        lines: list[str] = []
        for file in self.changed_files(repository):
            lines += difflib.unified_diff(
                self.before[(repository, file)].splitlines(),
                self.after[(repository, file)].splitlines(),
                f"a/{file}",
                f"b/{file}",
                n=1,
                lineterm="",
            )
        if len(lines) > max_lines:
            lines = [*lines[:max_lines], f"… {len(lines) - max_lines} more lines"]
        return "\n".join(lines)


def diff_part(diff: str, repository: str) -> str:
    """`repository`'s part of a diff that `Plan.diff()` made: the whole diff where it has no
    parts (a single-repository policy's), nothing where that repository has no part."""
    lines = diff.splitlines()
    if not any(SECTION.match(line) for line in lines):
        return diff
    part: list[str] = []
    inside = False
    for line in lines:
        if found := SECTION.match(line):
            inside = found.group(1) == repository
        elif inside:
            part.append(line)
    return "\n".join(part)


def same_change(shown: str, now: str) -> bool:
    """True when two diffs make the same edits, wherever in their files the hunks now sit."""

    def edits(diff: str) -> list[str]:
        return ["@@" if line.startswith("@@") else line for line in diff.splitlines()]

    return edits(shown) == edits(now)


def holds_digest(pin: Pin) -> bool:
    """Whether this pin can hold an artifact's digest (so a moved tag cannot change what it
    runs): beside a kustomize image's tag, or in a `{digest}` format."""
    return "{digest}" in pin.format or (pin.kind == "kustomize_image" and pin.part_name == "tag")


def pinned_by_tag(policy: Policy, app: str, env: str) -> bool:
    """Whether what `app` runs in `env` is named by a registry's tag alone: its OCI artifact's
    digest is not written (`pin_digest: false`), or none of its pins can hold one (a Helm
    value `image.tag`; a version label beside a pinned image does not count)."""
    spec = policy.apps[app].artifact
    if spec is None or spec.oci_name is None:
        return False
    return not spec.digests_pinned or not any(holds_digest(p) for p in pins_of(policy, app, env))


def plan_changes(
    policy: Policy,
    read: Reader,
    changes: Sequence[Change],
    digests: Mapping[str, str] | None = None,
    only: str | None = None,
) -> Plan:
    """Apply `changes` to in-memory copies of the files; all pins resolve or this raises.
    `digests` (app -> the artifact's digest the request binds) are written too where the
    app's artifact says `pin_digest`: beside an image's tag, and into `{digest}` formats.
    With `only`, the pins of that repository alone are read and planned."""
    plan = Plan(list(policy.repositories))
    for change in changes:
        spec = policy.apps[change.app].artifact
        digest = (digests or {}).get(change.app, "") if spec and spec.digests_pinned else ""
        for pin in pins_of(policy, change.app, change.env):
            if only is not None and pin.repository != only:
                continue
            where = (pin.repository, pin.file)
            if where not in plan.before:
                plan.before[where] = plan.after[where] = read(*where)
            text = plan.after[where]
            if pins.read_version(text, pin) != change.new or "{digest}" in pin.format:
                text = pins.write_version(text, pin, change.new, digest)
            if digest and pin.kind == "kustomize_image" and pin.part_name == "tag":
                beside = pin.model_copy(update={"part": "digest", "format": "{version}"})
                text = pins.write_version(text, beside, digest)
            plan.after[where] = text
    return plan
