"""Approvals counted again against the policy loaded now, right before a commit lands."""

from __future__ import annotations

from collections.abc import Mapping

from config.errors import ApprovalsChanged
from config.policy import Policy
from config.principals import Principal
from workers.rules.identity import Identities
from workers.state.request import Approval, DeployRequest


def check_approvals(
    policy: Policy,
    identities: Identities,
    request: DeployRequest,
    approvals: list[Approval],
    slack_groups: Mapping[str, frozenset[str]] | None = None,
) -> None:
    """Raise unless the approvals still meet the policy loaded now: every counted approver
    still an approver of the environment (in the Slack user groups `slack_groups` says
    they are in now), one count per person, and enough of them."""
    env = policy.environments.get(request.env)
    if env is None:
        raise ApprovalsChanged(f"{request.env} is no longer in the policy; nothing was pushed")
    counted, dropped = identities.still_counted(
        request.env, Principal.of(request.requester), approvals, slack_groups
    )
    if len(counted) < env.approvals:
        why = f" ({'; '.join(dropped)})" if dropped else ""
        raise ApprovalsChanged(
            f"the policy now asks for {env.approvals} approval(s) of deploys to {request.env} "
            f"and {len(counted)} still count{why}; nothing was pushed, ask again"
        )


def counted_approvers(
    identities: Identities,
    request: DeployRequest,
    approvals: list[Approval],
    slack_groups: Mapping[str, frozenset[str]] | None = None,
) -> list[str]:
    """The approvals that count now: the trailers credit no one the policy dropped."""
    counted, _dropped = identities.still_counted(
        request.env, Principal.of(request.requester), approvals, slack_groups
    )
    return [approval.principal for approval in counted]
