"""Who is who: principals, groups, and the policy's lists of deployers and approvers."""

from __future__ import annotations

from collections.abc import Iterable

from config.policy import Policy


def members(policy: Policy, principals: Iterable[str]) -> set[str]:
    """Expand `group:NAME` entries; users and platform groups stay as they are."""
    expanded: set[str] = set()
    for principal in principals:
        if principal.startswith("group:"):
            expanded.update(policy.groups.get(principal.removeprefix("group:"), []))
        else:
            expanded.add(principal)
    return expanded


def is_listed(
    policy: Policy, principal: str, groups: Iterable[str], allowed: Iterable[str]
) -> bool:
    """True when `principal`, or a platform group it belongs to, is in `allowed`."""
    listed = members(policy, allowed)
    return principal in listed or any(group in listed for group in groups)
