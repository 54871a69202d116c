"""What a set of version changes does to the repository's files, before anything is written.

The bot uses this at request time for the preview diff and the current
versions; the worker uses it again right before committing. Both read pins
through `workers.pins`, so they cannot disagree about what a pin holds.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from config.errors import PinError
from config.policy import Pin, Policy
from workers import pins
from workers.state.request import Change

Reader = Callable[[str], str]

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


def checkout_paths(policy: Policy) -> list[str] | None:
    """What a worker must check out: the pinned files, or everything (None) when an
    environment runs a validation command, which may read any file."""
    if any(env.validate_command for env in policy.environments.values()):
        return None
    return sorted(
        {pin.file for app in policy.apps.values() for pins in app.pins.values() for pin in pins}
    )


def current_versions(policy: Policy, read: Reader, app: str, env: str) -> list[PinVersion]:
    """The version every pin of `app` in `env` holds now."""
    texts: dict[str, str] = {}
    found = []
    for pin in pins_of(policy, app, env):
        text = texts.setdefault(pin.file, read(pin.file))
        found.append(PinVersion(pin, pins.read_version(text, pin)))
    return found


MIXED = " | "  # between the versions of pins that disagree, in the policy's pin order


def current_version(policy: Policy, read: Reader, app: str, env: str) -> str:
    """The version `app` runs in `env`: its pins' common version or, when they disagree (a
    chart's appVersion beside its image tag), every version they hold: `1.0 | 5`. A request
    from that state converges them; the diff shows each pin, and the worker checks that each
    still holds what was approved, as it does for one version."""
    versions = current_versions(policy, read, app, env)
    return MIXED.join(dict.fromkeys(v.version for v in versions))


@dataclass
class Plan:
    """File contents before and after applying some changes."""

    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)

    @property
    def changed_files(self) -> list[str]:
        return sorted(f for f in self.after if self.after[f] != self.before[f])

    def diff(self, max_lines: int = MAX_DIFF_LINES) -> str:
        lines: list[str] = []
        for file in self.changed_files:
            lines += difflib.unified_diff(
                self.before[file].splitlines(),
                self.after[file].splitlines(),
                f"a/{file}",
                f"b/{file}",
                n=1,
                lineterm="",
            )
        if len(lines) > max_lines:
            lines = [*lines[:max_lines], f"… {len(lines) - max_lines} more lines"]
        return "\n".join(lines)


def same_change(shown: str, now: str) -> bool:
    """True when two diffs make the same edits, wherever in their files the hunks now sit."""

    def edits(diff: str) -> list[str]:
        return ["@@" if line.startswith("@@") else line for line in diff.splitlines()]

    return edits(shown) == edits(now)


def plan_changes(policy: Policy, read: Reader, changes: Sequence[Change]) -> Plan:
    """Apply `changes` to in-memory copies of the files; all pins resolve or this raises."""
    plan = Plan()
    for change in changes:
        for pin in pins_of(policy, change.app, change.env):
            if pin.file not in plan.before:
                plan.before[pin.file] = plan.after[pin.file] = read(pin.file)
            text = plan.after[pin.file]
            if pins.read_version(text, pin) != change.new:
                plan.after[pin.file] = pins.write_version(text, pin, change.new)
    return plan
