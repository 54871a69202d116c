"""How a rollout is said: the news for the request's thread, the card's line, and the way
back offered where an app degraded (the rest of the bot's sentences: `bot/messages.py`)."""

from __future__ import annotations

from config.text import inert
from workers.rollout.follow import RolloutRecord, Target
from workers.state.request import DeployRequest


def took(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def rollout_target(record: RolloutRecord, target: Target) -> str:
    last = inert(target.last, 300)
    match target.state:
        case "healthy":
            return f"{target.name}: synced and healthy after {took(target.seconds)}"
        case "degraded":
            return f"{target.name}: degraded: {last}"
        case "timeout":
            return f"{target.name}: not healthy after {took(record.timeout)}: {last}"
        case "error":
            return f"{target.name}: not followed: {last}"
        case _:
            return f"{target.name}: {last or 'waiting for ' + record.reconciler}"


def rollout_news(
    request: DeployRequest, record: RolloutRecord, application_url: str | None = None
) -> str:
    """How the reconciler took the pushed commit, as the request's thread is told it (with
    where to see the application, if known)."""
    link = f"\n{application_url}" if application_url else ""
    return _rollout_news(request, record) + link


def _rollout_news(request: DeployRequest, record: RolloutRecord) -> str:
    short, env = record.commit[:7], record.env
    if len(record.targets) == 1 and record.targets[0].state == "healthy":
        target = record.targets[0]
        return (
            f"{request.id}: {short} is synced and healthy in {env} after "
            f"{took(target.seconds)} ({record.reconciler}: {target.name})"
        )
    lines = [rollout_target(record, t) for t in record.targets]
    return f"{request.id}: rollout of {short} in {env} ({record.reconciler}):\n" + "\n".join(lines)


def rollout_state(record: RolloutRecord) -> str:
    """The card's line for the rollout."""
    states = {t.state for t in record.targets}
    if not record.ended:
        return f"⏳ rolling out ({record.reconciler})"
    if states == {"healthy"}:
        slowest = max((t.seconds or 0.0) for t in record.targets)
        return f"💚 synced and healthy after {took(slowest)}"
    worst = next(s for s in ("degraded", "error", "timeout") if s in states)
    if worst == "degraded":
        why = next(t.last for t in record.targets if t.state == "degraded")
        return f"💔 degraded after the push: {inert(why, 200)}"
    return {
        "degraded": "💔 degraded after the push",
        "error": "⚠️ rollout not followed",
        "timeout": f"⌛ not healthy after {took(record.timeout)}",
    }[worst]


def rollback_not_offered(app: str, env: str, why: str) -> str:
    return f"{app} is degraded; to go back, say `rollback {app} in {env}` ({why})"
