"""What the thread, the card and `status` say of a verification.

Workers decide (`workers/rollout/verify.py`); `bot/reports.py` posts what they queued, in
these words.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from config.principals import Principal
from config.text import inert
from workers.rollout.verify import VerificationRecord
from workers.state.request import Approval, DeployRequest


def _clock(at: float | None) -> str:
    return datetime.fromtimestamp(at or 0, UTC).strftime("%H:%M UTC")


def cell(record: VerificationRecord | None, app: str, version: str) -> str:
    """What `status` adds to `prd 2.3.0`: ` (verifying 3/10)`, ` (verified 14:12 UTC)`."""
    if record is None or not any(s.app == app and s.version == version for s in record.series):
        return ""
    if record.state == "verifying":
        done, total = record.progress
        return f" (verifying {done}/{total})"
    if record.state == "verified":
        return f" (verified {_clock(record.decided_at)})"
    return f" (verification {record.state} {_clock(record.decided_at)})"


def card_line(record: VerificationRecord) -> str:
    done, total = record.progress
    if record.state == "verifying":
        names = ", ".join(dict.fromkeys(s.metric.name for s in record.series))
        return f"🔬 verifying {done}/{total}: {names}"
    if record.state == "verified":
        return f"✅ verified at {_clock(record.decided_at)}"
    then = (
        f"; rolled back by {record.rollback}"
        if record.rollback
        else f"; {record.env} locked"
        if record.locked
        else ""
    )
    icon = "❌" if record.state == "failed" else "⚠️"
    return f"{icon} verification {record.state}: {inert(record.why(), 300)}{then}"


def started_text(request: DeployRequest, record: VerificationRecord) -> str:
    metrics = ", ".join(dict.fromkeys(s.metric.describe() for s in record.series))
    apps = ", ".join(dict.fromkeys(f"{s.app} {s.version}" for s in record.series))
    return f"{request.id}: 🔬 verifying {apps} in {request.env}: {metrics}"


def mention(principal: str, name: str) -> str:
    """How the platform says `@someone` so that they are notified."""
    try:
        who = Principal.of(principal)
    except ValueError:
        return inert(name, 80)
    if who.kind == "slack":
        return f"<@{who.id}>"
    return f"@{inert(name or who.id, 80)}"


def ended_text(
    request: DeployRequest, record: VerificationRecord, approvals: Sequence[Approval]
) -> str:
    env, why = request.env, inert(record.why(), 1500)
    if record.state == "verified":
        return f"{request.id}: ✅ verified in {env}: {why}"
    people = [mention(request.requester, request.requester_name)] + [
        mention(a.principal, a.name) for a in approvals
    ]
    notify = " ".join(dict.fromkeys(people))
    if record.rollback:
        left = f" ({', '.join(record.left)} moved on since: left as it runs)" if record.left else ""
        then = f"Rolling back at once: {record.rollback}{left}"
    else:
        then = (
            f"{env} is locked until someone looks; nothing else lands there "
            f"(`unlock {env}` when done)"
        )
    if record.state == "failed":
        versions = ", ".join(dict.fromkeys(f"{s.app} {s.version}" for s in record.series))
        return (
            f"{request.id}: ❌ verification failed in {env}: {why}. {then}. {versions} is "
            f"refused in {env} and downstream until cleared. {notify}"
        )
    return f"{request.id}: ⚠️ verification inconclusive in {env}: {why}. {then}. {notify}"
