"""The request card: one message per request, edited in place as its state changes.

Built from the store, so the bot (after an approval) and the worker (after a
push) render the same card. Platforms that can edit messages show it; the
text is plain enough for any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot import messages, rollouts
from bot.verification import card_line
from config.principals import Principal
from config.text import inert_block
from workers.rollout.follow import load as load_rollout
from workers.rollout.verify import load as load_verification
from workers.state.request import DeployRequest, RequestState, Result
from workers.state.store import RequestStore


@dataclass(frozen=True)
class Card:
    request: DeployRequest
    state: RequestState
    approvers: list[tuple[str, str]]  # (user id, name as they were called when approving)
    outcome: str | None
    rollout: str | None = None  # how the reconciler took the pushed commit, once known
    merge_request: str | None = None  # the pull (merge) request's address, in that mode
    verification: str | None = None  # how the measurements after the rollout stand

    @property
    def pending(self) -> bool:
        return self.state is RequestState.PENDING

    @property
    def title(self) -> str:
        return f"{self.request.subject} ({self.request.id})"

    def text(self, mention: str = "{name}") -> str:
        """The card as text; `mention` formats an approver (`{id}`, `{name}`) for the platform."""
        request = self.request
        who = [mention.format(id=user_id, name=name) for user_id, name in self.approvers]
        approved = ", ".join(who) or "nobody"
        lines = [
            f"*{self.title}*",
            *(change.line() for change in request.changes),
            *messages.artifact_lines(request),
            f"requested by {request.requester_name}; "
            f"approvals {len(self.approvers)}/{request.approvals_needed}: {approved}",
            messages.STATE_LINES[self.state] + (f": {self.outcome}" if self.outcome else ""),
            *([f"🔀 {self.merge_request}"] if self.merge_request else []),
            *([self.rollout] if self.rollout else []),
            *([self.verification] if self.verification else []),
        ]
        if request.diff and self.state in (RequestState.PENDING, RequestState.APPROVED):
            lines.append(f"```\n{inert_block(request.diff)}\n```")
        return "\n".join(lines)


def card_for(
    store: RequestStore,
    request_id: str,
    request: DeployRequest | None = None,
    result: Result | None = None,
) -> Card:
    """The card of a request as it stands; `request` and `result` where the caller has read
    them already (a request never changes; a result, once there, neither)."""
    request = request or store.get(request_id)
    result = result or store.result(request_id)
    outcome = None
    if result is not None:
        landed = messages.commits_text(result)
        outcome = landed if result.commit else messages.result_text(request, result)
    return Card(
        request=request,
        state=store.state(request_id),
        approvers=[
            (who.id, a.name or who.id)
            for a in store.approval_records(request_id)
            if (who := Principal.of(a.principal))
        ],
        outcome=outcome,
        merge_request=_merge_request_line(store, request_id),
        rollout=rollouts.rollout_state(record)
        if (record := load_rollout(store.redis, request_id))
        else None,
        verification=card_line(checked)
        if (checked := load_verification(store.redis, request_id))
        else None,
    )


def _merge_request_line(store: RequestStore, request_id: str) -> str | None:
    known = store.merge_request(request_id)
    if known is None:
        return None
    checks = known.get("checks")
    return str(known["url"]) + (f" (checks {checks})" if checks and checks != "none" else "")
